"""Durable jobs: idempotent scheduling, due-time running on a manual clock, grace and missed
handling, follow-ups, retries, crash recovery, sealed payloads, and a runner that sleeps until
the next due job instead of polling."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.fernet import Fernet

from clubs.bots.context import BotContext
from clubs.bots.jobs import (
    BACKOFF_MAX_S,
    JobContext,
    JobRunner,
    JobStore,
    collect_job_handlers,
    on_job,
    on_missed_job,
)
from clubs.core.clock import ManualClock
from clubs.core.db import Database
from clubs.core.errors import Unreachable
from clubs.core.sealed import Sealer

T0 = 1_800_000_000.0
SECRET = "встреча у Анны в 19:00"


@dataclass
class Call:
    kind: str
    key: str
    missed: bool
    late_s: float
    payload: dict[str, Any]
    txn: tuple[str, ...]


@dataclass
class StandIn:
    """The part of BotContext the job runner and these handlers touch: the bot's name."""

    name: str = "scheduling"


@dataclass
class Reminders:
    """Handlers that only record what they were called with (and fail when told to)."""

    calls: list[Call] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    follow_up: bool = False

    def record(self, ctx: JobContext) -> None:
        self.calls.append(
            Call(
                ctx.job.kind,
                ctx.job.key,
                ctx.missed,
                ctx.late_s,
                dict(ctx.payload),
                ctx.txn("notice"),
            )
        )

    @on_job("remind", grace_s=600)
    async def remind(self, ctx: JobContext) -> None:
        self.record(ctx)
        if self.failures:
            raise self.failures.pop(0)
        if self.follow_up:
            ctx.then("remind", f"{ctx.job.key}+1", ctx.job.due_at + 3600, {"n": 2})

    @on_missed_job("remind")
    async def remind_missed(self, ctx: JobContext) -> None:
        self.record(ctx)

    @on_job("plain", grace_s=60)
    async def plain(self, ctx: JobContext) -> None:
        self.record(ctx)


class CountingStore(JobStore):
    """A real store that counts how often the runner looks for due jobs (its wake-ups)."""

    claims = 0

    async def claim_due(self, now: float, limit: int = 200) -> list[Any]:
        self.claims += 1
        return await super().claim_due(now, limit)


@dataclass
class Setup:
    db: Database
    store: CountingStore
    clock: ManualClock
    bot: Reminders

    def runner(self) -> JobRunner:
        return JobRunner(
            self.store,
            self.clock,
            collect_job_handlers(self.bot),
            lambda: cast(BotContext, StandIn()),
        )


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    db = await Database.open(tmp_path / "bots.db")
    sealer = Sealer(Fernet.generate_key())
    await JobStore.open(db, "scheduling", sealer)  # the migration
    store = CountingStore(db, "scheduling", sealer)
    yield Setup(db, store, ManualClock(T0), Reminders())
    await db.close()


async def until(probe: Callable[[], Awaitable[bool] | bool], within: float = 5.0) -> None:
    """Poll with a deadline (the store's writes go through a thread: no fixed number of turns)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = probe()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met in time")


@contextlib.asynccontextmanager
async def running(runner: JobRunner) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(runner.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def parked_until(clock: ManualClock, when: float) -> None:
    await until(lambda: clock.sleepers == 1 and clock.next_wakeup() == when)


async def state_of(s: Setup, kind: str, key: str) -> str | None:
    job = await s.store.get(kind, key)
    return job.state if job is not None else None


async def test_scheduling_is_idempotent_by_kind_and_key(setup: Setup) -> None:
    runner = setup.runner()
    assert await runner.schedule("remind", "a", T0 + 60, {"text": "first"})
    assert not await runner.schedule("remind", "a", T0 + 120, {"text": "second"})
    assert await runner.schedule("plain", "a", T0 + 60)  # another kind: another job
    pending = await runner.pending("remind")
    assert [(j.key, j.due_at, dict(j.payload)) for j in pending] == [
        ("a", T0 + 60, {"text": "first"})
    ]
    with pytest.raises(ValueError, match="no @on_job handler"):
        await runner.schedule("unknown", "a", T0 + 60)


async def test_replace_moves_a_pending_job_and_nothing_else(setup: Setup) -> None:
    runner = setup.runner()
    await runner.schedule("remind", "a", T0 + 60, {"text": "first"})
    assert await runner.schedule("remind", "a", T0 + 300, {"text": "moved"}, replace=True)
    job = await runner.get("remind", "a")
    assert job is not None
    assert (job.due_at, dict(job.payload), job.state) == (T0 + 300, {"text": "moved"}, "pending")
    async with running(runner):
        await setup.clock.advance(300)
        await until(lambda: len(setup.bot.calls) == 1)
        await until(lambda: _is(state_of(setup, "remind", "a"), "done"))
    # A finished job is not brought back by replace.
    assert not await runner.schedule("remind", "a", T0 + 900, replace=True)
    assert await state_of(setup, "remind", "a") == "done"


async def _is(value: Awaitable[str | None], expected: str) -> bool:
    return await value == expected


async def test_a_job_runs_when_the_clock_passes_its_due_time_and_not_before(
    setup: Setup,
) -> None:
    runner = setup.runner()
    await runner.schedule("remind", "a", T0 + 60, {"text": "hi"})
    async with running(runner):
        await parked_until(setup.clock, T0 + 60)
        await setup.clock.advance(59)
        await parked_until(setup.clock, T0 + 60)
        assert setup.bot.calls == []
        await setup.clock.advance(1)
        await until(lambda: len(setup.bot.calls) == 1)
        await until(lambda: _is(state_of(setup, "remind", "a"), "done"))
    call = setup.bot.calls[0]
    assert (call.kind, call.key, call.missed, call.late_s, call.payload) == (
        "remind",
        "a",
        False,
        0.0,
        {"text": "hi"},
    )
    assert call.txn == ("scheduling", "job", "remind:a", "notice")
    assert runner.ran == 1


async def test_a_job_found_late_within_its_grace_runs_its_handler_told_how_late(
    setup: Setup,
) -> None:
    runner = setup.runner()
    await runner.schedule("remind", "a", T0 + 60)
    await setup.clock.advance(60 + 500)  # the bot was down; the grace is 600 s
    async with running(runner):
        await until(lambda: len(setup.bot.calls) == 1)
        await until(lambda: _is(state_of(setup, "remind", "a"), "done"))
    assert (setup.bot.calls[0].missed, setup.bot.calls[0].late_s) == (False, 500.0)


async def test_a_job_past_its_grace_runs_the_missed_handler(setup: Setup) -> None:
    runner = setup.runner()
    await runner.schedule("remind", "a", T0 + 60, {"text": "hi"})
    await runner.schedule("remind", "b", T0 + 60, grace_s=7200)  # its own grace wins
    await setup.clock.advance(60 + 3600)
    async with running(runner):
        await until(lambda: len(setup.bot.calls) == 2)
        await until(lambda: _is(state_of(setup, "remind", "a"), "missed"))
        await until(lambda: _is(state_of(setup, "remind", "b"), "done"))
    calls = {c.key: c for c in setup.bot.calls}
    assert (calls["a"].missed, calls["a"].late_s, calls["a"].payload) == (
        True,
        3600.0,
        {"text": "hi"},
    )
    assert (calls["b"].missed, calls["b"].late_s) == (False, 3600.0)


async def test_a_job_past_its_grace_without_a_missed_handler_is_recorded_missed(
    setup: Setup,
) -> None:
    runner = setup.runner()
    await runner.schedule("plain", "a", T0 + 10)
    await setup.clock.advance(10 + 61)
    async with running(runner):
        await until(lambda: _is(state_of(setup, "plain", "a"), "missed"))
    assert setup.bot.calls == []  # not run late, and not dropped: its row says missed
    assert await runner.pending() == []


async def test_follow_ups_are_inserted_with_the_completion(setup: Setup) -> None:
    setup.bot.follow_up = True
    runner = setup.runner()
    await runner.schedule("remind", "w1", T0 + 60)
    async with running(runner):
        await setup.clock.advance(60)
        await until(lambda: _is(state_of(setup, "remind", "w1"), "done"))
        nxt = await runner.get("remind", "w1+1")
        assert nxt is not None
        assert (nxt.state, nxt.due_at, dict(nxt.payload)) == ("pending", T0 + 3660, {"n": 2})
        await parked_until(setup.clock, T0 + 3660)  # the runner knows of it at once
        setup.bot.follow_up = False
        await setup.clock.advance(3600)
        await until(lambda: _is(state_of(setup, "remind", "w1+1"), "done"))
    assert [c.key for c in setup.bot.calls] == ["w1", "w1+1"]


async def test_a_failed_job_stages_no_follow_up(setup: Setup) -> None:
    setup.bot.follow_up = True
    setup.bot.failures.append(ValueError("a bug"))
    runner = setup.runner()
    await runner.schedule("remind", "w1", T0)
    async with running(runner):
        await until(lambda: _is(state_of(setup, "remind", "w1"), "failed"))
    assert await runner.get("remind", "w1+1") is None


async def test_a_transient_failure_is_retried_later_with_backoff(setup: Setup) -> None:
    setup.bot.failures.append(Unreachable("homeserver away"))
    runner = setup.runner()
    await runner.schedule("remind", "a", T0)
    async with running(runner):
        await until(lambda: len(setup.bot.calls) == 1)
        await until(lambda: _is(state_of(setup, "remind", "a"), "pending"))
        await until(lambda: setup.clock.sleepers == 1)  # parked until the retry
        retry_at = setup.clock.next_wakeup()
        assert retry_at is not None
        assert T0 < retry_at <= T0 + BACKOFF_MAX_S  # backed off, not a tight loop
        await parked_until(setup.clock, retry_at)
        assert len(setup.bot.calls) == 1
        await setup.clock.set(retry_at)
        await until(lambda: _is(state_of(setup, "remind", "a"), "done"))
    assert len(setup.bot.calls) == 2
    job = await runner.get("remind", "a")
    assert job is not None
    assert job.attempts == 2


async def test_a_non_transient_failure_is_recorded_failed_and_not_retried(
    setup: Setup,
) -> None:
    setup.bot.failures.append(KeyError("a bug"))
    runner = setup.runner()
    await runner.schedule("remind", "a", T0)
    async with running(runner):
        await until(lambda: _is(state_of(setup, "remind", "a"), "failed"))
        await setup.clock.advance(BACKOFF_MAX_S * 10)
        await asyncio.sleep(0.05)
        assert setup.clock.sleepers == 0  # nothing left to wait for
    assert len(setup.bot.calls) == 1


async def test_jobs_left_running_by_a_crash_run_again_in_a_new_runner(setup: Setup) -> None:
    runner = setup.runner()
    await runner.schedule("remind", "a", T0)
    await runner.schedule("remind", "b", T0 + 5)
    await setup.clock.advance(5)
    claimed = await setup.store.claim_due(setup.clock.now())  # then the process died
    assert [j.key for j in claimed] == ["a", "b"]
    assert await state_of(setup, "remind", "a") == "running"
    async with running(setup.runner()):
        await until(lambda: len(setup.bot.calls) == 2)
        await until(lambda: _is(state_of(setup, "remind", "b"), "done"))
    assert sorted(c.key for c in setup.bot.calls) == ["a", "b"]
    # The re-run sends with the same txn parts as the interrupted run would have.
    assert {c.txn for c in setup.bot.calls} == {
        ("scheduling", "job", "remind:a", "notice"),
        ("scheduling", "job", "remind:b", "notice"),
    }


async def test_payloads_are_sealed_at_rest(setup: Setup, tmp_path: Path) -> None:
    runner = setup.runner()
    await runner.schedule("remind", "a", T0 + 60, {"text": SECRET})
    job = await runner.get("remind", "a")
    assert job is not None
    assert job.payload == {"text": SECRET}
    assert SECRET not in repr(job)
    row = await setup.db.fetchone("SELECT payload, job_id FROM jobs")
    assert row is not None
    assert row["job_id"] == "remind:a"
    await setup.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = b"".join(f.read_bytes() for f in tmp_path.iterdir() if f.name.startswith("bots.db"))
    assert b"remind:a" in raw  # the ids stay clear: the check below looks at the right bytes
    assert SECRET.encode() not in raw
    assert SECRET.encode() not in bytes(row["payload"])


async def test_cancel_stops_a_pending_job(setup: Setup) -> None:
    runner = setup.runner()
    await runner.schedule("remind", "a", T0 + 60)
    await runner.schedule("remind", "b", T0 + 60)
    assert await runner.cancel("remind", "a")
    assert not await runner.cancel("remind", "a")
    assert not await runner.cancel("remind", "never")
    async with running(runner):
        await setup.clock.advance(60)
        await until(lambda: _is(state_of(setup, "remind", "b"), "done"))
    assert [c.key for c in setup.bot.calls] == ["b"]
    assert await state_of(setup, "remind", "a") == "cancelled"
    assert not await runner.schedule("remind", "a", T0 + 120)  # a cancelled id stays taken


async def test_the_runner_sleeps_until_the_next_due_job_and_a_new_job_wakes_it(
    setup: Setup,
) -> None:
    runner = setup.runner()
    for i in range(50):
        await runner.schedule("remind", f"far{i}", T0 + 86_400 + i)
    async with running(runner):
        await parked_until(setup.clock, T0 + 86_400)
        claims = setup.store.claims
        await setup.clock.advance(3600)  # an hour with nothing due: no wake-up
        await asyncio.sleep(0.05)
        assert setup.store.claims == claims
        assert setup.clock.next_wakeup() == T0 + 86_400
        await runner.schedule("remind", "soon", T0 + 3600 + 30)
        await parked_until(setup.clock, T0 + 3600 + 30)
        assert setup.store.claims == claims + 1  # one look when told of the new job
        await setup.clock.advance(30)
        await until(lambda: [c.key for c in setup.bot.calls] == ["soon"])
        await parked_until(setup.clock, T0 + 86_400)


async def test_an_idle_runner_with_nothing_scheduled_does_not_sleep_on_the_clock(
    setup: Setup,
) -> None:
    runner = setup.runner()
    async with running(runner):
        await until(lambda: setup.store.claims == 1)
        await setup.clock.advance(7 * 86_400)
        await asyncio.sleep(0.05)
        assert (setup.store.claims, setup.clock.sleepers) == (1, 0)
        await runner.schedule("plain", "x", T0 + 8 * 86_400)
        await parked_until(setup.clock, T0 + 8 * 86_400)


def test_job_and_poll_handlers_of_registered_handler_objects_are_collected() -> None:
    from clubs.bots.base import Bot
    from clubs.bots.polls import PollUpdate, collect_poll_handlers, on_poll

    class Parts:
        @on_job("tick")
        async def tick(self, ctx: JobContext) -> None: ...

        @on_missed_job("tick")
        async def late(self, ctx: JobContext) -> None: ...

        @on_poll
        async def voted(self, ctx: object, update: PollUpdate) -> None: ...

    class Composed(Bot):
        def __init__(self) -> None:
            self.parts = Parts()
            self.register_handler_class(self.parts)

    bot = Composed()
    specs = collect_job_handlers(bot)
    assert sorted((s.kind, s.missed) for s in specs) == [("tick", False), ("tick", True)]
    assert [h.__self__ for h in collect_poll_handlers(bot)] == [bot.parts]  # type: ignore[attr-defined]
