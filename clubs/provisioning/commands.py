"""`clubs validate|plan|apply|tokens|serve`: the provisioning commands of the `clubs` CLI.

Where the homeserver is and who the provisioner is come from the environment or the var
directory of `make up`:

- `CLUBS_HOMESERVER_URL` (default `http://127.0.0.1:$CLUBS_PORT`, port 8008);
- the provisioner's access token: `CLUBS_ADMIN_TOKEN`, else the vault in `$CLUBS_VAR_DIR/secrets`
  where `clubs up` keeps the provisioner account (created with `ensure_service_account`); when
  that token no longer works and the embedded homeserver's registration secret is there, the
  account logs in again on its own device.

Exit codes: 0 success (`plan`: no changes), 1 error, 2 `plan`: changes pending.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from clubs.core.admin import ensure_service_account, whoami
from clubs.core.errors import ClubsError, Forbidden
from clubs.core.homeserver import default_homeserver_url
from clubs.core.http import MatrixHttp, UserId
from clubs.core.secrets import Vault
from clubs.core.yamlconf import ConfigError
from clubs.provisioning.actual import TokenStatus
from clubs.provisioning.apply import ApplyResult, apply_network, crash_hook_from_env
from clubs.provisioning.discover import discover, record_status, server_tokens
from clubs.provisioning.onboard import LANGUAGES, invite_text, issue_token, revoke_token
from clubs.provisioning.plan import Action, Plan, plan, render_json, render_text
from clubs.provisioning.source import check, compile_desired
from clubs.provisioning.tokens import TokenRecord, TokenStore

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
PROVISIONER_LOCALPART = "provisioner"


def _var_dir() -> Path:
    return Path(os.environ.get("CLUBS_VAR_DIR", "var"))


def _default_url() -> str:
    return default_homeserver_url()


def add_parsers(sub: Any) -> None:
    """Add the provisioning commands to the `clubs` sub-command parser."""
    v = sub.add_parser("validate", help="check a network file (nothing is sent anywhere)")
    v.add_argument("file", type=Path)

    p = sub.add_parser("plan", help="show what apply would change (exit 2 if anything)")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable plan")
    _flags(p)
    _connection(p)

    a = sub.add_parser("apply", help="make the homeserver match the network file")
    a.add_argument("file", type=Path)
    a.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    a.add_argument("--lang", choices=LANGUAGES, default="ru", help="invite texts language")
    a.add_argument(
        "--confirm-destroy",
        metavar="NETWORK",
        help="with --destroy and --yes: the network id, typed out, to allow purging rooms",
    )
    _flags(a)
    _connection(a)

    t = sub.add_parser("tokens", help="registration tokens issued to people")
    t_sub = t.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    t_list = t_sub.add_parser("list", help="tokens of a network with their status")
    t_list.add_argument("--network", required=True)
    _connection(t_list)
    t_new = t_sub.add_parser("new", help="issue a token to a person and print the invite")
    t_new.add_argument("person", help="the person's key in the network file")
    t_new.add_argument("--network", required=True)
    t_new.add_argument("--uses", type=int, default=1)
    t_new.add_argument("--ttl-hours", type=float, default=72.0)
    t_new.add_argument("--lang", choices=LANGUAGES, default="ru")
    _connection(t_new)
    t_rev = t_sub.add_parser("revoke", help="delete a token on the server")
    t_rev.add_argument("id", type=int, help="the id shown by `clubs tokens list`")
    _connection(t_rev)

    s = sub.add_parser("serve", help="the provisioning HTTP API")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=int(os.environ.get("CLUBS_SERVICE_PORT", "8090")))
    s.add_argument(
        "--show-token",
        action="store_true",
        help="print the API token (to a terminal only) and exit, without serving",
    )
    _connection(s)


def _flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reinvite", action="store_true", help="invite again people who left")
    p.add_argument("--prune", action="store_true", help="archive managed rooms not declared")
    p.add_argument("--destroy", action="store_true", help="purge instead of archiving")


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--homeserver", default=None, help="URL (default $CLUBS_HOMESERVER_URL)")
    p.add_argument("--var-dir", type=Path, default=None, help="default ./var or $CLUBS_VAR_DIR")


# --- connecting -------------------------------------------------------------------------------


@dataclass
class Connection:
    http: MatrixHttp
    provisioner: UserId
    var_dir: Path

    @property
    def server_name(self) -> str:
        return self.provisioner.split(":", 1)[1]

    def vault(self) -> Vault:
        return Vault(self.var_dir / "secrets" / "vault")

    def tokens(self) -> TokenStore:
        return TokenStore(self.var_dir / "provisioning" / "tokens.sqlite")


@asynccontextmanager
async def connect(args: argparse.Namespace) -> AsyncIterator[Connection]:
    url = args.homeserver or _default_url()
    var_dir = (args.var_dir or _var_dir()).resolve()
    vault = Vault(var_dir / "secrets" / "vault")
    async with MatrixHttp(url) as anon:
        token = os.environ.get("CLUBS_ADMIN_TOKEN") or _vault_token(vault)
        http = MatrixHttp(url, token, session=anon.session)
        user_id: UserId | None = None
        if token:
            try:
                user_id = await whoami(http)
            except Forbidden:
                user_id = None
        if user_id is None:
            secret_file = var_dir / "synapse" / "secrets" / "registration_shared_secret"
            server_name = os.environ.get("CLUBS_SERVER_NAME", "clubs.local")
            if not secret_file.exists():
                raise ClubsError(
                    f"no working provisioner token for {url}: set CLUBS_ADMIN_TOKEN, or run "
                    f"`clubs up` with --var-dir {var_dir}"
                )
            session, _ = await ensure_service_account(
                anon,
                vault,
                secret_file.read_text().strip(),
                PROVISIONER_LOCALPART,
                server_name=server_name,
                admin=True,
            )
            http = MatrixHttp(url, session.access_token, session=anon.session)
            user_id = session.user_id
        yield Connection(http, user_id, var_dir)


def _vault_token(vault: Vault) -> str | None:
    if not vault.path.exists():
        return None
    server_name = os.environ.get("CLUBS_SERVER_NAME", "clubs.local")
    return vault.get(f"@{PROVISIONER_LOCALPART}:{server_name}/access_token")


# --- commands ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run one provisioning command; returns the exit code."""
    try:
        if args.command == "validate":
            return cmd_validate(args.file)
        if args.command == "serve":
            from clubs.provisioning.service import serve, show_token

            if args.show_token:
                return show_token((args.var_dir or _var_dir()).resolve())
            return asyncio.run(serve(args))
        return asyncio.run(_async(args))
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return EXIT_ERROR


async def _async(args: argparse.Namespace) -> int:
    if args.command == "plan":
        return await cmd_plan(args)
    if args.command == "apply":
        return await cmd_apply(args)
    if args.command == "tokens":
        return await cmd_tokens(args)
    raise ClubsError(f"unknown command {args.command}")  # pragma: no cover


def cmd_validate(file: Path, out: TextIO = sys.stdout) -> int:
    checked = check(file)
    for w in checked.warnings:
        print(w, file=sys.stderr)
    rooms = sum(1 + len(club.rooms) for _, club in checked.network.clubs())
    print(
        f"{file}: valid: network {checked.network.key}, {len(checked.network.people)} people, "
        f"{rooms} club spaces and rooms, {len(checked.warnings)} warning(s)",
        file=out,
    )
    for _, club in checked.network.clubs():
        for room in club.rooms:
            if room.bridge is not None:
                way = "both ways" if room.bridge.mode == "relay" else "one way, to Telegram"
                print(
                    f"  {club.key}/{room.key}: bridged to Telegram chat {room.bridge.chat} "
                    f"({room.bridge.mode}: {way})",
                    file=out,
                )
    return EXIT_OK


async def _plan(args: argparse.Namespace, conn: Connection) -> tuple[Plan, Any]:
    checked = check(args.file)
    for w in checked.warnings:
        print(w, file=sys.stderr)
    desired = compile_desired(checked.network, conn.server_name)
    store = conn.tokens()
    try:
        actual = await discover(conn.http, desired, conn.provisioner, tokens=store)
    finally:
        store.close()
    bridged = {
        f"club:{club.key}/{room.key}": room.bridge.chat
        for _, club in checked.network.clubs()
        for room in club.rooms
        if room.bridge is not None
    }
    p = plan(
        desired,
        actual,
        reinvite=args.reinvite,
        prune=args.prune,
        destroy=args.destroy,
        bridged=bridged,
    )
    return p, desired


async def cmd_plan(args: argparse.Namespace) -> int:
    async with connect(args) as conn:
        p, _ = await _plan(args, conn)
    sys.stdout.write(render_json(p) if args.json else render_text(p))
    return EXIT_OK if p.empty else EXIT_CHANGES


async def cmd_apply(args: argparse.Namespace) -> int:
    async with connect(args) as conn:
        hook = crash_hook_from_env()
        if hook is not None:
            conn.http.on_write = hook
        p, desired = await _plan(args, conn)
        sys.stdout.write(render_text(p))
        if p.empty:
            return EXIT_OK
        if not _confirmed(args, p, desired.network):
            print("Nothing applied.", file=sys.stderr)
            return EXIT_ERROR
        store = conn.tokens()
        try:
            result = await apply_network(
                conn.http,
                desired,
                conn.provisioner,
                vault=conn.vault(),
                tokens=store,
                reinvite=args.reinvite,
                prune=args.prune,
                destroy=args.destroy,
                expected_hash=p.hash,
                progress=ProgressBar(sys.stderr) if sys.stderr.isatty() else None,
            )
        finally:
            store.close()
        _print_result(result, conn.http.base_url, desired.network, args.lang)
    return EXIT_OK


def _confirmed(args: argparse.Namespace, p: Plan, network: str) -> bool:
    destroys = any(a.kind == "destroy" for a in p.actions)
    if args.yes:
        if destroys and args.confirm_destroy != network:
            print(f"--destroy with --yes needs --confirm-destroy {network}", file=sys.stderr)
            return False
        return True
    if not sys.stdin.isatty():
        print("not a terminal: pass --yes to apply without confirmation", file=sys.stderr)
        return False
    if destroys:
        answer = input(f"Rooms will be PURGED. Type the network id ({network}) to go on: ")
        return answer.strip() == network
    answer = input(f"Apply {len(p.actions)} change(s)? [y/N] ")
    return answer.strip().lower() in ("y", "yes", "д", "да")


def _print_result(result: ApplyResult, homeserver: str, network: str, lang: str) -> None:
    print(result.summary())
    for issued in result.issued:
        print(f"\n--- invite for {issued.person} ---")
        print(invite_text(homeserver, issued.token, issued.expiry_ms, network=network, lang=lang))


class ProgressBar:
    """A one-line progress bar on a terminal: `[#####.....] 42/150 create club:x/y`."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width

    def __call__(self, done: int, total: int, action: Action) -> None:
        filled = self.width * done // max(total, 1)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {action.kind}"
        self.stream.write("\r" + line[:79].ljust(79))
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


async def cmd_tokens(args: argparse.Namespace) -> int:
    async with connect(args) as conn:
        store = conn.tokens()
        try:
            if args.tokens_command == "list":
                statuses = await _statuses(conn, store, args.network)
                print(f"{'id':>4}  {'person':<20} {'status':<8} expires (UTC)")
                for rec, status in statuses:
                    expires = (
                        time.strftime("%Y-%m-%d %H:%M", time.gmtime(rec.expiry_ms / 1000))
                        if rec.expiry_ms
                        else "never"
                    )
                    print(f"{rec.id:>4}  {rec.person:<20} {status:<8} {expires}")
                return EXIT_OK
            if args.tokens_command == "new":
                ttl = int(args.ttl_hours * 3600)
                issued = await issue_token(
                    conn.http, store, args.network, args.person, uses_allowed=args.uses, ttl_s=ttl
                )
                print(
                    invite_text(
                        conn.http.base_url,
                        issued.token,
                        issued.expiry_ms,
                        network=args.network,
                        lang=args.lang,
                    )
                )
                return EXIT_OK
            if args.tokens_command == "revoke":
                record = store.get(args.id)
                if record is None:
                    raise ClubsError(f"no token with id {args.id}")
                deleted = await revoke_token(conn.http, store, record)
                print(f"token {args.id} revoked" + ("" if deleted else " (already gone)"))
                return EXIT_OK
        finally:
            store.close()
    raise ClubsError(f"unknown tokens action {args.tokens_command}")  # pragma: no cover


async def _statuses(
    conn: Connection, store: TokenStore, network: str
) -> list[tuple[TokenRecord, TokenStatus]]:
    """Each record with its own status (live, used, expired, revoked)."""
    records = store.list(network)
    by_hash = await server_tokens(conn.http) if records else {}
    now_ms = int(time.time() * 1000)
    return [(rec, record_status(rec, by_hash.get(rec.token_sha256), now_ms)) for rec in records]
