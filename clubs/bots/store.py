"""The runtime's own state per bot account: where sync stands, which events are done, DMs.

The sync token is written only after every event of its batch has been handled and recorded,
so a crash replays the batch instead of losing it; the `processed` table makes the replay a
no-op for events already handled.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

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
)

PROCESSED_KEEP_S = 7 * 24 * 3600


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

    async def mark_processed(self, event_id: str) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO processed (bot, event_id, at) VALUES (?, ?, ?)",
            (self.bot, event_id, int(time.time())),
        )

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

    async def dm_room(self, user_id: str) -> str | None:
        row = await self.db.fetchone(
            "SELECT room_id FROM dm_rooms WHERE bot = ? AND user_id = ?", (self.bot, user_id)
        )
        return str(row["room_id"]) if row else None

    async def dm_rooms(self) -> dict[str, str]:
        rows = await self.db.fetchall(
            "SELECT user_id, room_id FROM dm_rooms WHERE bot = ?", (self.bot,)
        )
        return {str(r["room_id"]): str(r["user_id"]) for r in rows}

    async def set_dm_room(self, user_id: str, room_id: str) -> None:
        await self.db.execute(
            "INSERT INTO dm_rooms (bot, user_id, room_id) VALUES (?, ?, ?) "
            "ON CONFLICT (bot, user_id) DO UPDATE SET room_id = excluded.room_id",
            (self.bot, user_id, room_id),
        )
