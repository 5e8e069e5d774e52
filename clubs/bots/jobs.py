"""Durable jobs: work that is due at a wall-clock instant (a reminder, a timer, a weekly
check-in) and must happen exactly once, even across crashes and downtime.

A job is a row: its id comes from the logical job (`kind` plus a `key` the bot chooses, e.g.
`reminder` / `session-42@2026-12-10T19:00`), so scheduling it twice is one job. Its due time is
UTC epoch seconds; its payload is sealed at rest (it may hold a person's words).

The runner of one bot:

1. claims the jobs that are due (`pending` → `running`, in a transaction);
2. runs each one's handler — within its grace window the `@on_job` handler (told how late it
   is), past it the `@on_missed_job` handler, so nothing is ever dropped silently; a job with
   no missed handler is recorded `missed` with a warning;
3. completes it (`done`) in one transaction together with the follow-up jobs the handler staged
   (`ctx.then(...)`: the next occurrence of a recurring job is never lost between the two).

Sends go through the outbox with transaction ids derived from the job id, so a job run again
after a crash between its send and its completion is absorbed by the homeserver: exactly once
as seen in the room. A failure that is the homeserver's puts the job back with backoff; any
other failure is logged by kind and id and recorded `failed` (never a tight loop).

The runner sleeps until the earliest due job or until a job is scheduled: no polling loop, no
wake-up per second. Rows left `running` by a crash are taken up again at start.

Kill points: `job_claimed`, `job_ran` (handler done, not yet completed), `job_completed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from clubs.bots.botmetrics import JOB_LAG, JOBS
from clubs.core.clock import Clock
from clubs.core.crash import crashpoint
from clubs.core.db import Database, Migration
from clubs.core.errors import is_transient
from clubs.core.sealed import Sealer

if TYPE_CHECKING:
    from clubs.bots.context import BotContext

log = logging.getLogger(__name__)

COMPONENT = "jobs"
MIGRATIONS: Sequence[Migration] = (
    Migration(
        1,
        "durable jobs",
        """
        CREATE TABLE jobs (
            bot TEXT NOT NULL,
            job_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            due_at REAL NOT NULL,
            grace_s REAL,
            payload BLOB NOT NULL,
            state TEXT NOT NULL
                CHECK (state IN ('pending', 'running', 'done', 'missed', 'failed', 'cancelled')),
            attempts INTEGER NOT NULL DEFAULT 0,
            not_before REAL NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (bot, job_id)
        );
        CREATE INDEX jobs_due ON jobs (bot, state, not_before)
        """,
    ),
)

DEFAULT_GRACE_S = 3600.0
CLAIM_BATCH = 200
CONCURRENCY = 16
"""Jobs of one bot running at once (a burst of due reminders goes out together)."""
BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 300.0
MAX_ATTEMPTS = 20
STUCK_RETRY_S = 5.0
FINISHED_KEEP_S = 30 * 24 * 3600
"""Finished rows are kept this long (so a job id scheduled again is recognised), then pruned."""

_MARK = "__clubs_job__"
F = TypeVar("F", bound=Callable[..., Awaitable[None]])


def job_id_of(kind: str, key: str) -> str:
    return f"{kind}:{key}"


@dataclass(frozen=True)
class Job:
    job_id: str
    kind: str
    key: str
    due_at: float
    grace_s: float | None
    payload: Mapping[str, Any]
    state: str
    attempts: int

    def __repr__(self) -> str:  # the payload never reaches a log through a repr
        return f"Job(job_id={self.job_id!r}, state={self.state!r}, due_at={self.due_at:.0f})"


@dataclass(frozen=True)
class JobHandlerSpec:
    kind: str
    missed: bool
    grace_s: float | None
    handler: Callable[[JobContext], Awaitable[None]]


def on_job(kind: str, *, grace_s: float | None = None) -> Callable[[F], F]:
    """Mark `async def handler(self, ctx: JobContext) -> None` as the runner of `kind` jobs;
    `grace_s` is how late it may still run (default: the job's own, else an hour)."""

    def mark(handler: F) -> F:
        setattr(handler, _MARK, (kind, False, grace_s))
        return handler

    return mark


def on_missed_job(kind: str) -> Callable[[F], F]:
    """Mark the handler of `kind` jobs found past their grace window (after downtime): it says
    so to the people concerned, or does what replaces the job."""

    def mark(handler: F) -> F:
        setattr(handler, _MARK, (kind, True, None))
        return handler

    return mark


def collect_job_handlers(*objects: object) -> list[JobHandlerSpec]:
    """The `@on_job`/`@on_missed_job` methods of the objects (a bot: with the handler objects
    it registered)."""
    from clubs.bots.base import handler_objects

    specs = []
    owners = [owner for obj in objects for owner in handler_objects(obj)]
    for obj in owners:
        for _, member in inspect.getmembers(obj, inspect.ismethod):
            mark = getattr(member, _MARK, None)
            if mark is not None:
                kind, missed, grace = mark
                specs.append(JobHandlerSpec(kind, missed, grace, member))
    return specs


@dataclass(frozen=True)
class FollowUp:
    kind: str
    key: str
    due_at: float
    payload: Mapping[str, Any]
    grace_s: float | None


@dataclass
class JobContext:
    """One job being run, with the bot's services (send through `bot`)."""

    bot: BotContext
    job: Job
    now: float
    missed: bool
    follow_ups: list[FollowUp] = field(default_factory=list)

    @property
    def late_s(self) -> float:
        """How long after its due time the job runs (0 when on time)."""
        return max(0.0, self.now - self.job.due_at)

    @property
    def payload(self) -> Mapping[str, Any]:
        return self.job.payload

    def txn(self, *parts: str) -> tuple[str, ...]:
        """A logical job id for a send of this job (deterministic across re-runs)."""
        return (self.bot.name, "job", self.job.job_id, *parts)

    def then(
        self,
        kind: str,
        key: str,
        due_at: float,
        payload: Mapping[str, Any] | None = None,
        *,
        grace_s: float | None = None,
    ) -> None:
        """Schedule a follow-up (the next occurrence) atomically with this job's completion."""
        self.follow_ups.append(FollowUp(kind, key, due_at, dict(payload or {}), grace_s))


class JobStore:
    """One bot account's jobs inside the shared service database."""

    def __init__(self, db: Database, bot: str, sealer: Sealer) -> None:
        self.db = db
        self.bot = bot
        self.sealer = sealer

    @classmethod
    async def open(cls, db: Database, bot: str, sealer: Sealer) -> JobStore:
        await db.migrate(COMPONENT, MIGRATIONS)
        return cls(db, bot, sealer)

    async def add(
        self,
        kind: str,
        key: str,
        due_at: float,
        payload: Mapping[str, Any],
        *,
        grace_s: float | None,
        now: float,
        replace: bool = False,
    ) -> bool:
        """Insert a pending job; an existing job id is kept (`replace`: a pending one gets the
        new time and payload). Returns whether something changed."""
        sealed = self.sealer.seal_json(dict(payload))
        job_id = job_id_of(kind, key)
        if replace:
            changed = await self.db.execute(
                "UPDATE jobs SET due_at = ?, grace_s = ?, payload = ?, not_before = ?, "
                "updated_at = ?, attempts = 0 WHERE bot = ? AND job_id = ? AND state = 'pending'",
                (due_at, grace_s, sealed, due_at, now, self.bot, job_id),
            )
            if changed:
                return True
        return bool(
            await self.db.execute(
                "INSERT OR IGNORE INTO jobs (bot, job_id, kind, key, due_at, grace_s, payload, "
                "state, not_before, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (self.bot, job_id, kind, key, due_at, grace_s, sealed, due_at, now),
            )
        )

    async def cancel(self, kind: str, key: str, *, now: float) -> bool:
        return bool(
            await self.db.execute(
                "UPDATE jobs SET state = 'cancelled', updated_at = ? "
                "WHERE bot = ? AND job_id = ? AND state = 'pending'",
                (now, self.bot, job_id_of(kind, key)),
            )
        )

    async def get(self, kind: str, key: str) -> Job | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM jobs WHERE bot = ? AND job_id = ?",  # noqa: S608 - constant
            (self.bot, job_id_of(kind, key)),
        )
        return self._job(row) if row is not None else None

    async def select(
        self, kind: str | None = None, *, states: Iterable[str] = ("pending",)
    ) -> list[Job]:
        states = tuple(states)
        marks = ", ".join("?" for _ in states)
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE bot = ? AND state IN ({marks})"  # noqa: S608
        params: list[Any] = [self.bot, *states]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        rows = await self.db.fetchall(sql + " ORDER BY due_at", params)
        return [self._job(r) for r in rows]

    async def next_due(self) -> float | None:
        row = await self.db.fetchone(
            "SELECT MIN(not_before) AS t FROM jobs WHERE bot = ? AND state = 'pending'", (self.bot,)
        )
        value = row["t"] if row is not None else None
        return float(value) if value is not None else None

    async def requeue_running(self, now: float) -> int:
        """Jobs a crash left `running` go back to `pending` (this process owns the bot)."""
        return await self.db.execute(
            "UPDATE jobs SET state = 'pending', updated_at = ? WHERE bot = ? AND state = 'running'",
            (now, self.bot),
        )

    async def claim_due(self, now: float, limit: int = CLAIM_BATCH) -> list[Job]:
        async with self.db.transaction():
            rows = await self.db.fetchall(
                f"SELECT {_COLUMNS} FROM jobs WHERE bot = ? AND state = 'pending' "  # noqa: S608
                "AND not_before <= ? ORDER BY not_before LIMIT ?",
                (self.bot, now, limit),
            )
            for row in rows:
                await self.db.execute(
                    "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = ? "
                    "WHERE bot = ? AND job_id = ?",
                    (now, self.bot, row["job_id"]),
                )
        jobs = [self._job(r) for r in rows]
        return [Job(**{**j.__dict__, "state": "running", "attempts": j.attempts + 1}) for j in jobs]

    async def complete(
        self, job: Job, state: str, now: float, follow_ups: Sequence[FollowUp] = ()
    ) -> None:
        async with self.db.transaction():
            await self.db.execute(
                "UPDATE jobs SET state = ?, updated_at = ? WHERE bot = ? AND job_id = ?",
                (state, now, self.bot, job.job_id),
            )
            for f in follow_ups:
                await self.db.execute(
                    "INSERT OR IGNORE INTO jobs (bot, job_id, kind, key, due_at, grace_s, "
                    "payload, state, not_before, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                    (
                        self.bot,
                        job_id_of(f.kind, f.key),
                        f.kind,
                        f.key,
                        f.due_at,
                        f.grace_s,
                        self.sealer.seal_json(dict(f.payload)),
                        f.due_at,
                        now,
                    ),
                )

    async def retry_later(self, job: Job, not_before: float, now: float) -> None:
        await self.db.execute(
            "UPDATE jobs SET state = 'pending', not_before = ?, updated_at = ? "
            "WHERE bot = ? AND job_id = ?",
            (not_before, now, self.bot, job.job_id),
        )

    async def prune(self, now: float) -> int:
        return await self.db.execute(
            "DELETE FROM jobs WHERE bot = ? AND state NOT IN ('pending', 'running') "
            "AND updated_at < ?",
            (self.bot, now - FINISHED_KEEP_S),
        )

    def _job(self, row: Any) -> Job:
        grace = row["grace_s"]
        return Job(
            job_id=str(row["job_id"]),
            kind=str(row["kind"]),
            key=str(row["key"]),
            due_at=float(row["due_at"]),
            grace_s=float(grace) if grace is not None else None,
            payload=self.sealer.open_json(row["payload"]),
            state=str(row["state"]),
            attempts=int(row["attempts"]),
        )


_COLUMNS = "job_id, kind, key, due_at, grace_s, payload, state, attempts"


class JobRunner:
    """Schedules and runs one bot's jobs. Bots reach it as `ctx.jobs`."""

    def __init__(
        self,
        store: JobStore,
        clock: Clock,
        handlers: Sequence[JobHandlerSpec],
        context: Callable[[], BotContext],
    ) -> None:
        self.store = store
        self.clock = clock
        self._due = {s.kind: s for s in handlers if not s.missed}
        self._missed = {s.kind: s for s in handlers if s.missed}
        self._context = context
        self._wake = asyncio.Event()
        self._stuck: dict[str, Job] = {}
        """Jobs whose outcome could not be recorded (storage fault): put back when it heals."""
        self.ran = 0
        """Jobs run since start (due or missed handler)."""

    # --- what bots call ------------------------------------------------------------------------

    async def schedule(
        self,
        kind: str,
        key: str,
        due_at: float,
        payload: Mapping[str, Any] | None = None,
        *,
        grace_s: float | None = None,
        replace: bool = False,
    ) -> bool:
        """Schedule a job (idempotent by kind and key; `replace` moves a pending one)."""
        if kind not in self._due:
            raise ValueError(f"no @on_job handler for job kind {kind!r}")
        changed = await self.store.add(
            kind,
            key,
            due_at,
            payload or {},
            grace_s=grace_s,
            now=self.clock.now(),
            replace=replace,
        )
        if changed:
            self._wake.set()
        return changed

    async def cancel(self, kind: str, key: str) -> bool:
        return await self.store.cancel(kind, key, now=self.clock.now())

    async def get(self, kind: str, key: str) -> Job | None:
        return await self.store.get(kind, key)

    async def pending(self, kind: str | None = None) -> list[Job]:
        return await self.store.select(kind)

    # --- the runner ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run due jobs until cancelled."""
        requeued = await self.store.requeue_running(self.clock.now())
        if requeued:
            log.info("%s: %d job(s) interrupted by a stop run again", self.store.bot, requeued)
        gate = asyncio.Semaphore(CONCURRENCY)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._wake.clear()
                now = self.clock.now()
                await self._unstick(now)
                for job in await self.store.claim_due(now):
                    crashpoint("job_claimed")
                    await gate.acquire()
                    task = asyncio.create_task(self._run_one(job, gate), name=f"job:{job.kind}")
                    running.add(task)
                    task.add_done_callback(running.discard)
                nxt = await self.store.next_due()
                if nxt is not None and nxt <= self.clock.now():
                    # More due than one batch (or a retry due now): claim again at once, after
                    # the jobs in flight have had a turn.
                    await asyncio.sleep(0)
                    if running:
                        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                if self._stuck:
                    nxt = min(nxt or now + STUCK_RETRY_S, now + STUCK_RETRY_S)
                await self._sleep(nxt)
        finally:
            for task in running:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*running, return_exceptions=True)

    async def _unstick(self, now: float) -> None:
        for job_id, job in list(self._stuck.items()):
            if not await _recorded(self.store.retry_later(job, now, now)):
                return  # still failing: try again in STUCK_RETRY_S
            del self._stuck[job_id]

    async def _sleep(self, until: float | None) -> None:
        """Until the next due job, or a new job, whichever comes first."""
        waits: list[asyncio.Task[Any]] = [asyncio.create_task(self._wake.wait())]
        if until is not None:
            waits.append(asyncio.create_task(self.clock.sleep_until(until)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _run_one(self, job: Job, gate: asyncio.Semaphore) -> None:
        try:
            await self._execute(job)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # its outcome could not be recorded (a storage fault)
            self._stuck[job.job_id] = job
            self._wake.set()
            log.error(
                "%s: job %s could not be recorded: %s", self.store.bot, job.kind, type(e).__name__
            )
        finally:
            gate.release()

    async def _execute(self, job: Job) -> None:
        now = self.clock.now()
        due = self._due.get(job.kind)
        grace = job.grace_s if job.grace_s is not None else None
        if grace is None:
            grace = due.grace_s if due is not None and due.grace_s is not None else DEFAULT_GRACE_S
        missed = now - job.due_at > grace
        spec = self._missed.get(job.kind) if missed else due
        if spec is None:
            state = "missed" if missed else "failed"
            log.warning(
                "%s: job %s %s (%.0fs late) has no %s handler; recorded %s",
                self.store.bot,
                job.kind,
                job.job_id,
                now - job.due_at,
                "missed" if missed else "due",
                state,
            )
            await self.store.complete(job, state, now)
            return
        ctx = JobContext(self._context(), job, now, missed)
        JOB_LAG.observe(ctx.late_s, bot=self.store.bot, kind=job.kind)
        if ctx.late_s > 1:
            log.info(
                "%s: job %s runs %.0fs late%s",
                self.store.bot,
                job.kind,
                ctx.late_s,
                " (missed handler)" if missed else "",
            )
        try:
            await spec.handler(ctx)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if (is_transient(e) or _store_fault(e)) and job.attempts < MAX_ATTEMPTS:
                delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** min(job.attempts, 16))
                delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
                await self.store.retry_later(job, self.clock.now() + delay, self.clock.now())
                self._wake.set()
                JOBS.inc(bot=self.store.bot, kind=job.kind, outcome="retried")
                log.warning(
                    "%s: job %s failed (%s); retried in %.0fs",
                    self.store.bot,
                    job.kind,
                    type(e).__name__,
                    delay,
                )
                return
            log.warning(
                "%s: job %s %s failed: %s", self.store.bot, job.kind, job.job_id, type(e).__name__
            )
            log.debug("%s: job failure detail", self.store.bot, exc_info=True)
            await self.store.complete(job, "failed", self.clock.now())
            JOBS.inc(bot=self.store.bot, kind=job.kind, outcome="failed")
            return
        self.ran += 1
        crashpoint("job_ran")
        await self.store.complete(
            job, "missed" if missed else "done", self.clock.now(), ctx.follow_ups
        )
        JOBS.inc(bot=self.store.bot, kind=job.kind, outcome="missed" if missed else "done")
        if ctx.follow_ups:
            self._wake.set()
        crashpoint("job_completed")


async def _recorded(write: Awaitable[None]) -> bool:
    from clubs.core.db import StoreUnavailable

    try:
        await write
    except StoreUnavailable:
        return False
    return True


def _store_fault(error: BaseException) -> bool:
    from clubs.core.db import StoreUnavailable

    return isinstance(error, StoreUnavailable)
