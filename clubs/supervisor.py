"""A small process supervisor: `clubs up` runs the homeserver, the provisioning API and the bots
as separate child processes, so a crash (or an OOM kill) in one never takes the others down.

- Each child is a `clubs …` command (the same ones docker-compose runs) in its own process
  group, asked to die with the supervisor (`PR_SET_PDEATHSIG`): even a SIGKILLed supervisor
  leaves no orphan. Its pid is in `<run dir>/<name>.pid` while it runs.
- A dead child is restarted after a capped, jittered exponential backoff (the first restart is
  fast); a run that lasted `stable_after_s` resets the backoff. A child that dies
  `max_fast_deaths` times within `window_s` is given up on with a clear message; the others keep
  running (giving up on an `essential` child sets `failed`, and its owner stops everything).
- `stop()` stops the children in reverse start order: SIGTERM, then SIGKILL after a timeout.

The decisions (`after_death`, `backoff_delay`, `describe_exit`) are pure functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

POLL_S = 0.05
"""How often a child's process is checked for exit and readiness."""


# --- decisions (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 0.25
    """The first restart's delay: a killed bot is back within seconds."""
    factor: float = 2.0
    max_delay_s: float = 30.0
    jitter: float = 0.5
    """A delay is drawn from [d × (1 − jitter), d]: never later than the capped backoff."""
    stable_after_s: float = 60.0
    """A run at least this long resets the backoff and forgets earlier deaths."""
    max_fast_deaths: int = 5
    window_s: float = 120.0
    """Give up after `max_fast_deaths` deaths of short runs within this window."""


@dataclass(frozen=True)
class Deaths:
    """A child's recent deaths (monotonic seconds), since its last stable run."""

    times: tuple[float, ...] = ()


@dataclass(frozen=True)
class Restart:
    delay_s: float
    attempt: int
    """1 for the first restart after a stable run, then 2, 3, …"""


@dataclass(frozen=True)
class GiveUp:
    deaths: int
    window_s: float


def backoff_delay(policy: RestartPolicy, attempt: int, draw: float) -> float:
    """The delay before restart number `attempt` (1-based); `draw` is uniform in [0, 1)."""
    base = min(policy.max_delay_s, policy.first_delay_s * policy.factor ** max(0, attempt - 1))
    return base * (1.0 - policy.jitter * draw)


def after_death(
    policy: RestartPolicy, deaths: Deaths, *, started_at: float, died_at: float, draw: float
) -> tuple[Deaths, Restart | GiveUp]:
    """What to do about a child that ran from `started_at` to `died_at`, given its recent
    deaths: restart it after a delay, or give up. Returns the new record of deaths too."""
    if died_at - started_at >= policy.stable_after_s:
        recent: tuple[float, ...] = (died_at,)
    else:
        recent = (*(t for t in deaths.times if died_at - t < policy.window_s), died_at)
    if len(recent) >= policy.max_fast_deaths:
        return Deaths(recent), GiveUp(len(recent), policy.window_s)
    attempt = len(recent)
    return Deaths(recent), Restart(backoff_delay(policy, attempt, draw), attempt)


def describe_exit(returncode: int) -> str:
    """`exited with status 1`, `was killed by SIGKILL`: a `Popen.returncode` in words."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


# --- processes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Added to the supervisor's environment (secrets go here, never into argv: /proc shows
    every user a process's argv, its environment only to its owner)."""
    ready: Callable[[], bool] | None = None
    """Probed (in a thread) until true after each start; None: ready once started."""
    ready_file: Path | None = None
    """Removed before each start; ready once it exists (when `ready` is None)."""
    essential: bool = False
    """Giving up on it sets `Supervisor.failed`: the owner then stops everything."""
    must_start: bool = False
    """Dying before its first readiness ever is final (a configuration error, not a crash)."""
    stop_timeout_s: float = 10.0


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    died_at: float | None = None
    deaths: Deaths = field(default_factory=Deaths)
    ever_ready: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    gave_up: asyncio.Event = field(default_factory=asyncio.Event)
    starts: int = 0


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        """Linux: SIGTERM this child when the supervisor dies, even by SIGKILL."""
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the supervisor died before the prctl took effect
            os._exit(1)

    return preexec


class Supervisor:
    """Starts, watches, restarts and stops child processes. Use `async with`, which stops
    every child on exit; children start with `start()` and are stopped in reverse order."""

    def __init__(
        self,
        run_dir: Path,
        policy: RestartPolicy | None = None,
        *,
        draw: Callable[[], float] | None = None,
        stdout: int | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.policy = policy or RestartPolicy()
        self._draw = draw or random.Random().random  # noqa: S311 - jitter, not a secret
        self._stdout = stdout if stdout is not None else sys.stderr.fileno()
        self._children: dict[str, _Child] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self.failed = asyncio.Event()
        """Set when an essential child is given up on."""

    async def __aenter__(self) -> Supervisor:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- public ----------------------------------------------------------------------------------

    def start(self, spec: ChildSpec) -> None:
        """Start a child now and keep it running until `stop()`."""
        if spec.name in self._children:
            raise ValueError(f"a child named {spec.name!r} is already supervised")
        child = _Child(spec)
        self._children[spec.name] = child
        self._spawn(child)
        self._tasks[spec.name] = asyncio.create_task(self._watch(child), name=f"watch:{spec.name}")

    def pid(self, name: str) -> int | None:
        proc = self._children[name].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    async def wait_ready(self, name: str) -> bool:
        """Wait until the child's current run is ready: True; False once it (or an essential
        child) is given up."""
        child = self._children[name]
        while not child.ready.is_set():
            if child.gave_up.is_set() or self.failed.is_set():
                return False
            await asyncio.sleep(POLL_S)
        return True

    def given_up(self, name: str) -> bool:
        return self._children[name].gave_up.is_set()

    async def stop(self) -> None:
        """Stop every child, the last started first. Safe to call twice."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        for child in reversed(list(self._children.values())):
            await self._terminate(child)

    # --- internals -------------------------------------------------------------------------------

    def _pid_file(self, child: _Child) -> Path:
        return self.run_dir / f"{child.spec.name}.pid"

    def _spawn(self, child: _Child) -> None:
        spec = child.spec
        if spec.ready_file is not None:
            spec.ready_file.unlink(missing_ok=True)
        child.ready.clear()
        # Popen forks in this (the main) thread: PR_SET_PDEATHSIG follows the thread that forked.
        child.proc = subprocess.Popen(  # noqa: S603 - our own command, no shell
            list(spec.argv),
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            env={**os.environ, **spec.env},
            start_new_session=True,  # Ctrl-C in the terminal is the supervisor's to handle
            preexec_fn=_die_with_parent(os.getpid()) if sys.platform == "linux" else None,
        )
        child.started_at = time.monotonic()
        child.starts += 1
        self._pid_file(child).write_text(f"{child.proc.pid}\n")
        log.info("started %s (pid %d)", spec.name, child.proc.pid)

    async def _watch(self, child: _Child) -> None:
        spec = child.spec
        while True:
            proc = child.proc
            assert proc is not None
            while (returncode := proc.poll()) is None:
                if not child.ready.is_set() and await self._probe(spec):
                    self._mark_ready(child)
                await asyncio.sleep(POLL_S)
            died_at = time.monotonic()
            self._pid_file(child).unlink(missing_ok=True)
            ran = died_at - child.started_at
            if spec.must_start and not child.ever_ready:
                log.error(
                    "%s (pid %d) %s during start-up; not restarting it",
                    spec.name,
                    proc.pid,
                    describe_exit(returncode),
                )
                self._give_up(child)
                return
            child.deaths, decision = after_death(
                self.policy,
                child.deaths,
                started_at=child.started_at,
                died_at=died_at,
                draw=self._draw(),
            )
            if isinstance(decision, GiveUp):
                log.error(
                    "%s (pid %d) %s after %.1f s: it died %d times within %.0f s; not "
                    "restarting it%s",
                    spec.name,
                    proc.pid,
                    describe_exit(returncode),
                    ran,
                    decision.deaths,
                    decision.window_s,
                    "" if spec.essential else " (the others keep running)",
                )
                self._give_up(child)
                return
            log.warning(
                "%s (pid %d) %s after %.1f s; restarting it in %.2f s (restart %d)",
                spec.name,
                proc.pid,
                describe_exit(returncode),
                ran,
                decision.delay_s,
                decision.attempt,
            )
            child.died_at = died_at
            await asyncio.sleep(decision.delay_s)
            self._spawn(child)

    async def _probe(self, spec: ChildSpec) -> bool:
        if spec.ready is not None:
            return await asyncio.to_thread(spec.ready)
        if spec.ready_file is not None:
            return spec.ready_file.exists()
        return True

    def _mark_ready(self, child: _Child) -> None:
        child.ready.set()
        child.ever_ready = True
        now = time.monotonic()
        assert child.proc is not None
        if child.died_at is not None:
            log.warning(
                "%s is back (pid %d), %.2f s after it died",
                child.spec.name,
                child.proc.pid,
                now - child.died_at,
            )
        else:
            log.info(
                "%s is ready (pid %d, %.2f s after its start)",
                child.spec.name,
                child.proc.pid,
                now - child.started_at,
            )

    def _give_up(self, child: _Child) -> None:
        child.gave_up.set()
        if child.spec.essential:
            self.failed.set()

    async def _terminate(self, child: _Child) -> None:
        proc, child.proc = child.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            log.info("stopping %s (pid %d)", child.spec.name, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            if not await _exited(proc, child.spec.stop_timeout_s):
                log.warning(
                    "%s (pid %d) did not stop within %.0f s; killing it",
                    child.spec.name,
                    proc.pid,
                    child.spec.stop_timeout_s,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await _exited(proc, float("inf"))
        self._pid_file(child).unlink(missing_ok=True)


async def _exited(proc: subprocess.Popen[bytes], within_s: float) -> bool:
    """Whether the process has exited within `within_s` (Popen's exit is not awaitable: poll)."""
    deadline = time.monotonic() + within_s
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True
