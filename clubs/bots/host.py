"""The composition root of the bots: every enabled bot on its own account, in one process.

`run_bots(config)` opens each bot's cross-signed E2EE device, wires its runtime and runs each
under a supervisor: a bot whose start or loop raises is logged and restarted with backoff while
the others keep answering. Ctrl-C cancels them all and every device is closed (never logged
out). Each bot can also run alone (`only=("moderation",)`), in its own process, for isolation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clubs.bots.base import Bot
from clubs.bots.commands import CommandSpec
from clubs.bots.httpd import serving
from clubs.bots.jobs import JobStore
from clubs.bots.outbox import Outbox
from clubs.bots.pollstore import PollStore
from clubs.bots.runtime import BotRuntime, RoomKey, RuntimeSettings, required_template_keys
from clubs.bots.store import RuntimeStore
from clubs.bots.supervise import log_unhandled, supervise
from clubs.core.adminview import AdminView
from clubs.core.clock import Clock, SystemClock
from clubs.core.db import Database
from clubs.core.e2ee import E2eeClient
from clubs.core.errors import ClubsError
from clubs.core.http import MatrixHttp, UserId
from clubs.core.i18n import Catalog
from clubs.core.sealed import Sealer
from clubs.core.secrets import Vault

log = logging.getLogger(__name__)

BotFactory = Callable[["HostServices"], Bot]
READY_WITHIN_S = 120.0
"""`run_bots` announces readiness after this long even if a bot is still starting."""


@dataclass(frozen=True)
class BotAccount:
    name: str
    user_id: UserId


@dataclass(frozen=True)
class HostConfig:
    homeserver_url: str
    var_dir: Path
    accounts: Sequence[BotAccount]
    network: str | None = None
    provisioner: str | None = None
    admin_token: str | None = field(default=None, repr=False)
    """The provisioner's token, for bots that use the Synapse admin API (reports)."""
    primary: str | None = None
    """The bot that answers `!ping`/`!help` in group rooms (default: the first)."""
    settings: RuntimeSettings = field(default_factory=RuntimeSettings)
    descriptions: Mapping[RoomKey, str] = field(default_factory=dict)
    """Private room descriptions the primary bot posts encrypted and pins."""
    http_port: int | None = None
    """The bots' HTTP endpoint (`/health`, calendar feeds) on this port; None: no endpoint."""
    http_host: str = "127.0.0.1"
    public_url: str | None = None
    """How members reach that endpoint (behind a reverse proxy: its https address); the links
    bots hand out start with it."""
    shard: str | None = None
    """The shard of the network file (`shards:`) whose accounts these are: its process keeps
    its database and its accounts' devices in `var/bots/shards/<shard>/` (None: `var/bots/`)."""

    @property
    def data_dir(self) -> Path:
        bots = self.var_dir / "bots"
        return bots if self.shard is None else bots / "shards" / self.shard


@dataclass(frozen=True)
class HostServices:
    """What bot constructors get (no globals): the shared database, the clock, a sealer for
    what must be encrypted at rest, the network, the other service accounts (never acted
    against) and, where the deployment allows it, the narrow admin view that only the
    moderation bot's factory passes on (reports, one user's redactions and memberships; never
    the token or a client that can call any admin endpoint)."""

    db: Database
    data_dir: Path
    network: str | None = None
    service_accounts: frozenset[str] = frozenset()
    admin_view: AdminView | None = None
    clock: Clock = field(default_factory=SystemClock)
    sealer: Sealer | None = None
    vault: Vault | None = None
    """The vault, for bots whose factory takes a key of their own from it."""
    public_url: str | None = None
    """The public address of the bots' HTTP endpoint, if it runs."""


@contextlib.asynccontextmanager
async def open_runtimes(
    config: HostConfig,
    factories: Mapping[str, BotFactory],
    catalog: Catalog | None = None,
    *,
    clock: Clock | None = None,
) -> AsyncIterator[list[BotRuntime]]:
    """Open every configured bot's device and runtime; close them all on exit."""
    catalog = catalog or Catalog()
    clock = clock or SystemClock()
    vault = Vault(config.var_dir / "secrets" / "vault")
    sealer = Sealer.from_vault(vault)
    db = await Database.open(config.data_dir / "bots.db")
    admin = MatrixHttp(config.homeserver_url, config.admin_token) if config.admin_token else None
    services = HostServices(
        db,
        config.data_dir,
        network=config.network,
        service_accounts=frozenset(
            [a.user_id for a in config.accounts]
            + ([config.provisioner] if config.provisioner else [])
        ),
        admin_view=AdminView(admin) if admin is not None else None,
        clock=clock,
        sealer=sealer,
        vault=vault,
        public_url=config.public_url,
    )
    runtimes: list[BotRuntime] = []
    clients: list[E2eeClient] = []
    https: list[MatrixHttp] = []
    try:
        bots: list[tuple[BotAccount, Bot]] = []
        for account in config.accounts:
            factory = factories.get(account.name)
            if factory is None:
                raise ClubsError(f"no bot named {account.name!r} (known: {', '.join(factories)})")
            bots.append((account, factory(services)))
        catalog.check(required_template_keys(bot for _, bot in bots))
        primary = config.primary or (config.accounts[0].name if config.accounts else None)
        host_bots = tuple(a.user_id for a in config.accounts)
        all_specs: list[CommandSpec] = []
        # The devices open concurrently (each is a few requests and a store to load).
        opened = await asyncio.gather(
            *(
                E2eeClient.open(
                    config.homeserver_url,
                    vault,
                    account.user_id,
                    config.data_dir / "devices" / account.name,
                )
                for account, _ in bots
            ),
            return_exceptions=True,
        )
        clients.extend(c for c in opened if isinstance(c, E2eeClient))
        for failure in opened:
            if isinstance(failure, BaseException):
                raise failure
        for (account, bot), client in zip(bots, clients, strict=True):
            http = MatrixHttp(config.homeserver_url, client.session.access_token)
            https.append(http)
            store = await RuntimeStore.open(db, account.name)
            await PollStore.migrate(db)
            settings = RuntimeSettings(
                **{
                    **config.settings.__dict__,
                    "network": config.network,
                    "provisioner": config.provisioner,
                    "answers_builtins": account.name == primary,
                    "host_bots": host_bots,
                }
            )
            runtime = BotRuntime(
                bot,
                client,
                http,
                store,
                catalog,
                settings,
                outbox=await Outbox.open(db, account.name, sealer, client, clock),
                jobs=await JobStore.open(db, account.name, sealer),
                sealer=sealer,
                clock=clock,
                all_commands=lambda: all_specs,
                descriptions=config.descriptions if account.name == primary else None,
            )
            all_specs.extend(runtime.commands)
            runtimes.append(runtime)
        for runtime in runtimes:
            runtime.warm_up_after = [r.ready for r in runtimes if r is not runtime]
        yield runtimes
    finally:
        if admin is not None:
            await admin.close()
        for http in https:
            await http.close()
        for client in clients:
            await client.close()
        await db.close()


async def run_bots(
    config: HostConfig,
    factories: Mapping[str, BotFactory],
    *,
    on_ready: Callable[[], None] | None = None,
    ready_within_s: float = READY_WITHIN_S,
) -> None:
    """Run the bots until cancelled. `on_ready` is called once every bot has finished its
    first sync (it answers from then on), or after `ready_within_s` in any case."""
    asyncio.get_running_loop().set_exception_handler(log_unhandled)
    async with contextlib.AsyncExitStack() as stack:
        runtimes = await stack.enter_async_context(open_runtimes(config, factories))
        if config.http_port is not None:
            await stack.enter_async_context(serving(runtimes, config.http_host, config.http_port))
        await _run(runtimes, on_ready, ready_within_s)


async def _run(
    runtimes: list[BotRuntime], on_ready: Callable[[], None] | None, ready_within_s: float
) -> None:
    async with asyncio.TaskGroup() as group:
        for runtime in runtimes:
            group.create_task(supervised(runtime), name=f"bot:{runtime.bot.name}")
        log.info("running %d bot(s): %s", len(runtimes), ", ".join(r.bot.name for r in runtimes))
        if on_ready is not None:
            group.create_task(_when_ready(runtimes, on_ready, ready_within_s), name="ready")


async def supervised(runtime: BotRuntime) -> None:
    """One bot, restarted with backoff whenever its start or its loop raises: its failure is
    logged and never cancels the other bots."""
    await supervise(f"bot {runtime.bot.name}", runtime.run, restart_on_return=True)


async def _when_ready(
    runtimes: list[BotRuntime], on_ready: Callable[[], None], within_s: float
) -> None:
    try:
        async with asyncio.timeout(within_s):
            await asyncio.gather(*(r.ready.wait() for r in runtimes))
    except TimeoutError:
        waiting = [r.bot.name for r in runtimes if not r.ready.is_set()]
        log.warning("bots still starting after %.0fs: %s", within_s, ", ".join(waiting))
    on_ready()
