"""What a file send must remember across a crash: the reserved mxc and the file's keys, by job.

A retry of the same job finds its record and re-uses the same mxc, key and IV (so the same
bytes give the same ciphertext and the upload is a no-op 409), and the same transaction id for
the event (so Synapse absorbs the second send). The key material is sealed at rest with the
bots' `Sealer`; ids, states and times stay clear. Records outlive the 24 hours in which Synapse
deduplicates a transaction id only to be pruned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from clubs.core.attachments import AttachmentKeys
from clubs.core.db import Database, Migration
from clubs.core.ids import EventId, RoomId
from clubs.core.sealed import Sealer

COMPONENT = "attachments"
MIGRATIONS: Sequence[Migration] = (
    Migration(
        1,
        "reserved media and sealed keys of file sends, by transaction id",
        """
        CREATE TABLE attachments (
            bot TEXT NOT NULL, txn_id TEXT NOT NULL, room_id TEXT NOT NULL, mxc TEXT NOT NULL,
            sealed_keys BLOB NOT NULL, state TEXT NOT NULL, event_id TEXT,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (bot, txn_id)
        );
        CREATE INDEX attachments_created_at ON attachments (created_at)
        """,
    ),
)

KEEP_S = 2 * 24 * 3600
"""Records older than this are pruned (Synapse forgets a transaction id after 24 hours)."""


class AttachmentState(StrEnum):
    RESERVED = "reserved"
    """The mxc is reserved; the upload may or may not have arrived."""
    UPLOADED = "uploaded"
    """The ciphertext is on the server; the event may or may not have been sent."""
    SENT = "sent"
    """The server acknowledged the event (`event_id`)."""


@dataclass(frozen=True)
class AttachmentRecord:
    txn_id: str
    room_id: RoomId
    mxc: str
    keys: AttachmentKeys
    state: AttachmentState
    event_id: EventId | None

    def __repr__(self) -> str:
        return f"AttachmentRecord(txn_id={self.txn_id!r}, state={self.state.value!r})"


class AttachmentStore:
    """One bot account's file-send records inside the shared service database."""

    def __init__(self, db: Database, bot: str, sealer: Sealer) -> None:
        self.db = db
        self.bot = bot
        self._sealer = sealer

    @classmethod
    async def open(cls, db: Database, bot: str, sealer: Sealer) -> AttachmentStore:
        await db.migrate(COMPONENT, MIGRATIONS)
        return cls(db, bot, sealer)

    async def find(self, txn_id: str) -> AttachmentRecord | None:
        row = await self.db.fetchone(
            "SELECT room_id, mxc, sealed_keys, state, event_id FROM attachments "
            "WHERE bot = ? AND txn_id = ?",
            (self.bot, txn_id),
        )
        if row is None:
            return None
        return AttachmentRecord(
            txn_id=txn_id,
            room_id=RoomId(row["room_id"]),
            mxc=str(row["mxc"]),
            keys=AttachmentKeys.from_json(self._sealer.open_json(bytes(row["sealed_keys"]))),
            state=AttachmentState(row["state"]),
            event_id=EventId(row["event_id"]) if row["event_id"] else None,
        )

    async def record(
        self, txn_id: str, room_id: RoomId, mxc: str, keys: AttachmentKeys, now: float
    ) -> AttachmentRecord:
        """Record a reserved mxc and the keys its ciphertext is made with (replacing an earlier
        attempt of the job whose bytes were different)."""
        await self.db.execute(
            "INSERT INTO attachments "
            "(bot, txn_id, room_id, mxc, sealed_keys, state, event_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, NULL, ?) "
            "ON CONFLICT (bot, txn_id) DO UPDATE SET room_id = excluded.room_id, "
            "mxc = excluded.mxc, sealed_keys = excluded.sealed_keys, state = excluded.state, "
            "event_id = NULL, created_at = excluded.created_at",
            (
                self.bot,
                txn_id,
                room_id,
                mxc,
                self._sealer.seal_json(keys.to_json()),
                AttachmentState.RESERVED.value,
                int(now),
            ),
        )
        return AttachmentRecord(txn_id, room_id, mxc, keys, AttachmentState.RESERVED, None)

    async def mark_uploaded(self, txn_id: str) -> None:
        await self.db.execute(
            "UPDATE attachments SET state = ? WHERE bot = ? AND txn_id = ? AND state = ?",
            (AttachmentState.UPLOADED.value, self.bot, txn_id, AttachmentState.RESERVED.value),
        )

    async def mark_sent(self, txn_id: str, event_id: EventId) -> None:
        await self.db.execute(
            "UPDATE attachments SET state = ?, event_id = ? WHERE bot = ? AND txn_id = ?",
            (AttachmentState.SENT.value, event_id, self.bot, txn_id),
        )

    async def prune(self, now: float, keep_s: float = KEEP_S) -> int:
        """Forget records older than `keep_s`; returns how many."""
        return await self.db.execute(
            "DELETE FROM attachments WHERE bot = ? AND created_at < ?",
            (self.bot, int(now - keep_s)),
        )
