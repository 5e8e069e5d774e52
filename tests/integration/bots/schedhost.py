"""The scheduling bot's own process (`schedproc.py`) as tests and the benchmark drive it: start,
crash at a kill point, kill, and move its clock."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.integration.bots.schedproc import CLOCK_FILE, POLL_S, ShiftedClock
from tests.integration.bots.support import BotProcess


def jump_to(var: Path, when: float) -> None:
    """Move the clock of the bot process in `var` so that its `now()` is `when` from now on;
    a clock already past `when` stays (it never goes back)."""
    file = var / CLOCK_FILE
    offset = max(ShiftedClock(file).offset(), when - time.time())
    tmp = file.with_suffix(".tmp")
    tmp.write_text(f"{offset:.6f}\n")
    tmp.replace(file)


@dataclass
class SchedProcess(BotProcess):
    """`BotProcess` running `schedproc` (the shipped bots, by account name) instead of
    `botproc`; `jump_to` moves its clock, `now` reads it."""

    clock_slice: float = POLL_S
    """How often the process's sleepers look at the clock (the benchmark: `SLICE_S`)."""
    http_port: int | None = None
    """Serve the bots' /health and /metrics on this loopback port (benchmarks read them)."""

    def argv(self) -> list[str]:
        argv = [
            sys.executable,
            *self.python_args,
            "-m",
            "tests.integration.bots.schedproc",
            "--url",
            self.url,
            "--var",
            str(self.var_dir),
            "--network",
            self.network,
            "--provisioner",
            self.provisioner,
            "--sync-timeout-ms",
            str(self.sync_timeout_ms),
            "--verbosity",
            str(self.verbosity),
            "--clock-slice",
            str(self.clock_slice),
        ]
        for account in self.accounts:
            argv += ["--account", f"{account.name}:{account.user_id}"]
        if self.http_port is not None:
            argv += ["--http-port", str(self.http_port)]
        return argv

    def jump_to(self, when: float) -> None:
        jump_to(self.var_dir, when)

    def now(self) -> float:
        return ShiftedClock(self.var_dir / CLOCK_FILE).now()
