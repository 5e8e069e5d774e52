"""`clubs`: the one thin command that composes core/, provisioning/, bots/ and bridge/."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from typing import Any

from clubs import __version__
from clubs.core.errors import ClubsError
from clubs.core.logs import setup_logging

log = logging.getLogger("clubs")

PROVISIONING_COMMANDS = ("validate", "plan", "apply", "tokens", "serve")
DEFAULT_VAR = Path(os.environ.get("CLUBS_VAR_DIR", "var"))


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return port


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clubs", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run the whole club network on an embedded homeserver")
    _homeserver_args(up)
    up.add_argument(
        "--service-port",
        type=_port,
        default=None,
        help="the provisioning API's port on 127.0.0.1 (default $CLUBS_SERVICE_PORT or 8090; "
        "any free one with --port 0 or when 8090 is taken; 0 = any free port)",
    )

    hs = sub.add_parser("homeserver", help="the embedded Synapse")
    hs_sub = hs.add_subparsers(dest="hs_command", required=True, metavar="ACTION")
    run = hs_sub.add_parser("run", help="start Synapse in the foreground (Ctrl-C stops it)")
    _homeserver_args(run)
    render = hs_sub.add_parser("config", help="print the homeserver.yaml that would be used")
    _homeserver_args(render)
    element = hs_sub.add_parser(
        "element-config",
        help="write Element Web's config.json for this homeserver ($CLUBS_PUBLIC_BASEURL)",
    )
    _homeserver_args(element)
    element.add_argument("--out", type=Path, help="write it here (0644) instead of printing it")

    bk = sub.add_parser(
        "backup", help="write the whole state (database, media, keys, stores, vault), encrypted"
    )
    _var_arg(bk)
    bk.add_argument("--out", type=Path, required=True, help="the backup file to write (0600)")
    rs = sub.add_parser("restore", help="restore a backup into an empty var directory")
    _var_arg(rs)
    rs.add_argument("backup_file", type=Path, help="a file written by `clubs backup`")

    db = sub.add_parser("db", help="the homeserver's database")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    migrate = db_sub.add_parser(
        "migrate-to-postgres",
        help="move the city's Synapse from SQLite to PostgreSQL (stops it; run again to resume)",
        description="Stops the homeserver, ports a snapshot of its SQLite database into "
        "PostgreSQL (the city's own cluster under var/postgres, or the server CLUBS_PG_HOST "
        "names), verifies it, then records the switch in var/database.json. Until that last "
        "step the city uses SQLite; an interrupted run resumes when run again.",
    )
    _var_arg(migrate)
    migrate.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    migrate.add_argument(
        "--server-name",
        default=os.environ.get("CLUBS_SERVER_NAME", "clubs.local"),
        help="used only when var/synapse/homeserver.yaml does not say (default clubs.local)",
    )

    from clubs.botsrun import add_parsers as add_bot_parsers
    from clubs.bridge.commands import add_parsers as add_bridge_parsers
    from clubs.federation import add_parsers as add_federation_parsers
    from clubs.provisioning.commands import add_parsers

    add_parsers(sub)
    add_bot_parsers(sub)
    add_bridge_parsers(sub)
    add_federation_parsers(sub)
    return p


def _var_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--var-dir",
        type=Path,
        default=DEFAULT_VAR,
        help="where all state lives (default: ./var, or $CLUBS_VAR_DIR)",
    )


def _homeserver_args(p: argparse.ArgumentParser) -> None:
    _var_arg(p)
    p.add_argument(
        "--port",
        type=_port,
        default=_port(os.environ.get("CLUBS_PORT", "8008")),
        help="client API port on 127.0.0.1 (default 8008 or $CLUBS_PORT; 0 = any free port)",
    )
    p.add_argument(
        "--server-name",
        default=os.environ.get("CLUBS_SERVER_NAME", "clubs.local"),
        help="the homeserver's name, the part after ':' in user ids (default clubs.local)",
    )
    p.add_argument(
        "--bind",
        default=os.environ.get("CLUBS_BIND", "127.0.0.1"),
        help="address to listen on (default 127.0.0.1; containers behind a proxy: 0.0.0.0)",
    )
    p.add_argument(
        "--behind-proxy",
        action="store_true",
        default=os.environ.get("CLUBS_BEHIND_PROXY") == "1",
        help="trust X-Forwarded-For from a reverse proxy ($CLUBS_BEHIND_PROXY=1)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        if args.command == "up":
            from clubs.up import run_up

            return _run_until_interrupted(
                run_up(
                    args.var_dir.resolve(),
                    args.port,
                    args.server_name,
                    api_port=args.service_port,
                    verbosity=args.verbose,
                )
            )
        if args.command == "homeserver":
            return _homeserver(args)
        if args.command in ("backup", "restore"):
            return _backup(args)
        if args.command == "federation":
            from clubs.federation import run as run_federation

            return run_federation(args)
        if args.command == "db":
            return _db(args)
        if args.command == "bots":
            from clubs.botsrun import bootstrap
            from clubs.botsrun import run as run_bots

            if args.bots_command == "bootstrap":
                return asyncio.run(bootstrap(args))
            return _run_until_interrupted(run_bots(args))
        if args.command == "bridge":
            from clubs.bridge.commands import run as run_bridge_command

            result = run_bridge_command(args, _bridged_rooms, _provisioner)
            return result if isinstance(result, int) else _run_until_interrupted(result)
        if args.command in PROVISIONING_COMMANDS:
            from clubs.provisioning.commands import run

            return run(args)
    except ClubsError as e:
        print(f"clubs: error: {e}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse rejects unknown commands


def _homeserver(args: argparse.Namespace) -> int:
    from clubs.bridge.config import load_config
    from clubs.bridge.registration import app_service_files
    from clubs.core.homeserver import Homeserver, Settings, render_config
    from clubs.core.postgres import choose_database

    if args.hs_command == "element-config":
        return _element_config(args)
    from clubs.core.workers import database_env, load_shape, workers_enabled

    var_dir = args.var_dir.resolve()
    # $CLUBS_WORKERS=1: main + workers + Redis (docs/workers.md); the worker file is checked
    # before anything starts.
    shape = load_shape() if workers_enabled() else None
    env = database_env(os.environ) if shape is not None else None
    db = choose_database(var_dir, env)  # $CLUBS_DB: sqlite (default) or postgres
    from clubs.federation import homeserver_federation

    # The network's other servers and the TLS listener (docs/federation.md); none by default.
    allowlist, federation_tls = homeserver_federation(var_dir, args.server_name)
    settings = Settings(
        data_dir=(args.var_dir / "synapse").resolve(),
        port=args.port,
        server_name=args.server_name,
        bind_host=args.bind,
        behind_proxy=args.behind_proxy,
        public_baseurl=os.environ.get("CLUBS_PUBLIC_BASEURL"),
        federation_allowlist=allowlist,
        federation_tls=federation_tls,
        postgres=db.postgres,
        # The Telegram bridge's registration, when a bridge.yaml enables it (off by default).
        app_service_config_files=app_service_files(
            load_config(), var_dir / "secrets" / "vault", var_dir
        ),
    )
    if args.hs_command == "config":
        print(render_config(settings, settings.port), end="")
        return 0
    hs = Homeserver(settings)

    async def serve() -> int:
        from clubs.core.postgres import adopt_orphans, kept_running

        if db.embedded is not None:
            adopt_orphans()  # its postmaster, reaped by us when it dies
            db.embedded.start()  # PostgreSQL of our own, stopped after Synapse
        try:
            # A PostgreSQL of our own that dies is started again; Synapse rides it out.
            async with kept_running(db.embedded):
                if shape is not None:
                    from clubs.workersrun import run_workers

                    return await run_workers(settings, shape)
                hs.start()
                print(f"Synapse is running on {hs.url} (Ctrl-C stops it)", flush=True)
                try:
                    await asyncio.Event().wait()
                finally:
                    hs.stop()
        finally:
            if db.embedded is not None:
                db.embedded.stop()
        return 0

    return _run_until_interrupted(serve())


def _backup(args: argparse.Namespace) -> int:
    from clubs.backup import backup, master_key, restore

    var_dir = args.var_dir.resolve()
    if args.command == "backup":
        done = backup(var_dir, args.out.resolve())
        _, source = master_key(var_dir)
        print(
            f"backup: {done.path} ({done.size} bytes, {done.files} files, {done.database}, "
            f"{done.seconds:.1f} s), encrypted with the master key from {source}: keep a copy "
            "of that key apart from the backups, or they cannot be opened"
        )
    else:
        done = restore(args.backup_file.resolve(), var_dir)
        print(
            f"restored {done.files} files and the {done.database} database into {var_dir} "
            f"in {done.seconds:.1f} s; start it as before (`make up`)"
        )
    return 0


SUMMARY_TABLES = ("users", "rooms", "events")


def _db(args: argparse.Namespace) -> int:
    from clubs.db_migrate import Migration

    migration = Migration(args.var_dir.resolve(), server_name=args.server_name)
    if args.dry_run:
        print("clubs db migrate-to-postgres --dry-run: the plan (nothing is changed)")
        for line in migration.plan():
            print(f"  {line}")
        return 0
    try:
        done = migration.run()
    except KeyboardInterrupt:
        print(f"\ninterrupted: {migration.standing()}", file=sys.stderr)
        return 130
    except ClubsError as e:
        print(f"clubs: error: {e}\n{migration.standing()}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{t} {n}" for t, n in done.counts.items() if t in SUMMARY_TABLES)
    if not done.switched:
        print("migration finished (an earlier run made the switch)")
    elif counts:
        print(f"migrated to PostgreSQL in {done.seconds:.1f} s ({counts}: the same on both sides)")
    else:
        print(f"migrated to PostgreSQL in {done.seconds:.1f} s (verified by an earlier run)")
    for note in done.notes:
        print(f"note: {note}")
    from clubs.core.postgres import record_path

    print(f"the city now uses PostgreSQL: {record_path(migration.var)} says so, for every start")
    if done.kept is not None:
        print(f"the SQLite database as it was is kept in {done.kept}: delete it when you are sure")
    for what in done.stopped:
        print(f"{what} was stopped for the migration: start the city again (`make up`)")
    return 0


def _element_config(args: argparse.Namespace) -> int:
    from clubs.core.homeserver import render_element_config

    base_url = os.environ.get("CLUBS_PUBLIC_BASEURL") or f"http://{args.bind}:{args.port}"
    text = render_element_config(args.server_name, base_url)
    if args.out is None:
        print(text, end="")
        return 0
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)  # served to browsers by the proxy: nothing secret in it
    tmp.replace(args.out)
    return 0


def _bridged_rooms(network_file: Path) -> tuple[str, list[Any]]:
    """The network's id and the rooms its file bridges, as the bridge's `Portal`s."""
    from clubs.bridge.config import Portal
    from clubs.provisioning.source import check

    network = check(network_file).network
    portals = [
        Portal(network.key, club.key, room.key, room.bridge.chat, room.bridge.mode)
        for _, club in network.clubs()
        for room in club.rooms
        if room.bridge is not None
    ]
    return network.key, portals


@contextlib.asynccontextmanager
async def _provisioner(args: argparse.Namespace) -> AsyncIterator[tuple[Any, Any]]:
    """The provisioner's client and user id (it is an admin of every managed room)."""
    from clubs.provisioning.commands import connect

    async with connect(args) as conn:
        yield conn.http, conn.provisioner


def _run_until_interrupted(coro: Coroutine[Any, Any, int]) -> int:
    """Run a coroutine; SIGINT/SIGTERM cancel it cleanly so every `finally` runs."""

    async def runner() -> int:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            print("\nstopped.", file=sys.stderr)
            return 0
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)

    return asyncio.run(runner())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
