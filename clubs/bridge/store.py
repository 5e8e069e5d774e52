"""The bridge's SQLite store: transactions seen, the inbox, portals, the message map, offsets.

What it guarantees:

- A transaction is accepted once: its id and its events (the inbox rows) are written in one
  database transaction, so a replayed or retried transaction id changes nothing, and a crash
  leaves either both or neither. An event that comes again in another transaction is ignored too.
- Inbox rows hold whole events (message content), so they are sealed (Fernet, key in the vault)
  and deleted once handled; the handled event's effects (the message map) are written in the
  same transaction as the deletion.
- The message map keeps ids only (Matrix event id ⇄ Telegram chat and message id), never text.
  Rows older than `MAP_KEEP_S` are pruned: edits and deletions of older messages are not followed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from clubs.core.db import Database, Migration
from clubs.core.ids import EventId, RoomId
from clubs.core.sealed import Sealer, SealError

log = logging.getLogger(__name__)

COMPONENT = "bridge"
MAP_KEEP_S = 7 * 24 * 3600
TXN_KEEP_S = 30 * 24 * 3600
Origin = Literal["matrix", "telegram"]
PortalState = Literal["active", "refused"]

MIGRATIONS = (
    Migration(
        1,
        "transactions, inbox, portals, message map, settings",
        """
        CREATE TABLE bridge_txns (txn_id TEXT PRIMARY KEY, received_at INTEGER NOT NULL);
        CREATE TABLE bridge_inbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            room_id TEXT NOT NULL,
            sealed BLOB NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            due_at REAL NOT NULL DEFAULT 0
        );
        CREATE TABLE bridge_portals (
            room_id TEXT PRIMARY KEY,
            chat_id INTEGER NOT NULL,
            mode TEXT NOT NULL,
            club TEXT NOT NULL,
            room_key TEXT NOT NULL,
            state TEXT NOT NULL
        );
        CREATE TABLE bridge_messages (
            event_id TEXT NOT NULL,
            part INTEGER NOT NULL,
            room_id TEXT NOT NULL,
            chat_id INTEGER NOT NULL,
            message_id INTEGER NOT NULL,
            origin TEXT NOT NULL,
            at INTEGER NOT NULL,
            PRIMARY KEY (event_id, part)
        );
        CREATE INDEX bridge_messages_tg ON bridge_messages (chat_id, message_id);
        CREATE TABLE bridge_ghosts (telegram_id INTEGER PRIMARY KEY, profile TEXT NOT NULL);
        CREATE TABLE bridge_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)
        """,
    ),
    Migration(
        2,
        "encrypted portals: since when the admins' consent lets events cross",
        "ALTER TABLE bridge_portals ADD COLUMN consent_since INTEGER",
    ),
)


@dataclass(frozen=True)
class InboxItem:
    seq: int
    event: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class PortalRow:
    room_id: RoomId
    chat_id: int
    mode: str
    club: str
    room_key: str
    state: PortalState
    consent_since: int | None = None
    """An encrypted room relayed with its admins' consent: only events the homeserver received
    at or after this time (ms) cross. None: an unencrypted room."""

    @property
    def encrypted(self) -> bool:
        return self.consent_since is not None


@dataclass(frozen=True)
class Sent:
    """One Telegram message that carries (part of) a Matrix event, or the reverse."""

    event_id: EventId
    part: int
    room_id: RoomId
    chat_id: int
    message_id: int
    origin: Origin


class BridgeStore:
    def __init__(self, db: Database, sealer: Sealer) -> None:
        self.db = db
        self._sealer = sealer

    @classmethod
    async def open(cls, db: Database, sealer: Sealer) -> BridgeStore:
        await db.migrate(COMPONENT, MIGRATIONS)
        return cls(db, sealer)

    # --- transactions and the inbox ------------------------------------------------------------

    async def accept(self, txn_id: str, events: Sequence[dict[str, Any]]) -> bool:
        """Record a transaction and enqueue its events, atomically. False if it was seen."""
        now = int(time.time())
        async with self.db.transaction():
            seen = await self.db.fetchone("SELECT 1 FROM bridge_txns WHERE txn_id = ?", (txn_id,))
            if seen is not None:
                return False
            await self.db.execute(
                "INSERT INTO bridge_txns (txn_id, received_at) VALUES (?, ?)", (txn_id, now)
            )
            for event in events:
                # Behind an event of its room that was put off, never before it.
                await self.db.execute(
                    "INSERT OR IGNORE INTO bridge_inbox (event_id, room_id, sealed, due_at) "
                    "VALUES (?, ?, ?, (SELECT COALESCE(MAX(due_at), 0) FROM bridge_inbox "
                    "WHERE room_id = ?))",
                    (
                        event["event_id"],
                        event["room_id"],
                        self._sealer.seal_json(event),
                        event["room_id"],
                    ),
                )
        return True

    async def txn_seen(self, txn_id: str) -> bool:
        row = await self.db.fetchone("SELECT 1 FROM bridge_txns WHERE txn_id = ?", (txn_id,))
        return row is not None

    async def due(self, now: float, limit: int = 50) -> list[InboxItem]:
        rows = await self.db.fetchall(
            "SELECT seq, sealed, attempts FROM bridge_inbox WHERE due_at <= ? ORDER BY seq LIMIT ?",
            (now, limit),
        )
        items = []
        for r in rows:
            try:
                event = self._sealer.open_json(r["sealed"])
            except (SealError, ValueError):
                # Sealed with another key, or damaged: it can never be handled, so it must not
                # block the ones behind it.
                log.warning("inbox row %d cannot be opened: dropped", r["seq"])
                await self.db.execute("DELETE FROM bridge_inbox WHERE seq = ?", (r["seq"],))
                continue
            if isinstance(event, dict):
                items.append(InboxItem(int(r["seq"]), event, int(r["attempts"])))
        return items

    async def next_due_at(self) -> float | None:
        row = await self.db.fetchone("SELECT MIN(due_at) AS d FROM bridge_inbox")
        return None if row is None or row["d"] is None else float(row["d"])

    async def inbox_size(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) AS n FROM bridge_inbox")
        return int(row["n"]) if row else 0

    async def due_now(self, room_ids: Iterable[str], now: float) -> None:
        """The rooms' waiting events are due now (a room key arrived), in their order."""
        async with self.db.transaction():
            for room_id in room_ids:
                await self.db.execute(
                    "UPDATE bridge_inbox SET due_at = ? WHERE room_id = ? AND due_at > ?",
                    (now, room_id, now),
                )

    async def postpone(self, seq: int, room_id: str, due_at: float, *, count: bool = True) -> None:
        """Try the event again at `due_at` (`count`: as one more failed attempt); the room's
        later events wait for it (order kept)."""
        async with self.db.transaction():
            await self.db.execute(
                "UPDATE bridge_inbox SET attempts = attempts + ?, due_at = ? WHERE seq = ?",
                (1 if count else 0, due_at, seq),
            )
            await self.db.execute(
                "UPDATE bridge_inbox SET due_at = MAX(due_at, ?) WHERE room_id = ? AND seq > ?",
                (due_at, room_id, seq),
            )

    async def done(self, seq: int, sent: Sequence[Sent] = (), forget: Sequence[str] = ()) -> None:
        """The event is handled: drop it from the inbox and record what it sent (or deleted),
        in one transaction."""
        now = int(time.time())
        async with self.db.transaction():
            await self.db.execute("DELETE FROM bridge_inbox WHERE seq = ?", (seq,))
            await self._record(sent, now)
            for event_id in forget:
                await self.db.execute("DELETE FROM bridge_messages WHERE event_id = ?", (event_id,))

    async def record(self, sent: Sequence[Sent]) -> None:
        async with self.db.transaction():
            await self._record(sent, int(time.time()))

    async def _record(self, sent: Sequence[Sent], now: int) -> None:
        for s in sent:
            await self.db.execute(
                "INSERT OR REPLACE INTO bridge_messages "
                "(event_id, part, room_id, chat_id, message_id, origin, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (s.event_id, s.part, s.room_id, s.chat_id, s.message_id, s.origin, now),
            )

    # --- the message map -----------------------------------------------------------------------

    async def parts_of(self, event_id: str) -> list[Sent]:
        rows = await self.db.fetchall(
            "SELECT * FROM bridge_messages WHERE event_id = ? ORDER BY part", (event_id,)
        )
        return [_sent(r) for r in rows]

    async def event_of(self, chat_id: int, message_id: int) -> Sent | None:
        row = await self.db.fetchone(
            "SELECT * FROM bridge_messages WHERE chat_id = ? AND message_id = ? ORDER BY part",
            (chat_id, message_id),
        )
        return None if row is None else _sent(row)

    # --- portals -------------------------------------------------------------------------------

    async def set_portal(self, portal: PortalRow) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO bridge_portals "
            "(room_id, chat_id, mode, club, room_key, state, consent_since) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                portal.room_id,
                portal.chat_id,
                portal.mode,
                portal.club,
                portal.room_key,
                portal.state,
                portal.consent_since,
            ),
        )

    async def portals(self) -> list[PortalRow]:
        rows = await self.db.fetchall("SELECT * FROM bridge_portals ORDER BY room_id")
        return [
            PortalRow(
                RoomId(r["room_id"]),
                int(r["chat_id"]),
                str(r["mode"]),
                str(r["club"]),
                str(r["room_key"]),
                "refused" if r["state"] == "refused" else "active",
                None if r["consent_since"] is None else int(r["consent_since"]),
            )
            for r in rows
        ]

    async def move_chat(self, old: int, new: int) -> int:
        """A group became a supergroup: its portals and map rows follow the new id."""
        async with self.db.transaction():
            n = await self.db.execute(
                "UPDATE bridge_portals SET chat_id = ? WHERE chat_id = ?", (new, old)
            )
            await self.db.execute(
                "UPDATE bridge_messages SET chat_id = ? WHERE chat_id = ?", (new, old)
            )
        return n

    # --- ghosts and settings -------------------------------------------------------------------

    async def ghost_profile(self, telegram_id: int) -> str | None:
        row = await self.db.fetchone(
            "SELECT profile FROM bridge_ghosts WHERE telegram_id = ?", (telegram_id,)
        )
        return None if row is None else str(row["profile"])

    async def set_ghost_profile(self, telegram_id: int, profile: str) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO bridge_ghosts (telegram_id, profile) VALUES (?, ?)",
            (telegram_id, profile),
        )

    async def get_setting(self, key: str) -> str | None:
        row = await self.db.fetchone("SELECT value FROM bridge_settings WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    async def set_setting(self, key: str, value: str) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO bridge_settings (key, value) VALUES (?, ?)", (key, value)
        )

    async def prune(self, now: float) -> None:
        await self.db.execute("DELETE FROM bridge_messages WHERE at < ?", (now - MAP_KEEP_S,))
        await self.db.execute("DELETE FROM bridge_txns WHERE received_at < ?", (now - TXN_KEEP_S,))


def _sent(r: Any) -> Sent:
    return Sent(
        EventId(r["event_id"]),
        int(r["part"]),
        RoomId(r["room_id"]),
        int(r["chat_id"]),
        int(r["message_id"]),
        "telegram" if r["origin"] == "telegram" else "matrix",
    )
