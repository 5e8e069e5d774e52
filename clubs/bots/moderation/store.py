"""The moderation bot's own state: timed mutes, raid locks, the report cursor, the audit trail.

Everything the bot must undo later (a mute's previous power level, a room's join rules before a
lock) is written here *before* the change is sent to the server, so a crash between the two
leaves a record that the next run can act on, never a change nobody remembers.

Rows hold ids, levels and times. The one free text is the reason a moderator typed for an
action: it is kept for the moderation history (it is not message content), and never logged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from clubs.core.db import Database, Migration
from clubs.core.http import RoomId, UserId

COMPONENT = "moderation"
MIGRATIONS: Sequence[Migration] = (
    Migration(
        1,
        "mutes, locks, report cursor, processed reports, audit log, policy rooms",
        """
        CREATE TABLE mutes (
            room_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            previous_level INTEGER,
            muted_level INTEGER NOT NULL,
            until_ms INTEGER NOT NULL,
            PRIMARY KEY (room_id, user_id)
        );
        CREATE INDEX mutes_until ON mutes (until_ms);
        CREATE TABLE locks (
            room_id TEXT PRIMARY KEY,
            previous_join_rules TEXT NOT NULL,
            at_ms INTEGER NOT NULL
        );
        CREATE TABLE cursors (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE processed_reports (report_id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL);
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at_ms INTEGER NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            room_id TEXT,
            reason TEXT,
            source TEXT NOT NULL,
            rooms INTEGER NOT NULL DEFAULT 1
        );
        CREATE INDEX audit_target ON audit (target, at_ms);
        CREATE TABLE policy_rooms (
            network TEXT NOT NULL, key TEXT NOT NULL, room_id TEXT NOT NULL,
            PRIMARY KEY (network, key)
        )
        """,
    ),
)

REPORT_CURSOR = "event_reports"

Source = Literal["command", "protection", "policy", "report", "timer"]


@dataclass(frozen=True)
class Mute:
    room_id: RoomId
    user_id: UserId
    previous_level: int | None
    """The user's explicit entry in `users` before the mute; None if they had none."""
    muted_level: int
    until: float
    """UTC epoch seconds."""


@dataclass(frozen=True)
class Lock:
    room_id: RoomId
    previous_join_rules: Mapping[str, Any]
    at: float


@dataclass(frozen=True)
class AuditEntry:
    actor: UserId
    action: str
    target: str
    room_id: RoomId | None
    reason: str | None
    source: Source
    at: float
    rooms: int = 1
    """How many rooms the action reached (a network ban is one entry with room_id None)."""
    id: int | None = None


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class ModerationStore:
    """Moderation state inside a service database (its own tables, its own migrations)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, db: Database) -> ModerationStore:
        await db.migrate(COMPONENT, MIGRATIONS)
        return cls(db)

    # --- mutes ------------------------------------------------------------------------------

    async def put_mute(self, mute: Mute) -> None:
        await self.db.execute(
            "INSERT INTO mutes (room_id, user_id, previous_level, muted_level, until_ms) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, user_id) DO UPDATE SET "
            "previous_level = excluded.previous_level, muted_level = excluded.muted_level, "
            "until_ms = excluded.until_ms",
            (mute.room_id, mute.user_id, mute.previous_level, mute.muted_level, _ms(mute.until)),
        )

    async def find_mute(self, room_id: RoomId, user_id: UserId) -> Mute | None:
        row = await self.db.fetchone(
            "SELECT * FROM mutes WHERE room_id = ? AND user_id = ?", (room_id, user_id)
        )
        return _mute(row) if row else None

    async def delete_mute(self, room_id: RoomId, user_id: UserId) -> None:
        await self.db.execute(
            "DELETE FROM mutes WHERE room_id = ? AND user_id = ?", (room_id, user_id)
        )

    async def due_mutes(self, now: float) -> list[Mute]:
        rows = await self.db.fetchall(
            "SELECT * FROM mutes WHERE until_ms <= ? ORDER BY until_ms", (_ms(now),)
        )
        return [_mute(r) for r in rows]

    async def mutes(self) -> list[Mute]:
        return [_mute(r) for r in await self.db.fetchall("SELECT * FROM mutes ORDER BY until_ms")]

    async def next_mute_due(self) -> float | None:
        """When the earliest mute ends (epoch seconds), for the runtime's timer."""
        row = await self.db.fetchone("SELECT MIN(until_ms) AS due FROM mutes")
        return row["due"] / 1000 if row and row["due"] is not None else None

    # --- raid locks -------------------------------------------------------------------------

    async def put_lock(self, lock: Lock) -> None:
        await self.db.execute(
            "INSERT INTO locks (room_id, previous_join_rules, at_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (room_id) DO UPDATE SET "
            "previous_join_rules = excluded.previous_join_rules, at_ms = excluded.at_ms",
            (lock.room_id, json.dumps(dict(lock.previous_join_rules)), _ms(lock.at)),
        )

    async def find_lock(self, room_id: RoomId) -> Lock | None:
        row = await self.db.fetchone("SELECT * FROM locks WHERE room_id = ?", (room_id,))
        return _lock(row) if row else None

    async def delete_lock(self, room_id: RoomId) -> None:
        await self.db.execute("DELETE FROM locks WHERE room_id = ?", (room_id,))

    async def locks(self) -> list[Lock]:
        return [_lock(r) for r in await self.db.fetchall("SELECT * FROM locks ORDER BY at_ms")]

    # --- reports ----------------------------------------------------------------------------

    async def cursor(self, name: str = REPORT_CURSOR) -> int:
        row = await self.db.fetchone("SELECT value FROM cursors WHERE name = ?", (name,))
        return int(row["value"]) if row else 0

    async def set_cursor(self, value: int, name: str = REPORT_CURSOR) -> None:
        await self.db.execute(
            "INSERT INTO cursors (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    async def processed_reports(self, report_ids: Iterable[int]) -> set[int]:
        """Which of these report ids were already handled."""
        ids = list(report_ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = await self.db.fetchall(
            f"SELECT report_id FROM processed_reports WHERE report_id IN ({marks})",  # noqa: S608
            ids,
        )
        return {int(r["report_id"]) for r in rows}

    async def mark_report_processed(self, report_id: int, at: float) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO processed_reports (report_id, at_ms) VALUES (?, ?)",
            (report_id, _ms(at)),
        )

    # --- audit ------------------------------------------------------------------------------

    async def record(self, entry: AuditEntry) -> int:
        """Append one action to the audit trail; returns its id."""
        await self.db.execute(
            "INSERT INTO audit (at_ms, actor, action, target, room_id, reason, source, rooms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _ms(entry.at),
                entry.actor,
                entry.action,
                entry.target,
                entry.room_id,
                entry.reason,
                entry.source,
                entry.rooms,
            ),
        )
        row = await self.db.fetchone("SELECT last_insert_rowid() AS id")
        assert row is not None
        return int(row["id"])

    async def history(self, target: str, limit: int = 20) -> list[AuditEntry]:
        """The newest actions against `target` (a user id or a room id), newest first."""
        rows = await self.db.fetchall(
            "SELECT * FROM audit WHERE target = ? ORDER BY at_ms DESC, id DESC LIMIT ?",
            (target, limit),
        )
        return [_audit(r) for r in rows]

    # --- policy rooms -----------------------------------------------------------------------

    async def find_policy_room(self, network: str, key: str) -> RoomId | None:
        row = await self.db.fetchone(
            "SELECT room_id FROM policy_rooms WHERE network = ? AND key = ?", (network, key)
        )
        return RoomId(row["room_id"]) if row else None

    async def set_policy_room(self, network: str, key: str, room_id: RoomId) -> None:
        await self.db.execute(
            "INSERT INTO policy_rooms (network, key, room_id) VALUES (?, ?, ?) "
            "ON CONFLICT (network, key) DO UPDATE SET room_id = excluded.room_id",
            (network, key, room_id),
        )


def _mute(row: Any) -> Mute:
    previous = row["previous_level"]
    return Mute(
        room_id=RoomId(row["room_id"]),
        user_id=UserId(row["user_id"]),
        previous_level=int(previous) if previous is not None else None,
        muted_level=int(row["muted_level"]),
        until=row["until_ms"] / 1000,
    )


def _lock(row: Any) -> Lock:
    previous = json.loads(row["previous_join_rules"])
    return Lock(
        room_id=RoomId(row["room_id"]),
        previous_join_rules=previous if isinstance(previous, dict) else {},
        at=row["at_ms"] / 1000,
    )


def _audit(row: Any) -> AuditEntry:
    return AuditEntry(
        id=int(row["id"]),
        at=row["at_ms"] / 1000,
        actor=UserId(row["actor"]),
        action=str(row["action"]),
        target=str(row["target"]),
        room_id=RoomId(row["room_id"]) if row["room_id"] is not None else None,
        reason=row["reason"],
        source=row["source"],
        rooms=int(row["rooms"]),
    )
