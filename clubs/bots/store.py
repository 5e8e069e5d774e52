"""The runtime's own state per bot account: where sync stands, which events are done, events
waiting for their room key, DMs, commands waiting for a confirmation.

The sync token is written only after every event of its batch has been handled and recorded,
so a crash replays the batch instead of losing it; the `processed` table makes the replay a
no-op for events already handled. Events that could not be decrypted yet are written (as the
encrypted event, never plaintext) in the same transaction as the token that moves past them, so
a restart still handles them when their key arrives.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from clubs.core.db import Database, Migration

COMPONENT = "runtime"
MIGRATIONS: Sequence[Migration] = (
    Migration(
        1,
        "sync position, processed events, undecryptable notices, DM rooms",
        """
        CREATE TABLE sync_position (bot TEXT PRIMARY KEY, next_batch TEXT NOT NULL);
        CREATE TABLE processed (
            bot TEXT NOT NULL, event_id TEXT NOT NULL, at INTEGER NOT NULL,
            PRIMARY KEY (bot, event_id)
        );
        CREATE INDEX processed_at ON processed (at);
        CREATE TABLE utd_notices (
            bot TEXT NOT NULL, room_id TEXT NOT NULL, sender TEXT NOT NULL, at INTEGER NOT NULL,
            PRIMARY KEY (bot, room_id, sender)
        );
        CREATE TABLE dm_rooms (
            bot TEXT NOT NULL, user_id TEXT NOT NULL, room_id TEXT NOT NULL,
            PRIMARY KEY (bot, user_id)
        )
        """,
    ),
    Migration(
        2,
        "private room descriptions posted",
        """
        CREATE TABLE posted_descriptions (
            bot TEXT NOT NULL, room_id TEXT NOT NULL, digest TEXT NOT NULL,
            PRIMARY KEY (bot, room_id, digest)
        )
        """,
    ),
    Migration(
        3,
        "DM intents, events waiting for keys, commands waiting for a confirmation",
        """
        CREATE TABLE dm_intents (
            bot TEXT NOT NULL, user_id TEXT NOT NULL, marker TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (bot, user_id)
        );
        CREATE TABLE waiting_keys (
            bot TEXT NOT NULL, event_id TEXT NOT NULL, room_id TEXT NOT NULL,
            first_seen REAL NOT NULL, raw TEXT NOT NULL,
            PRIMARY KEY (bot, event_id)
        );
        CREATE INDEX waiting_keys_seen ON waiting_keys (bot, first_seen);
        CREATE TABLE confirmations (
            bot TEXT NOT NULL, code TEXT NOT NULL, room_id TEXT NOT NULL, sender TEXT NOT NULL,
            event_id TEXT NOT NULL, command TEXT NOT NULL, args BLOB NOT NULL,
            created_at REAL NOT NULL, expires_at REAL NOT NULL,
            PRIMARY KEY (bot, code)
        )
        """,
    ),
    Migration(
        4,
        "the newest copy of each room's private description, and reposts wanted for newcomers",
        """
        CREATE TABLE description_copies (
            bot TEXT NOT NULL, room_id TEXT NOT NULL, digest TEXT NOT NULL,
            event_id TEXT NOT NULL, posted_at REAL NOT NULL, copies INTEGER NOT NULL,
            repost_at REAL,
            PRIMARY KEY (bot, room_id)
        )
        """,
    ),
    Migration(
        5,
        "members' identity changes already announced (network-wide: the first bot tells)",
        """
        CREATE TABLE identity_changes (
            user_id TEXT NOT NULL, master_key TEXT NOT NULL, bot TEXT NOT NULL,
            seen_at REAL NOT NULL,
            PRIMARY KEY (user_id, master_key)
        )
        """,
    ),
)


@dataclass(frozen=True)
class DescriptionCopy:
    """The newest posted copy of a room's private description."""

    room_id: str
    digest: str
    event_id: str
    posted_at: float
    copies: int
    """How many copies were posted (the next one's transaction id counts on)."""
    repost_at: float | None
    """When a newcomer's repost is due (None: nobody waits for one)."""


PROCESSED_KEEP_S = 7 * 24 * 3600
WAITING_KEEP_S = 3 * 24 * 3600
"""An event whose key has not come within this long is given up (logged)."""
WAITING_MAX = 2000
"""At most this many events wait for keys per bot; the oldest are given up beyond it (a flood
of undecryptable events cannot grow the store or memory without bound)."""


@dataclass(frozen=True)
class Waiting:
    """An encrypted event waiting for its room key (the encrypted JSON, as the server sent it)."""

    event_id: str
    room_id: str
    first_seen: float
    raw: dict[str, Any]

    def __repr__(self) -> str:
        return f"Waiting(event_id={self.event_id!r}, room_id={self.room_id!r})"


@dataclass(frozen=True)
class Confirmation:
    """A privileged command held back because it was old when the bot saw it."""

    code: str
    room_id: str
    sender: str
    event_id: str
    command: str
    args: bytes
    """The arguments as typed, sealed at rest (a ban reason is a person's words)."""
    created_at: float
    expires_at: float

    def __repr__(self) -> str:
        return f"Confirmation(code={self.code!r}, command={self.command!r})"


class RuntimeStore:
    """Runtime state of one bot account inside a shared service database."""

    def __init__(self, db: Database, bot: str) -> None:
        self.db = db
        self.bot = bot

    @classmethod
    async def open(cls, db: Database, bot: str) -> RuntimeStore:
        await db.migrate(COMPONENT, MIGRATIONS)
        return cls(db, bot)

    async def next_batch(self) -> str | None:
        row = await self.db.fetchone(
            "SELECT next_batch FROM sync_position WHERE bot = ?", (self.bot,)
        )
        return str(row["next_batch"]) if row else None

    async def set_next_batch(self, token: str) -> None:
        await self.db.execute(
            "INSERT INTO sync_position (bot, next_batch) VALUES (?, ?) "
            "ON CONFLICT (bot) DO UPDATE SET next_batch = excluded.next_batch",
            (self.bot, token),
        )

    async def is_processed(self, event_id: str) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM processed WHERE bot = ? AND event_id = ?", (self.bot, event_id)
        )
        return row is not None

    async def mark_processed(self, event_id: str, now: float) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO processed (bot, event_id, at) VALUES (?, ?, ?)",
            (self.bot, event_id, int(now)),
        )

    async def commit(
        self,
        next_batch: str,
        *,
        now: float,
        waiting: Iterable[tuple[str, str, dict[str, Any]]] = (),
        resolved: Iterable[str] = (),
    ) -> int:
        """The batch is done: in one transaction, the new position, the events that still wait
        for a key (event id, room id, encrypted JSON) and the end of waiting for those handled
        now. Then the oldest waiting events beyond the bounds are given up; returns how many."""
        async with self.db.transaction():
            for event_id, room_id, raw in waiting:
                await self.db.execute(
                    "INSERT OR IGNORE INTO waiting_keys (bot, event_id, room_id, first_seen, raw)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (self.bot, event_id, room_id, now, json.dumps(raw, separators=(",", ":"))),
                )
            for event_id in resolved:
                await self.db.execute(
                    "DELETE FROM waiting_keys WHERE bot = ? AND event_id = ?", (self.bot, event_id)
                )
            await self.db.execute(
                "INSERT INTO sync_position (bot, next_batch) VALUES (?, ?) "
                "ON CONFLICT (bot) DO UPDATE SET next_batch = excluded.next_batch",
                (self.bot, next_batch),
            )
            aged = await self.db.execute(
                "DELETE FROM waiting_keys WHERE bot = ? AND (first_seen < ? OR event_id IN ("
                "SELECT event_id FROM waiting_keys WHERE bot = ? "
                "ORDER BY first_seen DESC, event_id DESC LIMIT -1 OFFSET ?))",
                (self.bot, now - WAITING_KEEP_S, self.bot, WAITING_MAX),
            )
        return aged

    async def waiting(self) -> list[Waiting]:
        rows = await self.db.fetchall(
            "SELECT event_id, room_id, first_seen, raw FROM waiting_keys WHERE bot = ? "
            "ORDER BY first_seen, event_id",
            (self.bot,),
        )
        out = []
        for r in rows:
            try:
                raw = json.loads(r["raw"])
            except ValueError:
                continue
            if isinstance(raw, dict):
                out.append(
                    Waiting(str(r["event_id"]), str(r["room_id"]), float(r["first_seen"]), raw)
                )
        return out

    async def is_waiting(self, event_id: str) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM waiting_keys WHERE bot = ? AND event_id = ?", (self.bot, event_id)
        )
        return row is not None

    async def prune_processed(self, now: float) -> int:
        """Forget processed ids older than a week (sync never replays that far back)."""
        return await self.db.execute(
            "DELETE FROM processed WHERE bot = ? AND at < ?",
            (self.bot, int(now - PROCESSED_KEEP_S)),
        )

    async def claim_utd_notice(self, room_id: str, sender: str, now: float, every_s: float) -> bool:
        """Whether to tell `sender` now that we could not decrypt them (at most once per
        `every_s` per room); records the notice if so."""
        row = await self.db.fetchone(
            "SELECT at FROM utd_notices WHERE bot = ? AND room_id = ? AND sender = ?",
            (self.bot, room_id, sender),
        )
        if row is not None and now - int(row["at"]) < every_s:
            return False
        await self.db.execute(
            "INSERT INTO utd_notices (bot, room_id, sender, at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (bot, room_id, sender) DO UPDATE SET at = excluded.at",
            (self.bot, room_id, sender, int(now)),
        )
        return True

    async def description_posted(self, room_id: str, digest: str) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM posted_descriptions WHERE bot = ? AND room_id = ? AND digest = ?",
            (self.bot, room_id, digest),
        )
        return row is not None

    async def mark_description_posted(self, room_id: str, digest: str) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO posted_descriptions (bot, room_id, digest) VALUES (?, ?, ?)",
            (self.bot, room_id, digest),
        )

    async def description_copy(self, room_id: str) -> DescriptionCopy | None:
        row = await self.db.fetchone(
            "SELECT digest, event_id, posted_at, copies, repost_at FROM description_copies "
            "WHERE bot = ? AND room_id = ?",
            (self.bot, room_id),
        )
        if row is None:
            return None
        repost_at = row["repost_at"]
        return DescriptionCopy(
            room_id,
            str(row["digest"]),
            str(row["event_id"]),
            float(row["posted_at"]),
            int(row["copies"]),
            float(repost_at) if repost_at is not None else None,
        )

    async def record_description_copy(
        self, room_id: str, digest: str, event_id: str, posted_at: float, copies: int
    ) -> None:
        """The newest copy of a room's description (a repost wanted before it is done with)."""
        await self.db.execute(
            "INSERT INTO description_copies "
            "(bot, room_id, digest, event_id, posted_at, copies, repost_at) "
            "VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (bot, room_id) DO UPDATE SET "
            "digest = excluded.digest, event_id = excluded.event_id, "
            "posted_at = excluded.posted_at, copies = excluded.copies, repost_at = NULL",
            (self.bot, room_id, digest, event_id, posted_at, copies),
        )

    async def want_description_repost(self, room_id: str, at: float) -> None:
        """A newcomer cannot read the copy posted before they joined: repost at `at` (an
        earlier wish stands)."""
        await self.db.execute(
            "UPDATE description_copies SET repost_at = ? WHERE bot = ? AND room_id = ? "
            "AND (repost_at IS NULL OR repost_at > ?)",
            (at, self.bot, room_id, at),
        )

    async def reposts_due(self, now: float) -> list[DescriptionCopy]:
        rows = await self.db.fetchall(
            "SELECT room_id FROM description_copies WHERE bot = ? AND repost_at <= ?",
            (self.bot, now),
        )
        out = []
        for r in rows:
            copy = await self.description_copy(str(r["room_id"]))
            if copy is not None:
                out.append(copy)
        return out

    async def claim_identity_change(self, user_id: str, master_key: str, now: float) -> bool:
        """Whether this bot is the first of the database to see this new identity."""
        await self.db.execute(
            "INSERT OR IGNORE INTO identity_changes (user_id, master_key, bot, seen_at) "
            "VALUES (?, ?, ?, ?)",
            (user_id, master_key, self.bot, now),
        )
        row = await self.db.fetchone(
            "SELECT bot FROM identity_changes WHERE user_id = ? AND master_key = ?",
            (user_id, master_key),
        )
        return row is not None and str(row["bot"]) == self.bot

    async def dm_room(self, user_id: str) -> str | None:
        row = await self.db.fetchone(
            "SELECT room_id FROM dm_rooms WHERE bot = ? AND user_id = ?", (self.bot, user_id)
        )
        return str(row["room_id"]) if row else None

    async def forget_person(self, user_id: str) -> int:
        """Delete this bot's rows about a person that only serve the runtime (notices sent to
        them, commands of theirs held for a confirmation, a DM being opened). The DM room's
        record stays: the conversation goes on in the same room. Returns how many rows went."""
        gone = 0
        async with self.db.transaction():
            for sql in (
                "DELETE FROM utd_notices WHERE bot = ? AND sender = ?",
                "DELETE FROM confirmations WHERE bot = ? AND sender = ?",
                "DELETE FROM dm_intents WHERE bot = ? AND user_id = ?",
            ):
                gone += await self.db.execute(sql, (self.bot, user_id))
        return gone

    async def dm_rooms(self) -> dict[str, str]:
        rows = await self.db.fetchall(
            "SELECT user_id, room_id FROM dm_rooms WHERE bot = ?", (self.bot,)
        )
        return {str(r["room_id"]): str(r["user_id"]) for r in rows}

    async def set_dm_room(self, user_id: str, room_id: str) -> None:
        """Record the DM room (and end the intent to create one, in the same transaction)."""
        async with self.db.transaction():
            await self.db.execute(
                "INSERT INTO dm_rooms (bot, user_id, room_id) VALUES (?, ?, ?) "
                "ON CONFLICT (bot, user_id) DO UPDATE SET room_id = excluded.room_id",
                (self.bot, user_id, room_id),
            )
            await self.db.execute(
                "DELETE FROM dm_intents WHERE bot = ? AND user_id = ?", (self.bot, user_id)
            )

    async def dm_intent(self, user_id: str) -> str | None:
        """The marker of a DM room we set out to create (and may have created) before a crash."""
        row = await self.db.fetchone(
            "SELECT marker FROM dm_intents WHERE bot = ? AND user_id = ?", (self.bot, user_id)
        )
        return str(row["marker"]) if row else None

    async def set_dm_intent(self, user_id: str, marker: str, now: float) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO dm_intents (bot, user_id, marker, created_at) "
            "VALUES (?, ?, ?, ?)",
            (self.bot, user_id, marker, now),
        )

    async def hold(self, c: Confirmation) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO confirmations (bot, code, room_id, sender, event_id, command,"
            " args, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.bot,
                c.code,
                c.room_id,
                c.sender,
                c.event_id,
                c.command,
                c.args,
                c.created_at,
                c.expires_at,
            ),
        )

    async def held(self, room_id: str, sender: str) -> list[Confirmation]:
        """The commands `sender` may confirm in `room_id`, newest first."""
        rows = await self.db.fetchall(
            "SELECT code, room_id, sender, event_id, command, args, created_at, expires_at "
            "FROM confirmations WHERE bot = ? AND room_id = ? AND sender = ? "
            "ORDER BY created_at DESC",
            (self.bot, room_id, sender),
        )
        return [
            Confirmation(
                str(r["code"]),
                str(r["room_id"]),
                str(r["sender"]),
                str(r["event_id"]),
                str(r["command"]),
                bytes(r["args"]),
                float(r["created_at"]),
                float(r["expires_at"]),
            )
            for r in rows
        ]

    async def release(self, code: str) -> bool:
        """Forget a held command (confirmed or expired); whether it was still held."""
        return bool(
            await self.db.execute(
                "DELETE FROM confirmations WHERE bot = ? AND code = ?", (self.bot, code)
            )
        )

    async def prune_held(self, now: float) -> int:
        return await self.db.execute(
            "DELETE FROM confirmations WHERE bot = ? AND expires_at < ?", (self.bot, now)
        )
