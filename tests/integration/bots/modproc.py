"""The moderation bot in a process of its own, wired exactly as `clubs bots run` wires it.

    python -m tests.integration.bots.modproc --url URL --var DIR --account @bot:server \
        --network N --provisioner @provisioner:server [--sync-timeout-ms 30000]

`clubs.bots.host.open_runtimes` with the shipped factory (`clubs.bots.catalog`, default
thresholds), one cross-signed device from the vault in `DIR/secrets/vault` (key from
`CLUBS_MASTER_KEY`), the Synapse admin token from `CLUBS_ADMIN_TOKEN` (as in production), INFO
logs to `DIR/modproc.log`. Only what the production host imports is imported here, so the
process's start-up time and RSS are the bot's own (`bench/moderation.py` measures them).

When the bot's first sync after start is done, `DIR/modproc.ready` gets a JSON object: pid, the
policy room, wall-clock times of interpreter start (`started`, before any import), imports done
(`imported`) and ready (`ready`), and the peak RSS right after the imports (`rss_imports_kb`).
SIGTERM stops it cleanly (device closed, never logged out).
"""

from __future__ import annotations

import time

STARTED = time.time()

import argparse  # noqa: E402 - the clock starts before the imports it measures
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from clubs.bots.catalog import default_factories  # noqa: E402
from clubs.bots.host import BotAccount, HostConfig, open_runtimes  # noqa: E402
from clubs.bots.moderation.bot import ModerationBot  # noqa: E402
from clubs.bots.runtime import BotRuntime, RuntimeSettings  # noqa: E402
from clubs.core.http import UserId  # noqa: E402
from clubs.core.logs import setup_logging  # noqa: E402

IMPORTED = time.time()
RSS_IMPORTS_KB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
READY_FILE = "modproc.ready"
LOG_FILE = "modproc.log"
ADMIN_TOKEN_ENV = "CLUBS_ADMIN_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modproc", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="homeserver URL")
    p.add_argument("--var", type=Path, required=True, help="the var dir (vault, bots/)")
    p.add_argument("--account", required=True, help="the moderation bot's user id")
    p.add_argument("--network", required=True)
    p.add_argument("--provisioner", required=True)
    p.add_argument("--sync-timeout-ms", type=int, default=RuntimeSettings().sync_timeout_ms)
    return p


async def _announce_ready(runtime: BotRuntime, ready: Path) -> None:
    await runtime.ready.wait()
    bot = runtime.bot
    facts = {
        "pid": os.getpid(),
        "policy_room": bot.policy_room if isinstance(bot, ModerationBot) else None,
        "started": STARTED,
        "imported": IMPORTED,
        "ready": time.time(),
        "rss_imports_kb": RSS_IMPORTS_KB,
    }
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps(facts))
    tmp.replace(ready)


async def amain(args: argparse.Namespace) -> int:
    var: Path = args.var
    ready = var / READY_FILE
    ready.unlink(missing_ok=True)
    config = HostConfig(
        homeserver_url=args.url,
        var_dir=var,
        accounts=[BotAccount("moderation", UserId(args.account))],
        network=args.network,
        provisioner=args.provisioner,
        admin_token=os.environ.get(ADMIN_TOKEN_ENV),
        settings=RuntimeSettings(sync_timeout_ms=args.sync_timeout_ms),
    )
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        async with (
            open_runtimes(config, default_factories()) as runtimes,
            asyncio.TaskGroup() as group,
        ):
            for rt in runtimes:
                group.create_task(rt.run(), name=f"bot:{rt.bot.name}")
            group.create_task(_announce_ready(runtimes[0], ready))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.var.mkdir(parents=True, exist_ok=True)
    stream = (args.var / LOG_FILE).open("a", encoding="utf-8", buffering=1)
    setup_logging(0, stream=stream)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
