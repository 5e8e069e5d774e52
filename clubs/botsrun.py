"""`clubs bots run`: host the enabled bots in one process (or some of them, for isolation).

A composition root like `clubs.up`: it reads the network file (provisioning) to learn the bot
accounts and hands the bots only what they need, so `clubs.bots` never imports provisioning:
the accounts, the private room descriptions and the network's identity policy
(`defaults.identity_policy`, for every bot's runtime).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from clubs.bots.catalog import default_factories
from clubs.bots.host import BotAccount, HostConfig, run_bots
from clubs.bots.runtime import RuntimeSettings
from clubs.core.errors import ClubsError
from clubs.core.homeserver import default_homeserver_url
from clubs.core.http import UserId
from clubs.core.secrets import Vault


def add_parsers(sub: Any) -> None:
    bots = sub.add_parser("bots", help="the moderation, facilitation, scheduling, check-in bots")
    bots_sub = bots.add_subparsers(dest="bots_command", required=True, metavar="ACTION")
    run = bots_sub.add_parser("run", help="run the bots in the foreground (Ctrl-C stops them)")
    run.add_argument(
        "--network",
        type=Path,
        default=Path(os.environ.get("CLUBS_NETWORK", "config/network.example.yaml")),
        help="the network file naming the bot accounts (default: the example network)",
    )
    run.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run only this bot (repeatable)"
    )
    run.add_argument(
        "--shard",
        default=None,
        metavar="NAME",
        help="run the bots of this shard of the network file (shards:), on its accounts, in "
        "its clubs' rooms only (default: the network's own accounts, in the rooms of no shard)",
    )
    run.add_argument(
        "--clubs",
        default=None,
        metavar="KEYS",
        help="serve only the rooms of these countries and clubs (keys, comma-separated); with "
        "shards declared in the network file, the keys of one of them (as --shard)",
    )
    run.add_argument("--var-dir", type=Path, default=Path(os.environ.get("CLUBS_VAR_DIR", "var")))
    run.add_argument(
        "--homeserver",
        default=default_homeserver_url(),
    )
    run.add_argument("--server-name", default=os.environ.get("CLUBS_SERVER_NAME", "clubs.local"))
    port = os.environ.get("CLUBS_BOTS_HTTP_PORT")
    run.add_argument(
        "--http-port",
        type=int,
        default=int(port) if port else None,
        metavar="PORT",
        help="serve /health and the members' calendar feeds on this port (default: none)",
    )
    run.add_argument("--http-host", default="127.0.0.1", metavar="HOST")
    run.add_argument(
        "--public-url",
        default=os.environ.get("CLUBS_BOTS_PUBLIC_URL"),
        metavar="URL",
        help="how members reach that endpoint, e.g. https://clubs.example/bots "
        "(default: http://HOST:PORT)",
    )
    boot = bots_sub.add_parser(
        "bootstrap",
        help="create the network's bot accounts (once; then reused) and lift their rate limits",
    )
    boot.add_argument(
        "--network",
        type=Path,
        default=Path(os.environ.get("CLUBS_NETWORK", "config/network.example.yaml")),
    )
    boot.add_argument("--var-dir", type=Path, default=Path(os.environ.get("CLUBS_VAR_DIR", "var")))
    boot.add_argument("--homeserver", default=default_homeserver_url())
    boot.add_argument("--server-name", default=os.environ.get("CLUBS_SERVER_NAME", "clubs.local"))
    boot.add_argument(
        "--wait",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the homeserver to answer (a container starting beside it)",
    )
    run.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="write this file once every bot has synced (it answers); removed on exit",
    )


def config_from_args(args: argparse.Namespace) -> HostConfig:
    from clubs.provisioning.source import check, compile_desired, private_descriptions

    checked = check(args.network).network
    desired = compile_desired(checked, args.server_name)
    shard = shard_keys(args.network, args.clubs, checked) if args.clubs is not None else None
    shard_name = getattr(args, "shard", None)
    other_shards: frozenset[str] = frozenset()
    bots = desired.bots
    if checked.shards:
        shard_name = declared_shard(args.network, checked, shard_name, shard)
        if shard_name is None:  # the network's own accounts: the rooms of no shard
            shard = None
            other_shards = frozenset(k for s in checked.shards for k in s.keys)
        else:
            shard = next(s for s in checked.shards if s.key == shard_name).keys
            bots = desired.shard_bots[shard_name]
    elif shard_name is not None:
        raise ClubsError(f"--shard {shard_name}: {args.network} declares no shards (shards:)")
    factories = default_factories()
    names = args.only or [n for n in sorted(bots) if n in factories]
    unknown = [n for n in names if n not in bots]
    if unknown:
        raise ClubsError(f"{args.network}: no bot named {', '.join(unknown)} in `bots:`")
    if not names:
        raise ClubsError("no bot to run: none of the network's bots is built into this version")
    provisioner = f"@provisioner:{args.server_name}"
    if checked.servers and args.server_name != checked.servers[0].server_name:
        raise ClubsError(
            f"{args.network}: the network's bots are accounts on its first server, "
            f"{checked.servers[0].server_name} (servers:); run them there, not on "
            f"{args.server_name}"
        )
    others = frozenset(f"@provisioner:{s}" for s in checked.allowlist(args.server_name))
    return HostConfig(
        homeserver_url=args.homeserver,
        var_dir=args.var_dir.resolve(),
        accounts=[BotAccount(n, UserId(bots[n])) for n in names],
        network=desired.network,
        provisioner=provisioner,
        admin_token=os.environ.get("CLUBS_ADMIN_TOKEN")
        or Vault(args.var_dir / "secrets" / "vault").get(f"{provisioner}/access_token"),
        descriptions=private_descriptions(desired),
        settings=RuntimeSettings(
            identity_policy=desired.identity_policy,
            shard=shard,
            other_shards=other_shards,
            other_provisioners=others,
        ),
        http_port=args.http_port,
        http_host=args.http_host,
        public_url=(args.public_url or f"http://{args.http_host}:{args.http_port}").rstrip("/")
        if args.http_port is not None
        else None,
        shard=shard_name,
    )


def declared_shard(
    network_file: Path, network: Any, name: str | None, keys: frozenset[str] | None
) -> str | None:
    """The shard of the network file a process runs: `--shard NAME`, or the shard whose
    countries and clubs are exactly `--clubs`; None (neither given): the network's own
    accounts. Other `--clubs` would serve rooms on accounts that are not theirs: refused."""
    shards = {s.key: s for s in network.shards}
    listed = "; ".join(f"{k}: {', '.join(sorted(s.keys))}" for k, s in shards.items())
    if name is not None:
        if name not in shards:
            raise ClubsError(
                f"--shard {name}: {network_file} declares no such shard (its shards: {listed})"
            )
        if keys is not None and keys != shards[name].keys:
            serves = ", ".join(sorted(shards[name].keys))
            raise ClubsError(
                f"--clubs: shard {name} of {network_file} serves {serves}; leave --clubs out"
            )
        return name
    if keys is None:
        return None
    for key, shard in shards.items():
        if shard.keys == keys:
            return str(key)
    raise ClubsError(
        f"--clubs {','.join(sorted(keys))}: {network_file} declares shards, and these keys are "
        f"not one of them; run --shard NAME (its shards: {listed})"
    )


def shard_keys(network_file: Path, given: str, network: Any) -> frozenset[str]:
    """`--clubs kz,almaty`: country and club keys of the network file, checked."""
    keys = [k.strip() for k in given.split(",") if k.strip()]
    known = {c.key for c in network.countries} | {club.key for _, club in network.clubs()}
    unknown = [k for k in keys if k not in known]
    if not keys or unknown:
        got = ", ".join(unknown) if unknown else "nothing"
        raise ClubsError(
            f"--clubs: {network_file} has no country or club {got} "
            f"(its keys: {', '.join(sorted(known))})"
        )
    return frozenset(keys)


async def bootstrap(args: argparse.Namespace) -> int:
    """`clubs bots bootstrap`: what `make up` does for the bots before starting them, for a
    deployment that runs them as a service of their own (the compose stack). Needs the
    homeserver's registration secret (`<var>/synapse/secrets/`); idempotent."""
    from clubs.core.http import MatrixHttp
    from clubs.provisioning.commands import connect
    from clubs.provisioning.source import check, compile_desired
    from clubs.up import ensure_bot_accounts

    desired = compile_desired(check(args.network).network, args.server_name)
    var_dir = args.var_dir.resolve()
    secret_file = var_dir / "synapse" / "secrets" / "registration_shared_secret"
    if not secret_file.exists():
        raise ClubsError(
            f"{secret_file}: the homeserver's registration secret is not there; bootstrap runs "
            f"where the homeserver's data is (--var-dir {var_dir})"
        )
    await _wait_for(args.homeserver, args.wait)
    async with connect(args) as conn, MatrixHttp(args.homeserver) as anon:
        accounts = await ensure_bot_accounts(
            anon,
            conn.http,
            Vault(var_dir / "secrets" / "vault"),
            secret_file.read_text().strip(),
            args.server_name,
            desired,
        )
    for account in accounts:
        print(f"bot {account.name}: {account.user_id}")
    return 0


async def _wait_for(url: str, seconds: float) -> None:
    """Until the homeserver answers /versions, or a clear error after `seconds`."""
    import asyncio
    import time

    from clubs.core.errors import Unreachable
    from clubs.core.http import MatrixHttp, path

    deadline = time.monotonic() + seconds
    async with MatrixHttp(url) as http:
        while True:
            try:
                await http.get(path("_matrix", "client", "versions"), label="versions")
                return
            except Unreachable:
                if time.monotonic() > deadline:
                    raise ClubsError(
                        f"--homeserver {url}: no answer within {seconds:.0f} s"
                    ) from None
                await asyncio.sleep(1.0)


async def run(args: argparse.Namespace) -> int:
    ready_file: Path | None = args.ready_file
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
    try:
        await run_bots(
            config_from_args(args),
            default_factories(),
            on_ready=None if ready_file is None else lambda: _write_ready(ready_file),
        )
    finally:
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
    return 0


def _write_ready(path: Path) -> None:
    """Atomically: whoever sees the file sees it whole (our pid)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(path)
