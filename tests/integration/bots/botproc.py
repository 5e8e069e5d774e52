"""A bot host in a process of its own, for tests that kill it, cut its server, or read its logs.

    python -m tests.integration.bots.botproc --url URL --var DIR --account NAME:USERID \
        --network N --provisioner ID [--account ...] [--sync-timeout-ms 500] [--log FILE] \
        [--commands-per-window 5] [--verbosity 1] [--debug] [--bot echo|jobs]

Each account runs an `EchoBot` (`!echo <text>` answers with the text, escaped into HTML;
`!secret` needs power 50; `!dmme` sends the sender a DM; `!pin` pins the command); the first
account answers `!ping`/`!help` (with `--bot jobs` each runs a `JobBot` instead, `jobbot.py`).
The composition is the production one
(`clubs.bots.host.open_runtimes`, each bot on its own cross-signed device), so
`CLUBS_CRASH_AT=<point>[:<n>]` kills it exactly where the runtime names its kill points. The
vault key comes from the environment (`CLUBS_MASTER_KEY`), as in production.

When every runtime has finished its first sync, the process writes its pid to
`<var>/botproc.ready` (tests poll for it). SIGTERM stops it cleanly (devices closed, never
logged out); SIGKILL is a power cut.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from clubs.bots.args import FreeText
from clubs.bots.base import Bot
from clubs.bots.commands import command
from clubs.bots.context import CommandContext
from clubs.bots.host import BotAccount, BotFactory, HostConfig, HostServices, open_runtimes
from clubs.bots.runtime import BotRuntime, RuntimeSettings
from clubs.core.http import UserId
from clubs.core.i18n import Catalog
from clubs.core.logs import setup_logging
from clubs.core.paths import config_dir
from tests.integration.bots.jobbot import JOB_TEMPLATES, job_factory

READY_FILE = "botproc.ready"
ECHO_TEMPLATES = {
    "test/echo.en.html.j2": "Echo: <code>{{ text }}</code>\n",
    "test/echo.ru.html.j2": "Эхо: <code>{{ text }}</code>\n",
    "test/echo.help.en.txt.j2": "repeat the text\n",
    "test/echo.help.ru.txt.j2": "повторить текст\n",
    "test/dmme.help.en.txt.j2": "send me a direct message\n",
    "test/dmme.help.ru.txt.j2": "написать мне в личные сообщения\n",
    "test/pin.help.en.txt.j2": "pin this command\n",
    "test/pin.help.ru.txt.j2": "закрепить эту команду\n",
}


class EchoBot(Bot):
    """The test bot: one reply per command, carrying what the sender typed (escaped)."""

    name = "echo"

    @command("echo", help_key="test/echo.help", params=(FreeText("text", max_length=300),))
    async def echo(self, ctx: CommandContext, text: str) -> None:
        await ctx.reply("test/echo", text=text)

    @command("secret", help_key="bots/help.help", min_power=50)
    async def secret(self, ctx: CommandContext) -> None:
        await ctx.reply("bots/ping")

    @command("dmme", help_key="test/dmme.help")
    async def dmme(self, ctx: CommandContext) -> None:
        await ctx.dm(ctx.sender, "test/echo", text="dm")

    @command("pin", help_key="test/pin.help")
    async def pin(self, ctx: CommandContext) -> None:
        await ctx.bot.pin(ctx.room_id, ctx.event.event_id)


def echo_factory(name: str) -> BotFactory:
    """An EchoBot named after its account (job ids and logs then say which bot it is)."""
    cls = type(f"EchoBot_{name}", (EchoBot,), {"name": name})

    def make(_: HostServices) -> Bot:
        bot: Bot = cls()
        return bot

    return make


def echo_catalog(directory: Path) -> Catalog:
    """The project's templates plus the test bot's own, in `directory`."""
    shutil.copytree(config_dir() / "templates", directory, dirs_exist_ok=True)
    for name, text in {**ECHO_TEMPLATES, **JOB_TEMPLATES}.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return Catalog(directory)


def parse_account(value: str) -> BotAccount:
    name, sep, user_id = value.partition(":")
    if not sep or not name or not user_id.startswith("@"):
        raise argparse.ArgumentTypeError(f"expected NAME:@user:server, got {value!r}")
    return BotAccount(name, UserId(user_id))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="botproc", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="homeserver URL")
    p.add_argument("--var", type=Path, required=True, help="the var dir (vault, bots/)")
    p.add_argument("--account", type=parse_account, action="append", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--provisioner", required=True)
    p.add_argument("--sync-timeout-ms", type=int, default=30_000)
    p.add_argument("--commands-per-window", type=int, default=5)
    p.add_argument(
        "--bot",
        choices=("echo", "jobs"),
        default="echo",
        help="the bot every account runs: EchoBot (default) or JobBot (tests/.../jobbot.py)",
    )
    p.add_argument("--log", type=Path, help="log file (default: <var>/botproc.log)")
    p.add_argument(
        "--verbosity",
        type=int,
        default=1,
        help="as `clubs -v`: 0 INFO, 1 DEBUG for our code (default), 2 DEBUG for everything",
    )
    p.add_argument(
        "--debug", action="store_true", help="every logger at DEBUG, third-party included"
    )
    return p


def setup_logs(log_file: Path, verbosity: int, debug: bool) -> None:
    stream = log_file.open("a", encoding="utf-8", errors="backslashreplace", buffering=1)
    setup_logging(2 if debug else verbosity, stream=stream)
    if debug:
        set_every_logger(logging.DEBUG)


def set_every_logger(level: int) -> None:
    """Root and every logger that exists now (imports are done), third-party included."""
    logging.getLogger().setLevel(level)
    for name in ("nio", "aiohttp", "mau", "mautrix", "peewee", "aiosqlite", "asyncio"):
        logging.getLogger(name).setLevel(level)
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            logger.setLevel(level)


async def serve(
    config: HostConfig, factories: Mapping[str, BotFactory], catalog: Catalog, ready: Path
) -> None:
    async with open_runtimes(config, factories, catalog) as runtimes, asyncio.TaskGroup() as group:
        for rt in runtimes:
            group.create_task(rt.run(), name=f"bot:{rt.bot.name}")
        group.create_task(_announce_ready(runtimes, ready))


async def _announce_ready(runtimes: Sequence[BotRuntime], ready: Path) -> None:
    for rt in runtimes:
        await rt.ready.wait()
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(ready)
    logging.getLogger(__name__).info("all %d bot(s) ready", len(runtimes))


async def amain(args: argparse.Namespace) -> int:
    var: Path = args.var
    ready = var / READY_FILE
    ready.unlink(missing_ok=True)
    accounts: list[BotAccount] = args.account
    config = HostConfig(
        homeserver_url=args.url,
        var_dir=var,
        accounts=accounts,
        network=args.network,
        provisioner=args.provisioner,
        settings=RuntimeSettings(
            sync_timeout_ms=args.sync_timeout_ms, commands_per_window=args.commands_per_window
        ),
    )
    make = job_factory if args.bot == "jobs" else echo_factory
    factories = {a.name: make(a.name) for a in accounts}
    catalog = echo_catalog(var / "templates")
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serve(config, factories, catalog, ready)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.var.mkdir(parents=True, exist_ok=True)
    setup_logs(args.log or args.var / "botproc.log", args.verbosity, args.debug)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
