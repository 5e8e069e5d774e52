"""A member's own calendar feed: a secret link their calendar app subscribes to.

`!feed` / `!подписка` (in a DM with the bot only: the link is a secret and never goes into a
room) answers with `<public_url>/calendar/<token>.ics`; asking again gives a new link and the
old one stops working; `!feed off` revokes it. The feed holds the series of every club whose
sessions room the member is in — no other club's — and, for occurrences where they hold a place
at an offline session, the address (an override of that occurrence). Anyone holding the link
sees that, and so does a calendar service that fetches it for the member: the DM says so.

The token is an HMAC of the command's event id under a key from the vault, so a command handled
again after a crash hands out the same link; the database keeps only the token's SHA-256. A
wrong or revoked token gets 404, the same as a malformed one; nothing of the URL is logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from clubs.bots.args import Word
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext
from clubs.bots.scheduling.calendar import FeedEntry, feed_ics
from clubs.bots.scheduling.core import SESSIONS_ROOM, ScheduleCore
from clubs.core.ids import RoomId, UserId
from clubs.core.secrets import Vault

VAULT_NAME = "bots/calendar_feed_key"
TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
OFF_WORDS = ("off", "выкл", "отключить", "stop")


def feed_key(vault: Vault) -> bytes:
    """The key feed links are made with (created in the vault on first use)."""
    key = vault.get(VAULT_NAME)
    if key is None:
        key = vault.setdefault(VAULT_NAME, secrets.token_urlsafe(32))
    return key.encode()


def token_for(key: bytes, event_id: str) -> str:
    digest = hmac.new(key, event_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CalendarFeed(ScheduleCore):
    """The `!feed` command and the feed's HTTP route."""

    _ctx: BotContext | None = None
    """The bot's context, set at `start`; the HTTP route answers 503 before it."""

    @command(
        "feed",
        aliases=("подписка", "календарь-ссылка"),
        help_key="scheduling/feed.help",
        params=(Word("action", default="new", max_length=12),),
        dm=True,
    )
    async def feed(self, ctx: CommandContext, action: str) -> None:
        if not ctx.in_dm:
            await ctx.reply("scheduling/feed_dm_only")
            return
        if self.public_url is None:
            await ctx.reply("scheduling/feed_unavailable")
            return
        if action.lower() in OFF_WORDS:
            dropped = await self.store.drop_feed(ctx.sender)
            await ctx.reply("scheduling/feed_off", had=dropped)
            return
        token = token_for(self.feed_key, ctx.event.event_id)
        await self.store.set_feed(ctx.sender, token_hash(token), self.clock.now())
        await ctx.reply("scheduling/feed_link", url=f"{self.public_url}/calendar/{token}.ics")

    def http_routes(self) -> Sequence[web.RouteDef]:
        return [web.get("/calendar/{token}.ics", self._serve_feed, name="calendar-feed")]

    async def _serve_feed(self, request: web.Request) -> web.Response:
        token = request.match_info.get("token", "")
        if not TOKEN.fullmatch(token):
            raise web.HTTPNotFound()
        ctx = self._ctx
        if ctx is None:
            raise web.HTTPServiceUnavailable()
        owner = await self.store.feed_owner(token_hash(token))
        if owner is None:
            raise web.HTTPNotFound()
        entries, lang = await self._entries(ctx, owner)
        body = feed_ics(
            entries,
            lang=lang,
            uid_domain=ctx.user_id.partition(":")[2] or "clubs",
            now=self.clock.now(),
        )
        return web.Response(
            body=body,
            content_type="text/calendar",
            charset="utf-8",
            headers={"Cache-Control": "private, no-store"},
        )

    async def _entries(self, ctx: BotContext, owner: UserId) -> tuple[list[FeedEntry], str]:
        """The series of the owner's clubs (by the clubs' sessions rooms they are in) with the
        addresses of the upcoming occurrences where they hold a place; their first club's
        language."""
        theirs: dict[str, Any] = {}
        for room_id in ctx.client.joined_rooms():
            info = await ctx.rooms.info(room_id)
            if info.club is None or info.kind != "club_room":
                continue
            if (info.locator or {}).get("key") != SESSIONS_ROOM:
                continue
            if owner in await ctx.client.members(RoomId(room_id)):
                theirs[info.club] = info
        places = await self.store.confirmed_places(owner)
        entries = []
        for series in await self.store.active_series():
            clubs = [c for c in series.clubs if c in theirs]
            if not clubs:
                continue
            upcoming = {o.occ_key for o in await self.store.upcoming(series.id)}
            held = places.get(series.id, set()) & upcoming
            addresses = {k: series.venue for k in held if series.venue and not series.online}
            entries.append(
                FeedEntry(
                    series,
                    await self.store.changes(series.id),
                    theirs[clubs[0]].club_name,
                    addresses,
                )
            )
        lang = next(iter(theirs.values())).language if theirs else "ru"
        return entries, lang
