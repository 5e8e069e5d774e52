"""The relay: Matrix events to Telegram, Telegram updates to Matrix, for bridged rooms only.

Which rooms: the bridge's bot (`@tg_bridge`) is invited into a room by its admins. It joins,
reads the room's locator and looks it up among the network file's bridged rooms (`Portal`s).
It stays only in a designated club room; anywhere else it leaves again. An encrypted room is
refused with a notice (and a warning in the log) before it leaves, since relaying would move
its content out of end-to-end encryption, unless its admins recorded consent
(`clubs.bridge.consent`) and the bot's own E2EE device is open (`clubs.bridge.crypto`). Then the
device decrypts the room's new messages (only those the homeserver received after the consent
event), Telegram messages come in encrypted from the bot as "Имя (Telegram): …", and the bot
posts and pins a notice, once, that messages here leave Matrix's encryption. A room that turns
encrypted later without consent, or whose consent is withdrawn (or whose writer loses power
100), stops being relayed at once. Staff, cohort and support rooms are refused here too,
whatever the network file says.

Matrix → Telegram (both modes): messages (text, notices, emotes) as "**Name**: text", where the
name is the sender's display name in the room, never their Matrix id; edits edit the Telegram
message(s); redactions delete them (Telegram allows deleting for 48 hours). A reply stays a reply
when the message it answers crossed the bridge (either way); otherwise it is sent plain, without
the quote. Each part sent is
recorded at once, so a retried event never sends a part twice.

Telegram → Matrix (relay mode): messages and captions are sent by the sender's ghost
(`@tg_<id>`), created through the application service with their Telegram name
("Имя (Telegram)"), with the Telegram message's time; edits become Matrix edits. The Bot API
reports no deletions, so those are not followed. A group that becomes a supergroup moves its
portal to the new chat id, from the service message or from a refused send. Added to a chat that
no room bridges, the bot leaves it.

Images cross both ways re-encoded without metadata (`clubs.bridge.media`); other files are
refused: their caption crosses with a word that a file was not relayed, and a Telegram sticker
crosses as its emoji. A Matrix message waits `hold_s` before it leaves and is
dropped if it was redacted meanwhile (the moderation bot's protections); a ban of a ghost bans
the Telegram user in the chat, and a mute restricts them there until it is lifted.

`!tg` commands in a bridged room (`clubs.bridge.roomcommands`) let its moderators pause and
resume the relay; they are answered by the bot and never relayed.

Nothing here logs content, names or tokens: ids, types and counts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

from clubs.bridge import roomcommands
from clubs.bridge.bridgemetrics import EVENTS, LAST_POLL, RELAY_LAG, TELEGRAM_OK
from clubs.bridge.config import Portal
from clubs.bridge.consent import power_of, valid_consent
from clubs.bridge.crypto import BridgeDevice, DeviceNotReady, KeyPending
from clubs.bridge.formatting import (
    clean_name,
    escape,
    matrix_edit,
    split,
    telegram_name,
    telegram_text,
    to_matrix,
    to_telegram,
    utf16_len,
)
from clubs.bridge.matrix import AsMatrix, TooLarge
from clubs.bridge.media import (
    CAPTION_MAX,
    MATRIX_DOWNLOAD_MAX,
    NOT_RELAYED,
    TELEGRAM_DOCUMENT_MAX,
    TELEGRAM_DOWNLOAD_MAX,
    TELEGRAM_PHOTO_MAX,
    CleanImage,
    MatrixMedia,
    MediaRefused,
    TelegramFile,
    decrypt_file,
    image_content,
    matrix_media,
    sticker_emoji,
    strip_image,
    telegram_media,
)
from clubs.bridge.pacing import Pacer
from clubs.bridge.registration import PREFIX, ghost_id, ghost_user, in_namespace
from clubs.bridge.store import BridgeStore, PortalRow, Sent
from clubs.bridge.telegram import (
    BotApi,
    ChatMigrated,
    FileTooLarge,
    TelegramError,
    TelegramRateLimited,
    TelegramUnavailable,
)
from clubs.core.attachments import encrypt, encrypted_file
from clubs.core.crash import crashpoint
from clubs.core.errors import NotFound, is_transient
from clubs.core.ids import EventId, RoomId, UserId, as_event_id
from clubs.core.namespace import BRIDGE_CONSENT, LOCATOR
from clubs.core.txn import txn_id

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 20
BACKOFF_MAX_S = 300.0
POLL_BACKOFF_MAX_S = 60.0
REFUSED_ENCRYPTED = (
    "Этот чат зашифрован, поэтому он не связан с Telegram: пересылка вывела бы сообщения "
    "из сквозного шифрования. Администратор комнаты может дать согласие (clubs bridge consent). "
    "/ This room is end-to-end encrypted, so it is not bridged to Telegram: relaying would take "
    "its messages out of end-to-end encryption. A room admin can consent (clubs bridge consent)."
)
BRIDGED_NOTICE = (
    "⚠️ Эта комната связана с Telegram. Новые сообщения отсюда пересылаются в Telegram-чат и "
    "выходят из сквозного шифрования Matrix: их могут читать Telegram и все участники того чата "
    "(и их телефоны). Старые сообщения не пересылаются. / ⚠️ This room is bridged to Telegram. "
    "New messages here are relayed to a Telegram chat and leave Matrix's end-to-end "
    "encryption: Telegram and every member of that chat (and their phones) can read them. "
    "Earlier messages are not relayed."
)
KEY_WAIT_FIRST_S = 0.5
"""An encrypted event whose room key is still on its way is tried again after 0.5, 1, 2… s,
and at once when the device's sync brings to-device messages (`Relay.keys_arrived`)."""
KEY_REQUEST_AFTER = 1
"""Misses of a room key before it is asked for (`m.room_key_request`): the first miss is
usually a key still on its way."""
NEVER_BRIDGED_KINDS = frozenset({"cohort_room", "cohort_space", "club_space", "country_space"})
OFFSET_KEY = "telegram_offset"
PRUNE_EVERY_S = 3600.0
MAX_CACHED_NAMES = 10_000


class Retry(Exception):
    """The event could not be handled now (Telegram or the homeserver away): try it later."""


class Throttled(Exception):
    """Sending now would exceed Telegram's per-chat limit: try again in `wait_s`."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"throttled for {wait_s:.1f} s")
        self.wait_s = wait_s


def _transient(e: BaseException) -> bool:
    return isinstance(
        e, TelegramUnavailable | TelegramRateLimited | KeyPending | DeviceNotReady
    ) or is_transient(e)


@dataclass
class Health:
    """What `/health` shows; every change is mirrored in the bridge's metrics."""

    telegram_ok: bool = True
    last_poll: float = 0.0
    relayed_to_telegram: int = 0
    relayed_to_matrix: int = 0
    refused_rooms: int = 0
    dropped: int = 0
    media_refused: int = 0
    not_relayed_paused: int = 0

    def __post_init__(self) -> None:
        TELEGRAM_OK.set(1 if self.telegram_ok else 0)

    def count(self, what: str) -> None:
        """One more of `what` (a counter field's name)."""
        setattr(self, what, getattr(self, what) + 1)
        EVENTS.inc(what=what)

    def telegram(self, ok: bool) -> None:
        self.telegram_ok = ok
        TELEGRAM_OK.set(1 if ok else 0)
        if ok:
            self.last_poll = time.time()
            LAST_POLL.set(self.last_poll)


@dataclass
class Relay:
    matrix: AsMatrix
    telegram: BotApi
    store: BridgeStore
    portals: Sequence[Portal]
    network: str
    server_name: str
    bot: UserId
    poll_timeout_s: int = 30
    hold_s: float = 0.0
    """A Matrix message waits this long after the homeserver received it before it leaves
    for Telegram; if it was redacted meanwhile (the moderation bot's protections), it never
    leaves."""
    health: Health = field(default_factory=Health)
    pacer: Pacer = field(default_factory=Pacer)
    telegram_bot_id: int | None = None
    device: BridgeDevice | None = None
    """The bot's E2EE device; None: encrypted rooms are refused whatever their consent."""
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _names: dict[tuple[RoomId, str], str | None] = field(default_factory=dict)
    """Members' display names per room, forgotten when their membership event comes through
    the inbox (in the room's order, so a message after a rename shows the new name)."""
    _rooms: dict[RoomId, PortalRow] = field(default_factory=dict)
    _joined: set[tuple[RoomId, UserId]] = field(default_factory=set)
    _key_waiting: set[str] = field(default_factory=set)
    _paused: set[RoomId] = field(default_factory=set)

    # --- lifecycle -----------------------------------------------------------------------------

    async def load(self) -> None:
        self._rooms = {p.room_id: p for p in await self.store.portals()}
        self._paused = {
            room for room in self._rooms if await self.store.get_setting(f"paused:{room}") == "1"
        }

    def wake(self) -> None:
        self._wake.set()

    def health_view(self) -> dict[str, Any]:
        h = self.health
        return {
            "ok": h.telegram_ok,
            "telegram": "ok" if h.telegram_ok else "failing",
            "portals": sum(1 for p in self._rooms.values() if p.state == "active"),
            "relayed_to_telegram": h.relayed_to_telegram,
            "relayed_to_matrix": h.relayed_to_matrix,
            "dropped": h.dropped,
            "media_refused": h.media_refused,
            "e2ee_device": self.device is not None,
            "paused": len(self._paused),
            "not_relayed_paused": h.not_relayed_paused,
        }

    def portal_for_chat(self, chat_id: int) -> PortalRow | None:
        for p in self._rooms.values():
            if p.chat_id == chat_id and p.state == "active":
                return p
        return None

    # --- Matrix → Telegram: the inbox worker ---------------------------------------------------

    async def run_inbox(self) -> None:
        pruned = 0.0
        backoff = 1.0
        while True:
            self._wake.clear()
            try:
                await self.drain()
                if time.time() - pruned > PRUNE_EVERY_S:
                    await self.store.prune(time.time())
                    pruned = time.time()
                next_at = await self.store.next_due_at()
                backoff = 1.0
            except Exception as e:  # the store itself failing (a full disk): wait, try again
                log.warning("the inbox failed (%s); again in %.0f s", _describe(e), backoff)
                await asyncio.sleep(backoff)
                backoff = min(POLL_BACKOFF_MAX_S, backoff * 2)
                continue
            timeout = None if next_at is None else max(0.05, next_at - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def drain(self) -> None:
        """Handle every inbox event that is due, in order; an event put off holds back the later
        events of its room, so a room's messages reach Telegram in the order they were sent."""
        while True:
            items = await self.store.due(time.time())
            if not items:
                return
            progressed = False
            held: set[str] = set()
            for item in items:
                event_id = str(item.event.get("event_id"))
                room = str(item.event.get("room_id"))
                if room in held:
                    continue
                relayed = self.health.relayed_to_telegram
                try:
                    forget = await self.handle_event(item.event)
                    ts = item.event.get("origin_server_ts")
                    if self.health.relayed_to_telegram > relayed and isinstance(ts, int):
                        RELAY_LAG.observe(
                            max(0.0, time.time() - ts / 1000), direction="to_telegram"
                        )
                except Throttled as e:  # not a failure: no attempt is counted
                    due = time.time() + e.wait_s + random.uniform(0, 0.2)  # noqa: S311
                    await self.store.postpone(item.seq, room, due, count=False)
                    held.add(room)
                    continue
                except Exception as e:
                    if _transient(e) and item.attempts + 1 < MAX_ATTEMPTS:
                        delay = min(BACKOFF_MAX_S, 2.0 ** (item.attempts + 1))
                        if isinstance(e, KeyPending | DeviceNotReady):
                            delay = min(BACKOFF_MAX_S, KEY_WAIT_FIRST_S * 2.0**item.attempts)
                        if isinstance(e, KeyPending):
                            await self._wait_for_key(item.event, item.attempts)
                        if isinstance(e, TelegramRateLimited):
                            delay = max(delay, float(e.retry_after))
                        delay += random.uniform(0, 0.5)  # noqa: S311 - jitter
                        log.info("event %s postponed %.1f s: %s", event_id, delay, type(e).__name__)
                        self.health.telegram(not isinstance(e, TelegramError))
                        await self.store.postpone(item.seq, room, time.time() + delay)
                        held.add(room)
                        continue
                    log.warning("event %s dropped: %s", event_id, _describe(e))
                    self.health.count("dropped")
                    forget = []
                await self.store.done(item.seq, forget=forget)
                progressed = True
            if not progressed:
                return

    async def _wait_for_key(self, event: Mapping[str, Any], attempts: int) -> None:
        """An encrypted event whose key has not come: its room is retried as soon as keys
        arrive (`keys_arrived`), and from the second miss on, the key is asked for."""
        self._key_waiting.add(str(event.get("room_id")))
        if attempts >= KEY_REQUEST_AFTER and self.device is not None:
            await self.device.request_key(event)

    async def keys_arrived(self) -> None:
        """The device's sync brought to-device messages: rooms with an event waiting for its
        key try it now rather than at the end of its back-off."""
        if self._key_waiting:
            rooms, self._key_waiting = self._key_waiting, set()
            await self.store.due_now(rooms, time.time())
        self.wake()

    async def handle_event(self, event: Mapping[str, Any]) -> list[str]:
        """Act on one Matrix event; returns the event ids whose map rows are gone."""
        room = RoomId(str(event["room_id"]))
        kind = event["type"]
        if kind == "m.room.member":
            await self._on_membership(room, event)
            return []
        portal = self._rooms.get(room)
        if portal is None or portal.state != "active":
            return []
        if kind == "m.room.encryption":
            if not portal.encrypted:
                await self._refuse(portal, "the room became encrypted")
            return []
        if kind in (BRIDGE_CONSENT, "m.room.power_levels"):
            if portal.encrypted:
                await self._recheck_consent(portal)
            elif kind == "m.room.power_levels":
                await self._follow_mutes(portal, event)
            return []
        sender = str(event.get("sender", ""))
        if in_namespace(sender, self.server_name):
            return []  # our own bot and ghosts: never relayed back
        if kind == "m.room.redaction":
            return await self._on_redaction(portal, event)
        if kind not in ("m.room.message", "m.room.encrypted"):
            return []
        if portal.encrypted:
            ts = event.get("origin_server_ts")
            since = portal.consent_since or 0
            if not isinstance(ts, int) or isinstance(ts, bool) or ts < since:
                log.info("event %s predates the consent: not relayed", event.get("event_id"))
                return []
        if self.hold_s > 0 and await self._held_or_redacted(event):
            return []
        if kind == "m.room.encrypted":
            if not portal.encrypted or self.device is None:
                return []
            event = await self.device.decrypt(event)
            if event.get("type") != "m.room.message":
                return []
        verb = roomcommands.parse(event.get("content") or {})
        if verb is not None:
            await self._on_command(portal, event, verb)  # never relayed
            return []
        if portal.room_id in self._paused:
            self.health.count("not_relayed_paused")
            return []  # said while paused: stays in Matrix
        await self._on_message(portal, event)
        return []

    async def _on_command(
        self, portal: PortalRow, event: Mapping[str, Any], verb: roomcommands.Verb
    ) -> None:
        """`!tg …` (clubs.bridge.roomcommands): answered in the room, under a transaction id
        of the command, so a retried command is answered once."""
        room = portal.room_id
        if verb in ("pause", "resume"):
            state = await self.matrix.state(room, self.bot)
            if power_of(state, str(event.get("sender"))) < roomcommands.PAUSE_POWER:
                answer = roomcommands.NOT_ALLOWED
            else:
                pause = verb == "pause"
                changed = pause != (room in self._paused)
                await self.store.set_setting(f"paused:{room}", "1" if pause else "0")
                if pause:
                    self._paused.add(room)
                else:
                    self._paused.discard(room)
                answer = roomcommands.PAUSED if pause else roomcommands.RESUMED
                if changed:
                    log.info(
                        "relay %s in %s by a moderator", "paused" if pause else "resumed", room
                    )
                    await self._tell_telegram(
                        portal,
                        roomcommands.TELEGRAM_PAUSED if pause else roomcommands.TELEGRAM_RESUMED,
                    )
        elif verb == "status":
            answer = roomcommands.status(
                mode=portal.mode,
                paused=room in self._paused,
                telegram_ok=self.health.telegram_ok,
                encrypted=portal.encrypted,
            )
        else:
            answer = roomcommands.HELP
        event_id = str(event.get("event_id"))
        content: dict[str, Any] = {
            "msgtype": "m.notice",
            "body": answer,
            "m.mentions": {},
            "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
        }
        txn = txn_id("bridge", "command", event_id)
        if portal.encrypted and self.device is not None:
            await self.device.send(room, "m.room.message", content, txn)
        else:
            await self.matrix.send(room, "m.room.message", content, txn, user=self.bot)

    async def _tell_telegram(self, portal: PortalRow, text: str) -> None:
        """A word to the Telegram chat from the bridge itself (best effort: the room's own
        answer matters more than this one)."""
        try:
            await self.telegram.send_message(portal.chat_id, escape(text))
        except Exception as e:
            log.warning("could not tell the Telegram chat of %s: %s", portal.room_id, _describe(e))

    async def _held_or_redacted(self, event: Mapping[str, Any]) -> bool:
        """Raises Throttled while the message is younger than the hold; then True if it was
        redacted meanwhile (by the moderation bot, a moderator or its sender)."""
        ts = event.get("origin_server_ts")
        if isinstance(ts, int) and not isinstance(ts, bool):
            wait = ts / 1000 + self.hold_s - time.time()
            if wait > 0:
                raise Throttled(wait)
        room, event_id = RoomId(str(event["room_id"])), EventId(str(event["event_id"]))
        if await self.matrix.is_redacted(room, event_id, self.bot):
            log.info("event %s was redacted while held: not relayed", event_id)
            return True
        return False

    async def _name(self, room: RoomId, member: str) -> str | None:
        """The member's display name in the room (one state read, then cached)."""
        key = (room, member)
        if key not in self._names:
            if len(self._names) >= MAX_CACHED_NAMES:
                self._names.clear()
            self._names[key] = await self.matrix.member_name(room, member, self.bot)
        return self._names[key]

    async def _on_membership(self, room: RoomId, event: Mapping[str, Any]) -> None:
        self._names.pop((room, str(event.get("state_key"))), None)
        telegram_id = ghost_id(str(event.get("state_key")), self.server_name)
        if telegram_id is not None:
            await self._on_ghost_membership(room, telegram_id, event)
            return
        if event.get("state_key") != self.bot:
            return
        membership = event["content"].get("membership")
        if membership in ("leave", "ban"):
            portal = self._rooms.get(room)
            if portal is not None and portal.state == "active":
                await self._set(replace(portal, state="refused"))
                log.info("left or removed from %s: no longer bridged", room)
            return
        if membership != "invite":
            return
        await self.matrix.join(room, self.bot)
        state = await self.matrix.state(room, self.bot)
        by_type = {
            (e.get("type"), e.get("state_key")): e.get("content")
            for e in state
            if isinstance(e, dict) and isinstance(e.get("content"), dict)
        }
        locator = by_type.get((LOCATOR, "")) or {}
        spec = self._designated(locator)
        if spec is None:
            log.info("invited to %s, which the network file does not bridge: leaving", room)
            await self.matrix.leave(room, self.bot)
            return
        row = PortalRow(room, spec.chat, spec.mode, spec.club, spec.room, "active")
        if by_type.get(("m.room.encryption", "")):
            consent = valid_consent(state, spec.chat)
            if consent is None:
                await self._refuse(row, "the room is encrypted and its admins did not consent")
                return
            if self.device is None:
                await self._refuse(row, "the room is encrypted and the bridge has no E2EE device")
                return
            await self._set(replace(row, consent_since=consent.since_ms))
            log.info("bridging encrypted %s (%s) with its admins' consent", room, spec.mode)
            await self.post_notices()
            return
        await self._set(row)
        log.info("bridging %s (%s) to a Telegram chat", room, spec.mode)

    async def _on_ghost_membership(
        self, room: RoomId, telegram_id: int, event: Mapping[str, Any]
    ) -> None:
        """A ban of a ghost (a moderator's, or the moderation bot's network-wide one) bans the
        Telegram user in the chat too; lifting it lifts that ban. The bot must be an admin of
        the chat; if it is not, Telegram refuses and the refusal is logged."""
        membership = event["content"].get("membership")
        if membership != "join":  # left, kicked or banned: joined again before it speaks
            self._joined.discard((room, ghost_user(telegram_id, self.server_name)))
        portal = self._rooms.get(room)
        if portal is None or portal.state != "active":
            return
        unsigned = event.get("unsigned")
        prev = unsigned.get("prev_content") if isinstance(unsigned, dict) else None
        was_banned = isinstance(prev, dict) and prev.get("membership") == "ban"
        try:
            if membership == "ban":
                await self.telegram.ban_chat_member(portal.chat_id, telegram_id)
                log.info("a ghost was banned in %s: banned in its Telegram chat too", room)
            elif was_banned and membership == "leave":
                await self.telegram.unban_chat_member(portal.chat_id, telegram_id)
                log.info("a ghost's ban was lifted in %s: lifted in Telegram too", room)
        except TelegramError as e:
            if _transient(e):
                raise
            log.warning("Telegram refused to follow a ban in %s: %s", room, _describe(e))

    async def _follow_mutes(self, portal: PortalRow, event: Mapping[str, Any]) -> None:
        """A ghost muted in the room (a moderator's or the moderation bot's mute: its level set
        below what a message needs) is restricted in the Telegram chat too, so its user sees
        that they cannot write rather than writing into nothing; a lifted mute lifts it. Needs
        the Telegram bot to be an admin with the right to restrict (a refusal is logged)."""
        if portal.mode != "relay":
            return
        unsigned = event.get("unsigned")
        prev = unsigned.get("prev_content") if isinstance(unsigned, dict) else None
        now = muted_ghosts(event.get("content"), self.server_name)
        before = muted_ghosts(prev, self.server_name)
        for telegram_id, can_send in [(t, False) for t in sorted(now - before)] + [
            (t, True) for t in sorted(before - now)
        ]:
            try:
                await self.telegram.restrict_chat_member(
                    portal.chat_id, telegram_id, can_send=can_send
                )
                log.info(
                    "a ghost was %s in %s: in its Telegram chat too",
                    "unmuted" if can_send else "muted",
                    portal.room_id,
                )
            except TelegramError as e:
                if _transient(e):
                    raise
                log.warning(
                    "Telegram refused to follow a mute in %s: %s", portal.room_id, _describe(e)
                )

    async def _recheck_consent(self, portal: PortalRow) -> None:
        """The consent or the power levels changed: stop if the consent no longer holds."""
        spec = next(
            (p for p in self.portals if p.club == portal.club and p.room == portal.room_key), None
        )
        state = await self.matrix.state(portal.room_id, self.bot)
        chats = {portal.chat_id} | ({spec.chat} if spec is not None else set())
        if not any(valid_consent(state, chat) for chat in chats):
            await self._refuse(portal, "the admins' consent was withdrawn or no longer holds")

    async def post_notices(self) -> None:
        """Post and pin the notice in every consented encrypted portal that lacks it (once: the
        bot never edits or posts it again). A room the device has not synced yet waits."""
        if self.device is None:
            return
        for portal in list(self._rooms.values()):
            if portal.state != "active" or not portal.encrypted:
                continue
            try:
                await self._notice(portal)
            except DeviceNotReady:
                continue
            except Exception as e:
                log.warning("notice in %s not posted yet: %s", portal.room_id, _describe(e))

    async def _notice(self, portal: PortalRow) -> None:
        if self.device is None:
            return
        room = portal.room_id
        notice = await self.store.get_setting(f"notice:{room}")
        if not notice:
            since = str(portal.consent_since or 0)  # a new consent, a new notice
            notice = await self.device.send(
                room,
                "m.room.message",
                {"msgtype": "m.notice", "body": BRIDGED_NOTICE, "m.mentions": {}},
                txn_id("bridge", "notice", room, since),
            )
            await self.store.set_setting(f"notice:{room}", notice)
        if not await self.store.get_setting(f"pinned:{room}"):
            await self.matrix.pin(room, EventId(notice), self.bot)
            await self.store.set_setting(f"pinned:{room}", "1")
            log.info("posted and pinned the bridging notice in %s", room)

    async def _withdraw_notice(self, room: RoomId) -> None:
        """The room is no longer relayed: its bridging notice is unpinned (it would tell members
        something no longer true), and a later consent posts and pins a new one."""
        notice = await self.store.get_setting(f"notice:{room}")
        if not notice:
            return
        try:
            await self.matrix.unpin(room, EventId(notice), self.bot)
        except Exception as e:
            log.warning("could not unpin the bridging notice in %s: %s", room, _describe(e))
        await self.store.set_setting(f"notice:{room}", "")
        await self.store.set_setting(f"pinned:{room}", "")

    def _designated(self, locator: Mapping[str, Any]) -> Portal | None:
        if locator.get("network") != self.network or locator.get("kind") != "club_room":
            return None
        if locator.get("kind") in NEVER_BRIDGED_KINDS or locator.get("audience") == "staff":
            return None
        for p in self.portals:
            if p.club == locator.get("club") and p.room == locator.get("key"):
                return p
        return None

    async def _refuse(self, portal: PortalRow, why: str) -> None:
        log.warning("refusing to bridge %s: %s", portal.room_id, why)
        self.health.count("refused_rooms")
        await self._set(replace(portal, state="refused"))
        try:
            await self.matrix.send(
                portal.room_id,
                "m.room.message",
                {"msgtype": "m.notice", "body": REFUSED_ENCRYPTED, "m.mentions": {}},
                txn_id("bridge", "refused", portal.room_id),
                user=self.bot,
            )
        except Exception as e:
            log.warning("could not post the refusal notice in %s: %s", portal.room_id, _describe(e))
        await self._withdraw_notice(portal.room_id)
        try:  # staying would bring the room's (encrypted) traffic to the bridge for nothing
            await self.matrix.leave(portal.room_id, self.bot)
        except Exception as e:
            log.warning("could not leave %s: %s", portal.room_id, _describe(e))

    async def _set(self, portal: PortalRow) -> None:
        await self.store.set_portal(portal)
        self._rooms[portal.room_id] = portal

    async def _on_message(self, portal: PortalRow, event: Mapping[str, Any]) -> None:
        content = event["content"]
        event_id = EventId(str(event["event_id"]))
        relates = content.get("m.relates_to")
        if isinstance(relates, dict) and relates.get("rel_type") == "m.replace":
            target = as_event_id(relates.get("event_id"))
            new = content.get("m.new_content")
            if target is not None and isinstance(new, dict):
                await self._edit(portal, target, str(event.get("sender")), new)
            return
        name = await self._name(portal.room_id, str(event["sender"]))
        media = matrix_media(content)
        if media is not None:
            await self._media_to_telegram(portal, event_id, name or "Участник", media, content)
            return
        parts = to_telegram(name or "Участник", content)
        if parts is None:
            return
        await self._send_parts(portal, event_id, parts, await self._reply_target(portal, content))

    async def _send_parts(
        self, portal: PortalRow, event_id: EventId, parts: Sequence[str], reply_to: int | None
    ) -> None:
        done = {s.part for s in await self.store.parts_of(event_id)}
        for i, html in enumerate(parts):
            if i in done:
                continue  # sent before a crash or a retry
            message_id, chat = await self._send(portal, html, reply_to if i == 0 else None)
            await self.store.record([Sent(event_id, i, portal.room_id, chat, message_id, "matrix")])
            crashpoint("bridge_part_recorded")  # this part sent and recorded, the event not done
        self.health.count("relayed_to_telegram")

    async def _media_to_telegram(
        self,
        portal: PortalRow,
        event_id: EventId,
        name: str,
        media: MatrixMedia,
        content: Mapping[str, Any],
    ) -> None:
        """An image, stripped of its metadata, as a Telegram photo with "**Name**: caption";
        any other file is refused and only its caption (if any) crosses, as text."""
        if await self.store.parts_of(event_id):
            return  # sent before a crash or a retry
        head = f"<b>{escape(clean_name(name))}</b>"
        reply_to = await self._reply_target(portal, content)
        try:
            image = await self._matrix_image(portal, media)
        except MediaRefused as e:
            log.info("media of %s not relayed: %s", event_id, e.reason)
            self.health.count("media_refused")
            # Its caption, and a word that a file did not cross.
            body = _with_marker(media.caption or None, "")
            parts = to_telegram(name, {"msgtype": "m.text", "body": body})
            if parts:
                await self._send_parts(portal, event_id, parts, reply_to)
            return
        text = media.caption or ""
        rest: list[str] = []
        if text and utf16_len(clean_name(name)) + 2 + utf16_len(text) > CAPTION_MAX:
            rest = split(text)  # too long for a caption: the text follows as messages
            text = ""
        caption_html = f"{head}: {escape(text)}" if text else head

        async def upload(chat: int, reply: int | None) -> int:
            return await self.telegram.send_file(
                chat,
                image.data,
                filename=image.filename,
                mimetype=image.mimetype,
                caption_html=caption_html,
                as_photo=len(image.data) <= TELEGRAM_PHOTO_MAX,
                reply_to=reply,
            )

        message_id, chat = await self._paced(portal, upload, reply_to)
        await self.store.record([Sent(event_id, 0, portal.room_id, chat, message_id, "matrix")])
        for i, part in enumerate(rest, start=1):
            message_id, chat = await self._send(portal, escape(part))
            await self.store.record([Sent(event_id, i, portal.room_id, chat, message_id, "matrix")])
        self.health.count("relayed_to_telegram")

    async def _matrix_image(self, portal: PortalRow, media: MatrixMedia) -> CleanImage:
        """The image of a Matrix media message, downloaded, decrypted if need be, stripped."""
        if media.msgtype != "m.image":
            raise MediaRefused("not_an_image")
        if media.size is not None and media.size > MATRIX_DOWNLOAD_MAX:
            raise MediaRefused("too_large")
        if media.file is None and portal.encrypted:
            raise MediaRefused("damaged")  # a plain file in an encrypted room: not expected
        try:
            data = await self.matrix.download(media.url, self.bot, MATRIX_DOWNLOAD_MAX)
        except TooLarge:
            raise MediaRefused("too_large") from None
        except NotFound:
            raise MediaRefused("damaged") from None
        if media.file is not None:
            data = decrypt_file(data, media.file)
        image = await asyncio.to_thread(strip_image, data)  # CPU-bound: off the loop
        if len(image.data) > TELEGRAM_DOCUMENT_MAX:
            raise MediaRefused("too_large")
        return image

    async def _reply_target(self, portal: PortalRow, content: Mapping[str, Any]) -> int | None:
        """The Telegram message a Matrix reply answers, if that message crossed the bridge (a
        reply to anything else is sent as a plain message: no older history is quoted)."""
        relates = content.get("m.relates_to")
        reply = relates.get("m.in_reply_to") if isinstance(relates, dict) else None
        target = as_event_id(reply.get("event_id")) if isinstance(reply, dict) else None
        if target is None:
            return None
        parts = await self.store.parts_of(target)
        if not parts or parts[0].chat_id != self._rooms[portal.room_id].chat_id:
            return None
        return parts[0].message_id

    async def _send(
        self, portal: PortalRow, html: str, reply_to: int | None = None
    ) -> tuple[int, int]:
        async def send(chat: int, reply: int | None) -> int:
            return await self.telegram.send_message(chat, html, reply_to=reply)

        return await self._paced(portal, send, reply_to)

    async def _paced(
        self,
        portal: PortalRow,
        send: Callable[[int, int | None], Awaitable[int]],
        reply_to: int | None,
    ) -> tuple[int, int]:
        """One send into the portal's chat within the pace, following a migration."""
        chat = self._rooms[portal.room_id].chat_id
        wait = self.pacer.wait_for(chat, time.monotonic())
        if wait > 0:
            raise Throttled(wait)
        try:
            message_id = await send(chat, reply_to)
        except ChatMigrated as e:
            await self._migrate(chat, e.new_chat_id)
            chat = e.new_chat_id
            message_id = await send(chat, reply_to)
        self.pacer.sent(chat, time.monotonic())
        return message_id, chat

    async def _migrate(self, old: int, new: int) -> None:
        moved = await self.store.move_chat(old, new)
        self.pacer.moved(old, new)
        for room, p in list(self._rooms.items()):
            if p.chat_id == old:
                self._rooms[room] = replace(p, chat_id=new)
        log.info("a Telegram group became a supergroup: %d portal(s) moved", moved)

    async def _edit(
        self, portal: PortalRow, target: EventId, sender: str, new: Mapping[str, Any]
    ) -> None:
        old = await self.store.parts_of(target)
        if not old or old[0].origin != "matrix":
            return  # not relayed by us (or too old): nothing to edit
        if new.get("msgtype") not in ("m.text", "m.notice", "m.emote"):
            log.info("edit of the caption of %s not followed", target)
            return  # a photo's caption: editMessageText would be refused by Telegram
        if await self.matrix.event_sender(portal.room_id, target, self.bot) != sender:
            log.info("edit of %s by someone else than its sender: ignored", target)
            return  # only the sender may edit a message (the spec's rule for m.replace)
        name = await self._name(portal.room_id, sender)
        parts = to_telegram(name or "Участник", new) or []
        sent: list[Sent] = []
        for i, html in enumerate(parts):
            if i < len(old):
                await self.telegram.edit_message(old[i].chat_id, old[i].message_id, html)
            else:
                message_id, chat = await self._send(portal, html)
                sent.append(Sent(target, i, portal.room_id, chat, message_id, "matrix"))
        for extra in old[len(parts) :]:
            await self.telegram.delete_message(extra.chat_id, extra.message_id)
        await self.store.record(sent)

    async def _on_redaction(self, portal: PortalRow, event: Mapping[str, Any]) -> list[str]:
        target = as_event_id(event["content"].get("redacts") or event.get("redacts"))
        if target is None:
            return []
        parts = await self.store.parts_of(target)
        for part in parts:
            await self.telegram.delete_message(part.chat_id, part.message_id)
        return [target] if parts else []

    # --- Telegram → Matrix: the poller ---------------------------------------------------------

    async def run_poller(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self.poll_once()
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.health.telegram(False)
                wait = backoff
                if isinstance(e, TelegramRateLimited):
                    wait = max(wait, float(e.retry_after))
                log.warning("Telegram polling failed (%s); again in %.0f s", _describe(e), wait)
                await asyncio.sleep(wait)
                backoff = min(POLL_BACKOFF_MAX_S, backoff * 2)

    async def poll_once(self) -> int:
        """One getUpdates round: handle each update, then confirm it (the offset, persisted)."""
        if self.telegram_bot_id is None:
            me = await self.telegram.get_me()
            self.telegram_bot_id = me.get("id") if isinstance(me.get("id"), int) else None
        stored = await self.store.get_setting(OFFSET_KEY)
        offset = int(stored) if stored else None
        updates = await self.telegram.get_updates(offset, self.poll_timeout_s)
        self.health.telegram(True)
        for update in updates:
            update_id = int(update["update_id"])
            try:
                await self.handle_update(update)
            except Exception as e:
                if _transient(e):
                    raise Retry(f"update {update_id}: {type(e).__name__}") from None
                log.warning("update %d dropped: %s", update_id, _describe(e))
                self.health.count("dropped")
            crashpoint("bridge_update_handled")  # relayed, the offset not yet stored
            await self.store.set_setting(OFFSET_KEY, str(update_id + 1))
        return len(updates)

    async def handle_update(self, update: Mapping[str, Any]) -> None:
        member = update.get("my_chat_member")
        if isinstance(member, dict):
            await self._on_bot_membership(member)
            return
        for kind in ("message", "channel_post", "edited_message", "edited_channel_post"):
            message = update.get(kind)
            if isinstance(message, dict):
                await self._on_telegram(message, edited=kind.startswith("edited_"))
                return

    async def _on_bot_membership(self, update: Mapping[str, Any]) -> None:
        """The bot was added to a chat: it leaves any chat the network file does not bridge, so
        that nobody can make it read (or post into) a chat of their choosing."""
        chat = update.get("chat")
        new = update.get("new_chat_member")
        chat_id = chat.get("id") if isinstance(chat, dict) else None
        status = new.get("status") if isinstance(new, dict) else None
        if not isinstance(chat_id, int) or status not in ("member", "administrator", "restricted"):
            return
        known = {p.chat for p in self.portals} | {p.chat_id for p in self._rooms.values()}
        if chat_id in known:
            return
        log.warning("added to Telegram chat %d, which no room bridges: leaving it", chat_id)
        await self.telegram.leave_chat(chat_id)

    async def _on_telegram(self, message: Mapping[str, Any], *, edited: bool) -> None:
        chat = message.get("chat")
        chat_id = chat.get("id") if isinstance(chat, dict) else None
        message_id = message.get("message_id")
        if not isinstance(chat_id, int) or not isinstance(message_id, int):
            return
        migrated = message.get("migrate_to_chat_id")
        if isinstance(migrated, int) and not isinstance(migrated, bool):
            await self._migrate(chat_id, migrated)
            return
        portal = self.portal_for_chat(chat_id)
        if portal is None or portal.mode != "relay":
            return
        if portal.room_id in self._paused:
            self.health.count("not_relayed_paused")
            return  # paused by the room's moderators: nothing crosses, nothing waits
        sender = message.get("from")
        if not isinstance(sender, dict) or not isinstance(sender.get("id"), int):
            return  # a channel post without an author: not relayed
        if sender.get("id") == self.telegram_bot_id:
            return
        text = telegram_text(message)
        if edited and telegram_media(message) is not None:
            # A caption edited: the Matrix event is an image (or the word that a file did not
            # cross); a text edit would replace it with text. Not followed.
            log.info("edit of the caption of Telegram message %d not followed", message_id)
            return
        media = None if edited else telegram_media(message)
        refused = False
        if media == "refused":
            media = None
            emoji = sticker_emoji(message)
            if emoji is not None and text is None:
                text = emoji  # a sticker crosses as the emoji it stands for
            else:
                log.info("media of Telegram message %d not relayed: not an image", message_id)
                self.health.count("media_refused")
                refused = True
        if text is None and media is None and not refused:
            return
        ghost: UserId | None = None
        prefix = ""
        if portal.encrypted:
            # No ghosts in encrypted rooms: the bot's cross-signed device speaks for them.
            if self.device is None:
                return
            prefix = f"{telegram_name(sender)}: "
            text = f"{prefix}{text}" if text is not None else None
        else:
            ghost = await self._ghost(sender, portal.room_id)
        if refused:
            text = _with_marker(text, prefix)
        if edited:
            original = await self.store.event_of(chat_id, message_id)
            if original is None or original.origin != "telegram" or text is None:
                return
            edit_date = message.get("edit_date")
            await self._post(
                portal,
                matrix_edit(original.event_id, text),
                txn_id("tg-edit", str(chat_id), str(message_id), str(edit_date)),
                ghost,
            )
            return
        if await self.store.event_of(chat_id, message_id) is not None:
            return  # relayed before a crash
        date = message.get("date")
        content: dict[str, Any] | None = None
        if isinstance(media, TelegramFile):
            caption = (
                text if text is not None else telegram_name(sender) if portal.encrypted else ""
            )
            content = await self._telegram_image(portal, media, caption, ghost, message_id)
            if content is None:  # refused: its caption and a word that a file did not cross
                text = _with_marker(text, prefix)
        if content is None:
            if text is None:
                return
            content = to_matrix(text)
        answered = message.get("reply_to_message")
        if isinstance(answered, dict) and isinstance(answered.get("message_id"), int):
            original = await self.store.event_of(chat_id, answered["message_id"])
            if original is not None:  # only a message that crossed the bridge is linked
                content["m.relates_to"] = {"m.in_reply_to": {"event_id": original.event_id}}
        event_id = await self._post(
            portal,
            content,
            txn_id("tg", str(chat_id), str(message_id)),
            ghost,
            ts_ms=date * 1000 if isinstance(date, int) else None,
        )
        await self.store.record(
            [Sent(event_id, 0, portal.room_id, chat_id, message_id, "telegram")]
        )
        self.health.count("relayed_to_matrix")
        if isinstance(date, int) and not isinstance(date, bool):
            RELAY_LAG.observe(max(0.0, time.time() - date), direction="to_matrix")

    async def _telegram_image(
        self, portal: PortalRow, media: TelegramFile, caption: str, ghost: UserId | None, mid: int
    ) -> dict[str, Any] | None:
        """A Telegram image as Matrix `m.image` content, stripped of its metadata, uploaded by
        the ghost (or, for an encrypted room, encrypted and uploaded by the bot); None when it
        is refused (then only the caption crosses)."""
        try:
            if media.size is not None and media.size > TELEGRAM_DOWNLOAD_MAX:
                raise MediaRefused("too_large")
            try:
                data = await self.telegram.download(media.file_id, TELEGRAM_DOWNLOAD_MAX)
            except FileTooLarge:
                raise MediaRefused("too_large") from None
            image = await asyncio.to_thread(strip_image, data)  # CPU-bound: off the loop
            if ghost is not None:
                url = await self.matrix.upload(image.data, image.mimetype, ghost)
                return image_content(image, caption or image.filename, url=url)
            sealed = encrypt(image.data)
            url = await self.matrix.upload(sealed.ciphertext, "application/octet-stream", self.bot)
            return image_content(image, caption, file=encrypted_file(url, sealed.keys))
        except TooLarge:
            reason = "too_large"
        except MediaRefused as e:
            reason = e.reason
        log.info("media of Telegram message %d not relayed: %s", mid, reason)
        self.health.count("media_refused")
        return None

    async def _post(
        self,
        portal: PortalRow,
        content: dict[str, Any],
        txn: str,
        ghost: UserId | None,
        *,
        ts_ms: int | None = None,
    ) -> EventId:
        """A Telegram message into the room: by its ghost, or encrypted by the bot's device."""
        if ghost is not None:
            return await self.matrix.send(
                portal.room_id, "m.room.message", content, txn, user=ghost, ts_ms=ts_ms
            )
        if self.device is None:  # never: callers check first
            raise DeviceNotReady("no E2EE device")
        return await self.device.send(portal.room_id, "m.room.message", content, txn)

    async def _ghost(self, user: Mapping[str, Any], room: RoomId) -> UserId:
        """The sender's ghost, registered, named and joined to the room."""
        telegram_id = int(user["id"])
        ghost = ghost_user(telegram_id, self.server_name)
        name = telegram_name(user)
        profile = hashlib.sha256(name.encode()).hexdigest()
        stored = await self.store.ghost_profile(telegram_id)
        if stored is None:
            await self.matrix.ensure_registered(f"{PREFIX}{telegram_id}")
        if stored != profile:
            await self.matrix.set_displayname(ghost, name)
            await self.store.set_ghost_profile(telegram_id, profile)
        if (room, ghost) not in self._joined:
            await self.matrix.ensure_joined(room, ghost, self.bot)
            self._joined.add((room, ghost))
        return ghost

    async def user_exists(self, user_id: str) -> bool:
        if user_id == self.bot:
            return True
        local = user_id[1:].partition(":")[0]
        rest = local[len(PREFIX) :]
        if not local.startswith(PREFIX) or not rest.isdigit():
            return False
        return await self.store.ghost_profile(int(rest)) is not None


def _with_marker(text: str | None, prefix: str) -> str:
    """`text` followed by the word that a file did not cross (`prefix` starts it when there
    is no text: the sender's name in an encrypted room)."""
    return f"{text}\n{NOT_RELAYED}" if text is not None else f"{prefix}{NOT_RELAYED}"


def muted_ghosts(power_levels: object, server_name: str) -> set[int]:
    """The Telegram ids of ghosts whose level in these power levels is below what a message
    needs (`m.room.message`, else `events_default`)."""
    if not isinstance(power_levels, Mapping):
        return set()
    events = power_levels.get("events")
    needed = events.get("m.room.message") if isinstance(events, Mapping) else None
    if not _is_int(needed):
        needed = power_levels.get("events_default", 0)
    users = power_levels.get("users")
    if not _is_int(needed) or not isinstance(users, Mapping):
        return set()
    muted = set()
    for user, level in users.items():
        telegram_id = ghost_id(str(user), server_name)
        if telegram_id is not None and _is_int(level) and level < needed:
            muted.add(telegram_id)
    return muted


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(e: BaseException) -> str:
    """An exception for the log: its type and, for our own errors, their one-line text (which
    names methods and codes, never content or tokens)."""
    if isinstance(e, TelegramError):
        return f"{type(e).__name__} {e.method} {e.code}"
    errcode = getattr(e, "errcode", None)
    return f"{type(e).__name__} {errcode}" if errcode else type(e).__name__
