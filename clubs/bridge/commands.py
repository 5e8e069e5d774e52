"""`clubs bridge run|registration|token|consent`: the Telegram bridge's commands.

The `clubs` command composes: it reads the network file (provisioning) and hands the bridged
rooms in as `Portal`s (`PortalSource`), so this package never imports the provisioning code.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TextIO

from clubs.bridge.config import CONFIG_ENV, Portal, load_config
from clubs.bridge.registration import TELEGRAM_TOKEN, write_registration
from clubs.core.errors import ClubsError
from clubs.core.http import MatrixHttp
from clubs.core.ids import UserId
from clubs.core.secrets import Vault

PortalSource = Callable[[Path], tuple[str, Sequence[Portal]]]
"""Network file → (network id, its bridged rooms)."""
AdminSource = Callable[[argparse.Namespace], AbstractAsyncContextManager[tuple[MatrixHttp, UserId]]]
"""The provisioner's connection (its client and user id), from `--homeserver`/`--var-dir`."""

_BOT_TOKEN = re.compile(r"[0-9]{3,20}:[A-Za-z0-9_-]{30,100}")


def add_parsers(sub: Any) -> None:
    bridge = sub.add_parser("bridge", help="the Telegram bridge (opt-in rooms only)")
    actions = bridge.add_subparsers(dest="bridge_command", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="run the bridge in the foreground (Ctrl-C stops it)")
    run.add_argument(
        "--network",
        type=Path,
        default=Path(os.environ.get("CLUBS_NETWORK", "config/network.example.yaml")),
        help="the network file whose rooms say bridge: (default: the example network)",
    )
    consent = actions.add_parser(
        "consent",
        help="record (or --withdraw) the room admins' consent to bridge an encrypted room",
    )
    consent.add_argument("--network", type=Path, required=True, help="the network file")
    consent.add_argument("--room", required=True, help="the bridged room, as CLUB/ROOM")
    consent.add_argument("--withdraw", action="store_true", help="withdraw the consent")
    consent.add_argument(
        "--yes",
        action="store_true",
        help="confirm: the room's new messages will leave end-to-end encryption for Telegram",
    )
    consent.add_argument("--homeserver", default=None, help="URL (default $CLUBS_HOMESERVER_URL)")
    consent.add_argument(
        "--var-dir", type=Path, default=None, help="default ./var or $CLUBS_VAR_DIR"
    )
    for p in (
        run,
        actions.add_parser("registration", help="write the registration file the homeserver loads"),
        actions.add_parser(
            "token", help="store the Telegram bot token in the vault (read from standard input)"
        ),
    ):
        p.add_argument(
            "--config",
            type=Path,
            default=None,
            help=f"the deployment's bridge.yaml (default ${CONFIG_ENV}, else config/bridge.yaml)",
        )
        p.add_argument("--var-dir", type=Path, default=Path(os.environ.get("CLUBS_VAR_DIR", "var")))


def _vault(var_dir: Path) -> Vault:
    return Vault(var_dir / "secrets" / "vault")


def run(
    args: argparse.Namespace, portals: PortalSource, admin: AdminSource | None = None
) -> int | Coroutine[Any, Any, int]:
    """Returns an exit code, or for `run` the coroutine the CLI runs until interrupted."""
    if args.bridge_command == "consent":
        if admin is None:
            raise ClubsError("clubs bridge consent needs the provisioner's connection")
        return asyncio.run(consent(args, portals, admin))
    var_dir: Path = args.var_dir.resolve()
    config = load_config(args.config)
    if args.bridge_command == "token":
        return store_token(_vault(var_dir), sys.stdin)
    if not config.enabled:
        raise ClubsError(
            "the Telegram bridge is off: set enabled: true in the deployment's bridge.yaml "
            "(then restart the homeserver, so that it loads the registration)"
        )
    if args.bridge_command == "registration":
        path = write_registration(config, _vault(var_dir), var_dir)
        print(path)
        return 0
    from clubs.bridge.service import run_bridge

    network, bridged = portals(args.network)
    write_registration(config, _vault(var_dir), var_dir)
    return run_bridge(config, bridged, network, vault=_vault(var_dir), data_dir=var_dir / "bridge")


def store_token(vault: Vault, stream: TextIO) -> int:
    """Read the bot token BotFather gave (hidden when typed at a terminal) into the vault."""
    token = getpass.getpass("Telegram bot token: ") if stream.isatty() else stream.readline()
    token = token.strip()
    if not _BOT_TOKEN.fullmatch(token):
        raise ClubsError(
            "that is not a Telegram bot token (digits, a colon, then 30 or more letters, digits, "
            "_ or -, as BotFather gives it); nothing was stored"
        )
    vault.set(TELEGRAM_TOKEN, token)
    print("the Telegram bot token is stored in the vault")
    return 0


CONSENT_WARNING = (
    "Consent to bridge an encrypted room: from now on its new messages leave end-to-end "
    "encryption. Telegram stores them in its cloud and every member of the Telegram chat (and "
    "their phones) can read them. Earlier messages are never relayed. Pass --yes to confirm."
)


async def consent(args: argparse.Namespace, portals: PortalSource, admin: AdminSource) -> int:
    """Write (or withdraw) the consent state event as the provisioner, an admin of every room."""
    from clubs.bridge.consent import find_room, record_consent

    club, sep, room_key = str(args.room).partition("/")
    if not sep or not club or not room_key or "/" in room_key:
        raise ClubsError(f"--room {args.room!r}: write it as CLUB/ROOM; nothing was written")
    network, bridged = portals(args.network)
    portal = next((p for p in bridged if p.club == club and p.room == room_key), None)
    if portal is None:
        raise ClubsError(
            f"{args.network}: room {club}/{room_key} has no bridge: key; nothing was written"
        )
    if not args.withdraw and not args.yes:
        raise ClubsError(CONSENT_WARNING)
    async with admin(args) as (http, writer):
        room = await find_room(http, network, club, room_key)
        await record_consent(http, room, writer, portal.chat, withdraw=args.withdraw)
    if args.withdraw:
        print(f"consent withdrawn in {club}/{room_key}: the bridge stops relaying it")
    else:
        print(
            f"consent recorded in {club}/{room_key} (Telegram chat {portal.chat}) by {writer}; "
            "invite the bridge's bot into the room (again) so that it joins"
        )
    return 0
