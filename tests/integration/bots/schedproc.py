"""The scheduling bot in a process of its own, on a clock the test moves from outside.

    python -m tests.integration.bots.schedproc --url URL --var DIR \
        --account scheduling:@bot:server [--account moderation:@mod:server ...] \
        --network N --provisioner @provisioner:server [--sync-timeout-ms 500] \
        [--clock-slice 0.05] [--log FILE]

The production composition (`clubs.bots.host.open_runtimes` with the shipped factories of
`clubs.bots.catalog`, one per account by its name, each on its own cross-signed device from the
vault in `DIR/secrets/vault`, key from `CLUBS_MASTER_KEY`), so `CLUBS_CRASH_AT=<point>[:<n>]`
kills it where the runtime names its kill points. Only the clock is the test's: `ShiftedClock`,
the wall clock plus an offset in seconds that the test writes into `DIR/clock`
(`schedhost.jump_to`). A test moves the bot days ahead to a reminder's due time without
waiting, and the process, killed and started again, is still at that time; between jumps time
flows as in production, so the outbox's and the job runner's backoffs run out by themselves.
The offset never decreases (a clock that went back would make due jobs not due). Sleepers look
at the clock again every `--clock-slice` seconds: a test's jump wakes them at once (default
0.05 s); the benchmark passes `SystemClock`'s 60 s slice, so the process wakes up as often as in
production and a jump is a stepped wall clock.

When every bot's first sync after start is done, the process writes its pid to
`DIR/botproc.ready` and logs to `DIR/botproc.log` (the files `support.BotProcess` watches; tests
and the benchmark drive this process with `schedhost.SchedProcess`, which also moves the clock).
Only what the production host imports (and botproc's logging and ready-file helpers) is imported
here, so the process's RSS is the bots' own. SIGTERM stops it cleanly (devices closed, never
logged out); SIGKILL is a power cut.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from clubs.bots.catalog import default_factories
from clubs.bots.host import HostConfig, open_runtimes
from clubs.bots.httpd import serving
from clubs.bots.runtime import BotRuntime, RuntimeSettings
from tests.integration.bots.botproc import READY_FILE, parse_account, setup_logs

CLOCK_FILE = "clock"
POLL_S = 0.05
"""How often a sleeper looks at the clock file again by default: a jump wakes it within this."""


class ShiftedClock:
    """`time.time()` plus the offset in a file, re-read when the file changes (a `stat` per
    look). `monotonic()` moves with the offset, as `ManualClock`'s does with its time."""

    def __init__(self, file: Path, slice_s: float = POLL_S) -> None:
        self.file = file
        self.slice_s = slice_s
        self._stamp: int | None = None
        self._offset = 0.0

    def offset(self) -> float:
        try:
            stamp = self.file.stat().st_mtime_ns
        except FileNotFoundError:
            return self._offset
        if stamp != self._stamp:
            with contextlib.suppress(ValueError, OSError):
                self._offset = max(self._offset, float(self.file.read_text().strip() or 0))
                self._stamp = stamp
        return self._offset

    def now(self) -> float:
        return time.time() + self.offset()

    def monotonic(self) -> float:
        return time.monotonic() + self.offset()

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.now() + max(0.0, seconds))

    async def sleep_until(self, when: float) -> None:
        while True:
            remaining = when - self.now()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, self.slice_s))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="schedproc", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="homeserver URL")
    p.add_argument("--var", type=Path, required=True, help="the var dir (vault, bots/, clock)")
    p.add_argument(
        "--account",
        type=parse_account,
        action="append",
        required=True,
        help="NAME:@user:server, NAME a shipped bot (scheduling, moderation, checkins)",
    )
    p.add_argument("--network", required=True)
    p.add_argument("--provisioner", required=True)
    p.add_argument("--sync-timeout-ms", type=int, default=RuntimeSettings().sync_timeout_ms)
    p.add_argument("--clock-slice", type=float, default=POLL_S, help="see ShiftedClock")
    p.add_argument("--log", type=Path, help="log file (default: <var>/botproc.log)")
    p.add_argument("--verbosity", type=int, default=1, help="as `clubs -v` (default 1)")
    p.add_argument("--http-port", type=int, help="serve /health and /metrics on 127.0.0.1")
    return p


async def _announce_ready(runtimes: Sequence[BotRuntime], ready: Path) -> None:
    for rt in runtimes:
        await rt.ready.wait()
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(ready)


async def amain(args: argparse.Namespace) -> int:
    var: Path = args.var
    ready = var / READY_FILE
    ready.unlink(missing_ok=True)
    config = HostConfig(
        homeserver_url=args.url,
        var_dir=var,
        accounts=args.account,
        network=args.network,
        provisioner=args.provisioner,
        settings=RuntimeSettings(sync_timeout_ms=args.sync_timeout_ms),
    )
    shipped = default_factories()
    factories = {a.name: shipped[a.name] for a in args.account}
    clock = ShiftedClock(var / CLOCK_FILE, args.clock_slice)
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        async with (
            open_runtimes(config, factories, clock=clock) as runtimes,
            contextlib.AsyncExitStack() as http,
            asyncio.TaskGroup() as group,
        ):
            if args.http_port is not None:
                await http.enter_async_context(serving(runtimes, "127.0.0.1", args.http_port))
            for rt in runtimes:
                group.create_task(rt.run(), name=f"bot:{rt.bot.name}")
            group.create_task(_announce_ready(runtimes, ready))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.var.mkdir(parents=True, exist_ok=True)
    setup_logs(args.log or args.var / "botproc.log", args.verbosity, debug=False)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
