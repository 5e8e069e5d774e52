"""The application service registration that Synapse loads (`app_service_config_files`).

The two tokens are random (`secrets.token_urlsafe(48)`, two different values) and live in the
vault; the registration file is rendered from them and written 0600 beside the bridge's other
state. That file is the one place the tokens exist in plaintext, because Synapse reads them
from it; nothing else (logs, the database, the deployment file) ever holds them.

The namespace is exclusive and covers the bridge's bot (`@tg_bridge`) and the ghosts of Telegram
users (`@tg_<telegram user id>`): nobody else can register or masquerade as them. The sender
localpart is random and never used: logging in as it yields a dead token on Synapse.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from clubs.bridge.config import BridgeConfig
from clubs.core.ids import UserId
from clubs.core.secrets import Vault, write_private

SERVICE_ID = "clubs-telegram"
PREFIX = "tg_"
BOT_LOCALPART = f"{PREFIX}bridge"
# Names of vault entries (not secrets themselves).
AS_TOKEN = "bridge/as_token"  # noqa: S105
HS_TOKEN = "bridge/hs_token"  # noqa: S105
SENDER = "bridge/sender_localpart"
TELEGRAM_TOKEN = "bridge/telegram_bot_token"  # noqa: S105


@dataclass(frozen=True)
class Tokens:
    as_token: str
    hs_token: str
    sender_localpart: str

    def __repr__(self) -> str:  # never a token in a log or a traceback
        return f"Tokens(sender_localpart={self.sender_localpart!r})"


def ensure_tokens(vault: Vault) -> Tokens:
    """The service's tokens, created in the vault on first use (two processes agree on one)."""
    as_token = vault.get(AS_TOKEN) or vault.setdefault(AS_TOKEN, secrets.token_urlsafe(48))
    hs_token = vault.get(HS_TOKEN) or vault.setdefault(HS_TOKEN, secrets.token_urlsafe(48))
    alphabet = string.ascii_lowercase + string.digits
    sender = vault.get(SENDER) or vault.setdefault(
        SENDER, "".join(secrets.choice(alphabet) for _ in range(16))
    )
    return Tokens(as_token, hs_token, sender)


def bot_user(server_name: str) -> UserId:
    return UserId(f"@{BOT_LOCALPART}:{server_name}")


def ghost_user(telegram_id: int, server_name: str) -> UserId:
    return UserId(f"@{PREFIX}{telegram_id}:{server_name}")


def ghost_id(user_id: str, server_name: str) -> int | None:
    """The Telegram user id of a ghost's Matrix id, or None if it is not a ghost."""
    m = re.fullmatch(rf"@{PREFIX}([1-9][0-9]{{0,15}}):{re.escape(server_name)}", user_id)
    return int(m.group(1)) if m else None


def in_namespace(user_id: str, server_name: str) -> bool:
    """The bridge's own users: its bot and every ghost."""
    return user_id.startswith(f"@{PREFIX}") and user_id.endswith(f":{server_name}")


def render(config: BridgeConfig, tokens: Tokens) -> str:
    """The registration document (YAML) for this deployment."""
    doc: dict[str, object] = {
        "id": SERVICE_ID,
        "url": config.url,
        "as_token": tokens.as_token,
        "hs_token": tokens.hs_token,
        "sender_localpart": tokens.sender_localpart,
        "rate_limited": False,
        "receive_ephemeral": False,
        "namespaces": {
            "users": [{"exclusive": True, "regex": f"@{PREFIX}.*:{re.escape(config.server_name)}"}],
            "aliases": [],
            "rooms": [],
        },
    }
    if ranges := config.token_ranges():
        doc["ip_range_whitelist"] = list(ranges)  # Synapse: the as_token works from there only
    return yaml.safe_dump(doc, sort_keys=False)


def registration_path(var_dir: Path) -> Path:
    return var_dir / "bridge" / "registration.yaml"


def write_registration(config: BridgeConfig, vault: Vault, var_dir: Path) -> Path:
    """Write (or rewrite) the registration file, 0600; returns its path."""
    path = registration_path(var_dir)
    text = render(config, ensure_tokens(vault)).encode()
    if not path.exists() or path.read_bytes() != text:
        write_private(path, text)
    return path


def app_service_files(config: BridgeConfig, vault_path: Path, var_dir: Path) -> tuple[str, ...]:
    """What the homeserver loads: the registration when the bridge is enabled, else nothing."""
    if not config.enabled:
        return ()
    return (str(write_registration(config, Vault(vault_path), var_dir).resolve()),)
