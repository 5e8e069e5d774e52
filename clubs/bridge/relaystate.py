"""What the relay holds and what both directions share: its portals and health, the members'
names, sending into a Telegram chat within the pace (following a supergroup migration) and into
a Matrix room (by a ghost, or encrypted by the bot's device). `clubs.bridge.relay` composes the
relay from this and its parts: `portals` (which rooms, consent, notices, commands, moderation),
`to_telegram` (Matrix → Telegram) and `to_matrix` (Telegram → Matrix).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from clubs.bridge.bridgemetrics import EVENTS, LAST_POLL, TELEGRAM_OK
from clubs.bridge.config import Portal
from clubs.bridge.crypto import BridgeDevice, DeviceNotReady, KeyPending
from clubs.bridge.matrix import AsMatrix
from clubs.bridge.media import (
    NOT_RELAYED,
)
from clubs.bridge.pacing import Pacer
from clubs.bridge.store import BridgeStore, PortalRow
from clubs.bridge.telegram import (
    BotApi,
    ChatMigrated,
    TelegramError,
    TelegramRateLimited,
    TelegramUnavailable,
)
from clubs.core.errors import is_transient
from clubs.core.ids import EventId, RoomId, UserId

log = logging.getLogger("clubs.bridge.relay")

MAX_ATTEMPTS = 20
BACKOFF_MAX_S = 300.0
POLL_BACKOFF_MAX_S = 60.0
MAX_CACHED_NAMES = 10_000


class Retry(Exception):
    """The event could not be handled now (Telegram or the homeserver away): try it later."""


class Throttled(Exception):
    """Sending now would exceed Telegram's per-chat limit: try again in `wait_s`."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"throttled for {wait_s:.1f} s")
        self.wait_s = wait_s


def transient(e: BaseException) -> bool:
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
class RelayState:
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

    async def _set(self, portal: PortalRow) -> None:
        await self.store.set_portal(portal)
        self._rooms[portal.room_id] = portal

    async def _name(self, room: RoomId, member: str) -> str | None:
        """The member's display name in the room (one state read, then cached)."""
        key = (room, member)
        if key not in self._names:
            if len(self._names) >= MAX_CACHED_NAMES:
                self._names.clear()
            self._names[key] = await self.matrix.member_name(room, member, self.bot)
        return self._names[key]

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


def with_not_relayed(text: str | None, prefix: str) -> str:
    """`text` followed by the word that a file did not cross (`prefix` starts it when there
    is no text: the sender's name in an encrypted room)."""
    return f"{text}\n{NOT_RELAYED}" if text is not None else f"{prefix}{NOT_RELAYED}"


def describe_error(e: BaseException) -> str:
    """An exception for the log: its type and, for our own errors, their one-line text (which
    names methods and codes, never content or tokens)."""
    if isinstance(e, TelegramError):
        return f"{type(e).__name__} {e.method} {e.code}"
    errcode = getattr(e, "errcode", None)
    return f"{type(e).__name__} {errcode}" if errcode else type(e).__name__
