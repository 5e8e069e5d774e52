"""The outbox: every event a bot sends is written down first, then sent, then marked sent.

Exactly once, as a member sees it, comes from two halves:

- **the bot's database makes the decision durable.** A send is recorded (room, type, content
  sealed at rest, its transaction id) before it goes out, and before the event or job that
  caused it is marked done. A send that cannot go now stays `pending`: one whose room is not
  synced yet (a DM just created) goes after the sync that brings the room; one the homeserver
  failed (away, rate limits, a timeout) is tried again with backoff when its time comes
  (`run_retries` sleeps until then: a quiet room with no sync traffic does not delay it),
  across restarts;
- **the homeserver makes the retry harmless.** The transaction id is derived from the logical
  job (`clubs.core.txn`), so sending a row again after a crash — between "sent" and "marked
  sent", or when a replayed command renders the same reply — is absorbed by Synapse, which keeps
  the first event. Synapse remembers a (room, user, device, txn) for 24 hours: a row older than
  `DEDUP_WINDOW_S` that never went out is expired with a log line, never sent blindly.

A row answered 4xx (other than 429) is `wedged`: logged once by room and error code, never
retried in a loop. Rows are kept after sending for `SENT_KEEP_S`: a handler that runs again
after a crash gets the event id it already has, without a request.

Kill points (`clubs.core.crash`): `outbox_written`, `before_send`, `after_send`, `outbox_acked`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clubs.core.clock import Clock
from clubs.core.crash import crashpoint
from clubs.core.db import Database, Migration
from clubs.core.e2ee import E2eeClient
from clubs.core.errors import MatrixError, is_transient
from clubs.core.http import EventId, RoomId
from clubs.core.sealed import Sealer

log = logging.getLogger(__name__)

COMPONENT = "outbox"
MIGRATIONS: Sequence[Migration] = (
    Migration(
        1,
        "the outbox: sends recorded before they go out",
        """
        CREATE TABLE outbox (
            bot TEXT NOT NULL,
            txn_id TEXT NOT NULL,
            room_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            content BLOB NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'wedged', 'expired')),
            created_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_try_at REAL NOT NULL,
            event_id TEXT,
            last_error TEXT,
            PRIMARY KEY (bot, txn_id)
        );
        CREATE INDEX outbox_due ON outbox (bot, state, next_try_at)
        """,
    ),
)

DEDUP_WINDOW_S = 23 * 3600
"""A row not sent within this long is expired: past 24 h Synapse no longer deduplicates."""
SENT_KEEP_S = 24 * 3600
DEAD_KEEP_S = 7 * 24 * 3600
"""Wedged and expired rows are kept this long for an operator to look at, then pruned."""
MAX_ATTEMPTS = 30
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0


@dataclass(frozen=True)
class OutboxRow:
    txn_id: str
    room_id: RoomId
    event_type: str
    state: str
    attempts: int
    created_at: float
    event_id: EventId | None

    def __repr__(self) -> str:  # content never reaches a log through a repr
        return f"OutboxRow(txn_id={self.txn_id!r}, room_id={self.room_id!r}, state={self.state!r})"


class Outbox:
    """One bot account's outbox inside the shared service database."""

    def __init__(
        self, db: Database, bot: str, sealer: Sealer, client: E2eeClient, clock: Clock
    ) -> None:
        self.db = db
        self.bot = bot
        self.sealer = sealer
        self.client = client
        self.clock = clock
        self.wedged = 0
        """Rows wedged since start (tests and the health line read it)."""
        self._retry_wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._in_flight: dict[str, asyncio.Future[EventId | None]] = {}
        """Sends on the wire right now, by txn id: `send` and `flush` never put the same row on
        the wire twice at once; the second caller gets the first one's outcome."""

    @classmethod
    async def open(
        cls, db: Database, bot: str, sealer: Sealer, client: E2eeClient, clock: Clock
    ) -> Outbox:
        await db.migrate(COMPONENT, MIGRATIONS)
        return cls(db, bot, sealer, client, clock)

    async def send(
        self, room_id: RoomId, event_type: str, content: Mapping[str, Any], txn_id: str
    ) -> EventId | None:
        """Record the send, then try it now. Returns the event id once the homeserver has the
        event (at once if an earlier run sent it already), None while it waits in the outbox."""
        row = await self.find(txn_id)
        if row is None:
            now = self.clock.now()
            await self.db.execute(
                "INSERT OR IGNORE INTO outbox (bot, txn_id, room_id, event_type, content, state,"
                " created_at, next_try_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                (
                    self.bot,
                    txn_id,
                    room_id,
                    event_type,
                    self.sealer.seal_json(dict(content)),
                    now,
                    now,
                ),
            )
            crashpoint("outbox_written")
        elif row.state != "pending":
            return row.event_id
        return await self._deliver(txn_id, room_id, event_type, content)

    async def find(self, txn_id: str) -> OutboxRow | None:
        row = await self.db.fetchone(
            "SELECT txn_id, room_id, event_type, state, attempts, created_at, event_id "
            "FROM outbox WHERE bot = ? AND txn_id = ?",
            (self.bot, txn_id),
        )
        return _row(row) if row is not None else None

    async def pending(self) -> list[OutboxRow]:
        rows = await self.db.fetchall(
            "SELECT txn_id, room_id, event_type, state, attempts, created_at, event_id "
            "FROM outbox WHERE bot = ? AND state = 'pending' ORDER BY created_at",
            (self.bot,),
        )
        return [_row(r) for r in rows]

    async def next_retry(self, after: float) -> float | None:
        """When the earliest failed send is due again (later than `after`), if one waits.
        Rows waiting for their room to be synced are not retries: a sync sends them."""
        row = await self.db.fetchone(
            "SELECT MIN(next_try_at) AS t FROM outbox WHERE bot = ? AND state = 'pending' "
            "AND attempts > 0 AND next_try_at > ?",
            (self.bot, after),
        )
        value = row["t"] if row is not None else None
        return float(value) if value is not None else None

    async def run_retries(self) -> None:
        """Flush when a failed send is due again, until cancelled. Wakes early when a new
        failure schedules an earlier retry."""
        while True:
            self._retry_wake.clear()
            due = await self.next_retry(self.clock.now())
            waits: list[asyncio.Task[Any]] = [asyncio.create_task(self._retry_wake.wait())]
            if due is not None:
                waits.append(asyncio.create_task(self.clock.sleep_until(due)))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if due is not None and self.clock.now() >= due:
                await self.flush()

    async def flush(self) -> int:
        """Send every pending row that is due and whose room is synced; expire rows past the
        deduplication window. Returns how many went out."""
        async with self._flushing:  # the sync loop and the retry timer never send a row twice
            return await self._flush()

    async def _flush(self) -> int:
        now = self.clock.now()
        rows = await self.db.fetchall(
            "SELECT txn_id, room_id, event_type, content, created_at FROM outbox "
            "WHERE bot = ? AND state = 'pending' AND next_try_at <= ? ORDER BY created_at",
            (self.bot, now),
        )
        sent = 0
        for r in rows:
            txn, room = str(r["txn_id"]), RoomId(str(r["room_id"]))
            if now - float(r["created_at"]) > DEDUP_WINDOW_S:
                await self._finish(txn, "expired", None, "older than the deduplication window")
                log.warning(
                    "%s: a send to %s waited more than %d h and is dropped (expired)",
                    self.bot,
                    room,
                    DEDUP_WINDOW_S // 3600,
                )
                continue
            if not self.client.knows_room(room):
                continue
            content = self.sealer.open_json(r["content"])
            if await self._deliver(txn, room, str(r["event_type"]), content) is not None:
                sent += 1
        return sent

    async def prune(self) -> int:
        """Forget rows that can no longer matter."""
        now = self.clock.now()
        return await self.db.execute(
            "DELETE FROM outbox WHERE bot = ? AND ((state = 'sent' AND created_at < ?) "
            "OR (state IN ('wedged', 'expired') AND created_at < ?))",
            (self.bot, now - SENT_KEEP_S, now - DEAD_KEEP_S),
        )

    async def _deliver(
        self, txn_id: str, room_id: RoomId, event_type: str, content: Mapping[str, Any]
    ) -> EventId | None:
        if not self.client.knows_room(room_id):
            return None  # not synced yet: `flush` sends it after a sync has brought the room
        running = self._in_flight.get(txn_id)
        if running is not None:
            return await asyncio.shield(running)
        outcome: asyncio.Future[EventId | None] = asyncio.get_running_loop().create_future()
        self._in_flight[txn_id] = outcome
        event_id: EventId | None = None
        try:
            try:
                crashpoint("before_send")
                event_id = await self.client.send(room_id, event_type, content, txn_id=txn_id)
                crashpoint("after_send")
            except Exception as e:
                await self._failed(txn_id, room_id, e)
                return None
            await self._finish(txn_id, "sent", event_id, None)
        finally:
            del self._in_flight[txn_id]
            outcome.set_result(event_id)  # None unless the row is `sent`
        crashpoint("outbox_acked")
        return event_id

    async def _failed(self, txn_id: str, room_id: RoomId, error: Exception) -> None:
        row = await self.find(txn_id)
        attempts = (row.attempts if row else 0) + 1
        code = error.errcode if isinstance(error, MatrixError) else type(error).__name__
        if (is_transient(error) or not isinstance(error, MatrixError)) and attempts < MAX_ATTEMPTS:
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** min(attempts, 16))
            delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
            await self.db.execute(
                "UPDATE outbox SET attempts = ?, next_try_at = ?, last_error = ? "
                "WHERE bot = ? AND txn_id = ? AND state = 'pending'",
                (attempts, self.clock.now() + delay, code, self.bot, txn_id),
            )
            self._retry_wake.set()
            log.info(
                "%s: a send to %s failed (%s); retried in %.0fs", self.bot, room_id, code, delay
            )
            return
        await self._finish(txn_id, "wedged", None, code)
        self.wedged += 1
        log.warning("%s: a send to %s was refused (%s) and is given up", self.bot, room_id, code)

    async def _finish(
        self, txn_id: str, state: str, event_id: EventId | None, error: str | None
    ) -> None:
        await self.db.execute(
            "UPDATE outbox SET state = ?, event_id = ?, last_error = ? "
            "WHERE bot = ? AND txn_id = ?",
            (state, event_id, error, self.bot, txn_id),
        )


def _row(r: Any) -> OutboxRow:
    event_id = r["event_id"]
    return OutboxRow(
        txn_id=str(r["txn_id"]),
        room_id=RoomId(str(r["room_id"])),
        event_type=str(r["event_type"]),
        state=str(r["state"]),
        attempts=int(r["attempts"]),
        created_at=float(r["created_at"]),
        event_id=EventId(event_id) if isinstance(event_id, str) else None,
    )
