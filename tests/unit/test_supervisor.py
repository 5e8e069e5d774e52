"""The supervisor's decisions (pure), and its restarts with tiny real child processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from clubs.supervisor import (
    ChildSpec,
    Deaths,
    GiveUp,
    Restart,
    RestartPolicy,
    Supervisor,
    after_death,
    backoff_delay,
    describe_exit,
)

POLICY = RestartPolicy(
    first_delay_s=0.25,
    factor=2.0,
    max_delay_s=10.0,
    jitter=0.5,
    stable_after_s=60.0,
    max_fast_deaths=5,
    window_s=120.0,
)


def test_first_restart_is_fast_and_never_later_than_the_backoff() -> None:
    assert backoff_delay(POLICY, 1, draw=0.0) == 0.25
    assert backoff_delay(POLICY, 1, draw=0.999) == pytest.approx(0.125, abs=1e-3)


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(POLICY, n, draw=0.0) for n in (1, 2, 3, 4, 5, 6, 7, 8)] == [
        0.25,
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        10.0,
        10.0,
    ]


def test_jitter_spreads_delays_downward_only() -> None:
    assert backoff_delay(POLICY, 3, draw=0.5) == 0.75
    assert backoff_delay(RestartPolicy(jitter=0.0, first_delay_s=1.0), 1, draw=0.9) == 1.0


def test_fast_deaths_back_off_then_give_up() -> None:
    deaths = Deaths()
    decisions = []
    for i in range(5):
        deaths, decision = after_death(
            POLICY, deaths, started_at=10.0 * i, died_at=10.0 * i + 1, draw=0.0
        )
        decisions.append(decision)
    assert decisions[:4] == [Restart(0.25, 1), Restart(0.5, 2), Restart(1.0, 3), Restart(2.0, 4)]
    assert decisions[4] == GiveUp(5, 120.0)


def test_a_stable_run_resets_the_backoff() -> None:
    deaths = Deaths((1.0, 2.0, 3.0, 4.0))
    deaths, decision = after_death(POLICY, deaths, started_at=5.0, died_at=65.0, draw=0.0)
    assert decision == Restart(0.25, 1)
    assert deaths == Deaths((65.0,))


def test_deaths_outside_the_window_are_forgotten() -> None:
    deaths = Deaths((0.0, 1.0, 2.0, 130.0))
    deaths, decision = after_death(POLICY, deaths, started_at=140.0, died_at=141.0, draw=0.0)
    assert decision == Restart(0.5, 2)
    assert deaths == Deaths((130.0, 141.0))


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0, "exited with status 0"),
        (1, "exited with status 1"),
        (-9, "was killed by SIGKILL"),
        (-15, "was killed by SIGTERM"),
        (-200, "was killed by signal 200"),
    ],
)
def test_exit_status_in_words(code: int, text: str) -> None:
    assert describe_exit(code) == text


# --- with real processes -------------------------------------------------------------------------

FAST = RestartPolicy(first_delay_s=0.05, max_delay_s=0.1, max_fast_deaths=3, window_s=30.0)
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
FAILER = [sys.executable, "-c", "import sys; sys.exit(3)"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False


async def wait_for(probe: Callable[[], object], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not probe():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_killed_child_is_restarted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "clubs.supervisor")
    async with Supervisor(tmp_path, FAST) as sup:
        sup.start(ChildSpec("sleeper", SLEEPER))
        first = sup.pid("sleeper")
        assert first is not None
        assert (tmp_path / "sleeper.pid").read_text() == f"{first}\n"
        os.kill(first, signal.SIGKILL)
        await wait_for(lambda: sup.pid("sleeper") not in (None, first))
        second = sup.pid("sleeper")
        assert second is not None
    assert not alive(second)
    assert not (tmp_path / "sleeper.pid").exists()
    assert f"sleeper (pid {first}) was killed by SIGKILL after" in caplog.text
    assert "restarting it in" in caplog.text


async def test_a_child_that_keeps_dying_is_given_up_and_the_others_keep_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Supervisor(tmp_path, FAST) as sup:
        sup.start(ChildSpec("sleeper", SLEEPER))
        sleeper = sup.pid("sleeper")
        sup.start(ChildSpec("failer", FAILER))
        assert await sup.wait_ready("failer") in (True, False)
        await wait_for(lambda: sup.given_up("failer"))
        assert sup.pid("sleeper") == sleeper
        assert not sup.failed.is_set()
    assert "failer" in caplog.text
    assert "exited with status 3" in caplog.text
    assert "died 3 times within 30 s; not restarting it (the others keep running)" in caplog.text


async def test_an_essential_child_that_fails_to_start_fails_the_supervisor(
    tmp_path: Path,
) -> None:
    async with Supervisor(tmp_path, FAST) as sup:
        sup.start(ChildSpec("hs", FAILER, ready=lambda: False, essential=True, must_start=True))
        assert await sup.wait_ready("hs") is False
        assert sup.failed.is_set()


async def test_ready_file_gates_readiness_and_is_removed_before_each_start(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "child.ready"
    ready.write_text("stale\n")
    script = (
        f"import pathlib, time; time.sleep(0.3); pathlib.Path({str(ready)!r}).write_text('x'); "
        "time.sleep(60)"
    )
    async with Supervisor(tmp_path, FAST) as sup:
        sup.start(ChildSpec("child", [sys.executable, "-c", script], ready_file=ready))
        assert not ready.exists() or ready.read_text() == "x"
        assert await sup.wait_ready("child")
        assert ready.read_text() == "x"


async def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    marker = tmp_path / "ignoring"
    script = (
        "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(marker)!r}).write_text('x'); time.sleep(60)"
    )
    async with Supervisor(tmp_path, FAST) as sup:
        sup.start(ChildSpec("stubborn", [sys.executable, "-c", script], stop_timeout_s=0.5))
        pid = sup.pid("stubborn")
        assert pid is not None
        await wait_for(marker.exists)
        started = time.monotonic()
    assert not alive(pid)
    assert time.monotonic() - started < 5
