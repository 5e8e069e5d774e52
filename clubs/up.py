"""`clubs up`: the whole club network on an embedded homeserver, for a newcomer's machine.

The homeserver, the provisioning API and the bots run as separate child processes of this one
(`clubs.supervisor`), with the same `clubs …` commands docker-compose runs, so a crashed or
OOM-killed bot process is restarted and never takes the homeserver down:

1. `clubs homeserver run`: Synapse from the hardened template, all state under the var directory.
2. Here, once it answers (HTTP only): the provisioner (server admin) and the bot accounts, each
   exempt from rate limits; `config/network.example.yaml` applied (encrypted spaces and rooms,
   demo members' accounts); `var/demo.json` for scripts.
3. `clubs serve` on loopback (its bearer token passed in the environment, never printed) and
   `clubs bots run`, each bot on its own cross-signed device (and, when the network file
   declares `shards:`, one `clubs bots run --shard NAME` more per shard, on its accounts); once
   every bot has synced (it answers), the homeserver URL and the demo logins on screen.
4. `clubs bridge run`, only when the deployment's bridge.yaml says `enabled: true`, the network
   file bridges a room (`bridge:`) and the vault holds the Telegram bot token (`bridge_spec`);
   the homeserver loads the bridge's registration (`clubs homeserver run` does that itself).

Running it again reuses the same keys, accounts and rooms (the apply makes no writes); Ctrl-C
stops the bots, the API, then Synapse. Children's pids are in `var/run/<name>.pid`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clubs.bots.catalog import default_factories
from clubs.bots.host import BotAccount
from clubs.core.admin import Session, ensure_ratelimit_override, ensure_service_account
from clubs.core.errors import ClubsError
from clubs.core.homeserver import STOP_TIMEOUT_S, Settings, check_port_free, find_free_port
from clubs.core.http import MatrixHttp, UserId
from clubs.core.paths import config_dir
from clubs.core.secrets import Vault, write_private
from clubs.provisioning.apply import apply_network
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.discover import discover
from clubs.provisioning.onboard import password_key
from clubs.provisioning.service import TOKEN_ENV, VAULT_KEY
from clubs.provisioning.source import check, compile_desired
from clubs.provisioning.tokens import TokenStore
from clubs.supervisor import ChildSpec, Supervisor

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_SERVICE_PORT = 8090


def example_network() -> Path:
    return config_dir() / "network.example.yaml"


def clubs_command(verbosity: int = 0) -> list[str]:
    """How a child runs `clubs`: this interpreter, so the same virtualenv."""
    return [sys.executable, "-m", "clubs.cli", *(["-" + "v" * verbosity] if verbosity else [])]


def child_specs(
    var_dir: Path,
    port: int,
    server_name: str,
    *,
    service_port: int,
    service_token: str,
    network_file: Path,
    with_bots: bool,
    bots_port: int | None = None,
    verbosity: int = 0,
    shards: Mapping[str, int | None] | None = None,
) -> list[ChildSpec]:
    """The children, in start order: the same commands as docker-compose.yml's services.

    With `shards` (shard name → its HTTP port, from the network file's `shards:`), one more
    bots child per shard (`bots-<shard>`, `clubs bots run --shard <shard>`) beside the one of
    the network's own accounts: a process per shard, each on its accounts."""
    clubs = clubs_command(verbosity)
    url = f"http://{LOOPBACK}:{port}"
    run_dir = var_dir / "run"
    specs = [
        ChildSpec(
            "homeserver",
            [
                *clubs,
                "homeserver",
                "run",
                "--var-dir",
                str(var_dir),
                "--port",
                str(port),
                "--server-name",
                server_name,
            ],
            # The bridge's registration (when enabled) names users of this server; the network
            # file's `servers:` are its federation peers (none: federation stays off).
            env={"CLUBS_SERVER_NAME": server_name, "CLUBS_NETWORK_FILE": str(network_file)},
            ready=lambda: _answers(url + "/_matrix/client/versions"),
            essential=True,
            must_start=True,
            stop_timeout_s=STOP_TIMEOUT_S + 5,  # it gives Synapse STOP_TIMEOUT_S itself
        ),
        ChildSpec(
            "serve",
            [
                *clubs,
                "serve",
                "--host",
                LOOPBACK,
                "--port",
                str(service_port),
                "--homeserver",
                url,
                "--var-dir",
                str(var_dir),
            ],
            env={TOKEN_ENV: service_token, "CLUBS_SERVER_NAME": server_name},
            ready=lambda: _answers(f"http://{LOOPBACK}:{service_port}/openapi.json"),
        ),
    ]
    if with_bots:
        processes = [(None, bots_port), *(shards or {}).items()]
        for shard, http_port in processes:
            name = "bots" if shard is None else f"bots-{shard}"
            specs.append(
                ChildSpec(
                    name,
                    [
                        *clubs,
                        "bots",
                        "run",
                        "--network",
                        str(network_file),
                        "--var-dir",
                        str(var_dir),
                        "--homeserver",
                        url,
                        "--server-name",
                        server_name,
                        *(["--shard", shard] if shard is not None else []),
                        "--ready-file",
                        str(run_dir / f"{name}.ready"),
                        *(["--http-port", str(http_port)] if http_port is not None else []),
                    ],
                    ready_file=run_dir / f"{name}.ready",
                )
            )
    return specs


def bridge_spec(
    var_dir: Path,
    url: str,
    server_name: str,
    network_file: Path,
    *,
    bridged_rooms: int,
    vault: Vault,
    verbosity: int = 0,
) -> ChildSpec | None:
    """The Telegram bridge's child, or None: off unless the deployment's bridge.yaml enables it
    (off by default), the network file bridges at least one room and the Telegram bot token is
    in the vault (`clubs bridge token`); a missing one is a warning, never a failed start."""
    from clubs.bridge.config import load_config
    from clubs.bridge.registration import TELEGRAM_TOKEN

    config = load_config()
    if not config.enabled:
        return None
    if not bridged_rooms:
        log.warning("the Telegram bridge is enabled but the network file bridges no room")
        return None
    if not vault.get(TELEGRAM_TOKEN):
        log.warning(
            "the Telegram bridge is enabled but the vault lacks its bot token "
            "(run `clubs bridge token`)"
        )
        return None
    health = f"http://{config.host}:{config.port}/health"
    return ChildSpec(
        "bridge",
        [
            *clubs_command(verbosity),
            "bridge",
            "run",
            "--network",
            str(network_file),
            "--var-dir",
            str(var_dir),
        ],
        env={"CLUBS_HOMESERVER_URL": url, "CLUBS_SERVER_NAME": server_name},
        ready=lambda: _answers(health),
    )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - our loopback URL
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def service_port(requested: int | None, homeserver_port: int) -> int:
    """The API's port: as asked (0 = any free one); by default $CLUBS_SERVICE_PORT or 8090, or
    any free one when the homeserver's port is (`--port 0`) or 8090 is taken."""
    if requested is None:
        env = os.environ.get("CLUBS_SERVICE_PORT")
        if env:
            requested = int(env)
        elif homeserver_port != 0:
            try:
                check_port_free(LOOPBACK, DEFAULT_SERVICE_PORT)
                return DEFAULT_SERVICE_PORT
            except ClubsError:
                log.warning(
                    "port %d is taken: the provisioning API takes a free one", DEFAULT_SERVICE_PORT
                )
        requested = 0
    return requested or find_free_port(LOOPBACK)


def _claim(run_dir: Path, var_dir: Path) -> Path:
    """Refuse a second `clubs up` on the same var directory; record ours."""
    pid_file = run_dir / "supervisor.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if pid != os.getpid() and b"clubs" in cmdline:
            raise ClubsError(
                f"`clubs up` is already running on {var_dir} (pid {pid}); stop it first"
            )
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pid_file.write_text(f"{os.getpid()}\n")
    return pid_file


def _service_token(vault: Vault) -> str:
    """The API's bearer token: $CLUBS_SERVICE_TOKEN, else the vault's (created once, silently)."""
    token = os.environ.get(TOKEN_ENV) or vault.get(VAULT_KEY)
    if token is None:
        token = secrets.token_urlsafe(32)
        vault.set(VAULT_KEY, token)
    return token


async def run_up(
    var_dir: Path,
    port: int,
    server_name: str,
    *,
    network_file: Path | None = None,
    api_port: int | None = None,
    verbosity: int = 0,
) -> int:
    network_file = (network_file or example_network()).resolve()
    checked = check(network_file)  # a broken file stops us before anything starts
    desired = compile_desired(checked.network, server_name)
    run_dir = var_dir / "run"
    pid_file = _claim(run_dir, var_dir)
    api = service_port(api_port, port)
    port = port or find_free_port(LOOPBACK)
    bots_port = find_free_port(LOOPBACK)
    settings = Settings(data_dir=var_dir / "synapse", port=port, server_name=server_name)
    url = f"http://{LOOPBACK}:{port}"
    running = [n for n in sorted(desired.bots) if n in default_factories()]
    shards = {name: find_free_port(LOOPBACK) for name in desired.shard_bots} if running else {}
    try:
        async with Supervisor(run_dir) as supervisor:
            vault = Vault(var_dir / "secrets" / "vault")
            specs = child_specs(
                var_dir,
                port,
                server_name,
                service_port=api,
                service_token=_service_token(vault),
                network_file=network_file,
                with_bots=bool(running),
                bots_port=bots_port,
                verbosity=verbosity,
                shards=shards,
            )
            supervisor.start(specs[0])
            if not await supervisor.wait_ready("homeserver"):
                raise ClubsError(
                    f"the homeserver did not start (its error is above); see "
                    f"{settings.console_file} and {settings.log_file}"
                )
            demo = await _bootstrap(url, settings, vault, desired, var_dir)
            text = banner(
                url,
                server_name,
                demo,
                api=f"http://{LOOPBACK}:{api}",
                bots=f"http://{LOOPBACK}:{bots_port}" if running else None,
            )
            bridged = sum(1 for _, c in checked.network.clubs() for r in c.rooms if r.bridge)
            bridge = bridge_spec(
                var_dir,
                url,
                server_name,
                network_file,
                bridged_rooms=bridged,
                vault=vault,
                verbosity=verbosity,
            )
            for spec in [*specs[1:], *([bridge] if bridge is not None else [])]:
                supervisor.start(spec)
            # The banner says "ready" once the bots answer, not while they are still starting.
            for name in ["bots", *(f"bots-{shard}" for shard in shards)] if running else []:
                if not await supervisor.wait_ready(name):
                    log.error("the bots (%s) are not running: see the errors above", name)
            if not supervisor.failed.is_set():
                print(text, flush=True)
            await supervisor.failed.wait()
            raise ClubsError(
                f"the homeserver keeps dying; everything is stopped (see {settings.log_file})"
            )
    finally:
        pid_file.unlink(missing_ok=True)


async def _bootstrap(
    url: str, settings: Settings, vault: Vault, desired: DesiredNetwork, var_dir: Path
) -> dict[str, Any]:
    """Service accounts, rate-limit overrides, the example network, var/demo.json."""
    secret = settings.registration_secret_file.read_text().strip()
    async with MatrixHttp(url) as anon:
        provisioner, created = await ensure_service_account(
            anon,
            vault,
            secret,
            settings.provisioner_localpart,
            server_name=settings.server_name,
            admin=True,
        )
        log.info("provisioner %s %s", provisioner.user_id, "created" if created else "reused")
        admin = MatrixHttp(url, provisioner.access_token, session=anon.session)
        await ensure_ratelimit_override(admin, provisioner.user_id)
        bots = await ensure_bot_accounts(anon, admin, vault, secret, settings.server_name, desired)
        demo = await _apply(admin, desired, provisioner, vault, var_dir)
    demo["homeserver"] = url
    demo["bots"] = {b.name: b.user_id for b in bots if b.user_id in desired.bots.values()}
    if desired.shard_bots:
        demo["shard_bots"] = {shard: dict(b) for shard, b in desired.shard_bots.items()}
    write_private(var_dir / "demo.json", json.dumps(demo, ensure_ascii=False, indent=2).encode())
    return demo


async def ensure_bot_accounts(
    anon: MatrixHttp,
    admin: MatrixHttp,
    vault: Vault,
    secret: str,
    server_name: str,
    desired: DesiredNetwork,
) -> list[BotAccount]:
    """The network's bot accounts, its shards' too (`shards:`), created on first use
    (passwords and tokens in the vault), without the homeserver's rate limits (`admin`: the
    provisioner's session)."""
    accounts = []
    every = [*sorted(desired.bots.items())]
    for _, bots in sorted(desired.shard_bots.items()):
        every += sorted(bots.items())
    for name, mxid in every:
        localpart = mxid[1:].split(":", 1)[0]
        session, _ = await ensure_service_account(
            anon,
            vault,
            secret,
            localpart,
            server_name=server_name,
            displayname=name,
        )
        await ensure_ratelimit_override(admin, session.user_id)
        accounts.append(BotAccount(name, UserId(session.user_id)))
    return accounts


async def _apply(
    admin: MatrixHttp, desired: DesiredNetwork, provisioner: Session, vault: Vault, var_dir: Path
) -> dict[str, Any]:
    tokens = TokenStore(var_dir / "provisioning" / "tokens.sqlite")
    try:
        result = await apply_network(
            admin, desired, provisioner.user_id, vault=vault, tokens=tokens
        )
    finally:
        tokens.close()
    log.info("%s", result.summary())
    actual = await discover(admin, desired, provisioner.user_id)
    rooms = {
        ref.removeprefix("club:"): room_id
        for ref, room_id in actual.room_ids().items()
        if ref.startswith("club:") and "/" in ref
    }
    members = []
    for person in desired.people:
        if person.mxid is None:
            continue
        password = vault.get(password_key(person.mxid))
        if password is None:
            continue  # not a precreated account: no password of ours
        members.append({"user_id": person.mxid, "password": password, "clubs": list(person.clubs)})
    return {"members": members, "rooms": rooms}


def banner(
    url: str,
    server_name: str,
    demo: Mapping[str, Any],
    api: str | None = None,
    bots: str | None = None,
) -> str:
    logins = "\n".join(
        f"  {m['user_id']:<32} {m['password']}   ({', '.join(m['clubs'])})"
        for m in demo.get("members", [])[:8]
    )
    more = len(demo.get("members", [])) - 8
    more_line = f"\n  … and {more} more in var/demo.json" if more > 0 else ""
    api_line = f"\n  API:         {api} (its bearer token is kept in the vault)" if api else ""
    if bots:
        api_line += f"\n  Bots:        {bots}/health (members' calendar links start here)"
    return f"""
Matrix Clubs is running.

  Homeserver:  {url}
  Server name: {server_name}{api_line}

Log in with Element Desktop (or any Matrix client): choose "Sign in", edit the homeserver and
enter {url}, then use a demo member's user name and password:

{logins}{more_line}

Every room is end-to-end encrypted. Scripts find the same data in var/demo.json.
Press Ctrl-C to stop everything; `make up` again resumes with the same accounts and keys.
"""
