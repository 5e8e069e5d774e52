"""What the facilitation bot keeps, per bot account in the shared database.

One row per room with a running session: the room id and the session's id are clear (jobs and
lookups need them); everything else (title, agenda, queue, who chairs, notes, the status
message) is one record sealed with the bots' store key. The parking lot (`#later` notes) of a
room's last session is kept sealed until the next session there takes it. When a session ends
its row is deleted: after the minutes are posted, the bot keeps nothing of it. A session of a
scheduled series parks its notes under the series (`<room>#series:<id>`), so they carry to the
series' next occurrence; the scheduled occurrence starting in a room is kept sealed too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clubs.bots.facilitation.session import Session
from clubs.core.db import Database, Migration
from clubs.core.sealed import Sealer

COMPONENT = "facilitation"
MIGRATIONS: Sequence[Migration] = (
    Migration(
        1,
        "running sessions (sealed) and each room's parking lot (sealed)",
        """
        CREATE TABLE fa_sessions (
            bot TEXT NOT NULL,
            room_id TEXT NOT NULL,
            sid TEXT NOT NULL,
            sealed BLOB NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (bot, room_id)
        );
        CREATE TABLE fa_parking (
            bot TEXT NOT NULL,
            room_id TEXT NOT NULL,
            sealed BLOB NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (bot, room_id)
        )
        """,
    ),
    Migration(
        2,
        "who asked for the reflection DM after sessions (one sealed list per bot account)",
        """
        CREATE TABLE fa_reflect (
            bot TEXT NOT NULL PRIMARY KEY,
            sealed BLOB NOT NULL,
            updated_at REAL NOT NULL
        )
        """,
    ),
    Migration(
        3,
        "each sessions room's scheduled occurrence now starting (sealed)",
        """
        CREATE TABLE fa_scheduled (
            bot TEXT NOT NULL,
            room_id TEXT NOT NULL,
            sealed BLOB NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (bot, room_id)
        )
        """,
    ),
)


class FacilitationStore:
    def __init__(self, db: Database, bot: str, sealer: Sealer) -> None:
        self.db = db
        self.bot = bot
        self.sealer = sealer

    @classmethod
    async def open(cls, db: Database, bot: str, sealer: Sealer) -> FacilitationStore:
        await db.migrate(COMPONENT, MIGRATIONS)
        return cls(db, bot, sealer)

    async def session(self, room_id: str) -> Session | None:
        row = await self.db.fetchone(
            "SELECT sealed FROM fa_sessions WHERE bot = ? AND room_id = ?", (self.bot, room_id)
        )
        if row is None:
            return None
        return Session.from_json(self.sealer.open_json(row["sealed"]))

    async def rooms(self) -> list[str]:
        """The rooms with a running session."""
        rows = await self.db.fetchall(
            "SELECT room_id FROM fa_sessions WHERE bot = ? ORDER BY room_id", (self.bot,)
        )
        return [str(r["room_id"]) for r in rows]

    async def save(self, room_id: str, session: Session, now: float) -> None:
        await self.db.execute(
            "INSERT INTO fa_sessions (bot, room_id, sid, sealed, updated_at) "
            "VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (bot, room_id) DO UPDATE SET sid = excluded.sid, "
            "sealed = excluded.sealed, updated_at = excluded.updated_at",
            (self.bot, room_id, session.sid, self.sealer.seal_json(session.to_json()), now),
        )

    async def end(
        self, room_id: str, parking: list[str], now: float, *, parked_as: str | None = None
    ) -> None:
        """Delete the session; keep its `#later` notes for the next session of the room (or
        of the series: `parked_as`, the key `parking` reads them by)."""
        key = parked_as or room_id
        async with self.db.transaction():
            await self.db.execute(
                "DELETE FROM fa_sessions WHERE bot = ? AND room_id = ?", (self.bot, room_id)
            )
            if parking:
                await self.db.execute(
                    "INSERT INTO fa_parking (bot, room_id, sealed, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (bot, room_id) DO UPDATE SET sealed = excluded.sealed, "
                    "updated_at = excluded.updated_at",
                    (self.bot, key, self.sealer.seal_json(parking), now),
                )
            else:
                await self.db.execute(
                    "DELETE FROM fa_parking WHERE bot = ? AND room_id = ?", (self.bot, key)
                )

    async def set_scheduled(self, room_id: str, occurrence: dict[str, Any], now: float) -> None:
        """The scheduled occurrence starting in the room (title, call link, series, end)."""
        await self.db.execute(
            "INSERT INTO fa_scheduled (bot, room_id, sealed, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (bot, room_id) DO UPDATE SET sealed = excluded.sealed, "
            "updated_at = excluded.updated_at",
            (self.bot, room_id, self.sealer.seal_json(occurrence), now),
        )

    async def scheduled(self, room_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(
            "SELECT sealed FROM fa_scheduled WHERE bot = ? AND room_id = ?", (self.bot, room_id)
        )
        value = self.sealer.open_json(row["sealed"]) if row is not None else None
        return value if isinstance(value, dict) else None

    async def reflecting(self) -> set[str]:
        """The members who asked for a reflection DM after each session they were in."""
        row = await self.db.fetchone("SELECT sealed FROM fa_reflect WHERE bot = ?", (self.bot,))
        if row is None:
            return set()
        value = self.sealer.open_json(row["sealed"])
        return {v for v in value if isinstance(v, str)} if isinstance(value, list) else set()

    async def set_reflecting(self, user: str, on: bool, now: float) -> None:
        async with self.db.transaction():
            users = await self.reflecting()
            users = users | {user} if on else users - {user}
            await self.db.execute(
                "INSERT INTO fa_reflect (bot, sealed, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (bot) DO UPDATE SET sealed = excluded.sealed, "
                "updated_at = excluded.updated_at",
                (self.bot, self.sealer.seal_json(sorted(users)), now),
            )

    async def parking(self, room_id: str) -> list[str]:
        row = await self.db.fetchone(
            "SELECT sealed FROM fa_parking WHERE bot = ? AND room_id = ?", (self.bot, room_id)
        )
        if row is None:
            return []
        value = self.sealer.open_json(row["sealed"])
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
