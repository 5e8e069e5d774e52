"""The bridge's deployment settings (`bridge.yaml`) and the rooms it bridges (`Portal`).

The bridge is off unless a deployment file says `enabled: true`; without the file it stays off.
The file is the one given, else `$CLUBS_BRIDGE_CONFIG`, else `bridge.yaml` in the config
directory (`config/`, or `$CLUBS_CONFIG_DIR`).
Which rooms are bridged is not decided here: the network file's `bridge:` entries are read by the
`clubs` command and handed in as `Portal`s (the bridge never imports the provisioning code).

    enabled: true
    listen: {host: 127.0.0.1, port: 29317}   # where the application service listens
    url: http://127.0.0.1:29317              # how the homeserver reaches it (default: listen)
    homeserver: http://127.0.0.1:8008        # default: $CLUBS_HOMESERVER_URL or the embedded one
    server_name: clubs.local                 # default: $CLUBS_SERVER_NAME or clubs.local
    telegram:
      api: https://api.telegram.org          # the Bot API (a fake one in tests)
      poll_timeout_s: 30                     # long-polling timeout of getUpdates
      per_chat_minute: 20                    # sends into one chat per minute (Telegram's limit)
    hold_s: 2                                # a message waits this long (0-60 s) before it
                                             # leaves for Telegram: the moderation bot's
                                             # redaction comes first
    as_token_from: [10.0.0.0/8]              # where the homeserver accepts the as_token from
                                             # (default: loopback when the homeserver is)

Secrets are never in this file: the Telegram bot token and the application service tokens are
in the vault (`clubs bridge token` stores the first; the others are generated).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from clubs.core.homeserver import default_homeserver_url
from clubs.core.ids import is_server_name
from clubs.core.paths import config_dir
from clubs.core.yamlconf import DEFAULT_LIMITS, Limits, Node, parse_yaml, read_yaml, shown

Mode = Literal["mirror", "relay"]
CONFIG_ENV = "CLUBS_BRIDGE_CONFIG"
DEFAULT_PORT = 29317
TELEGRAM_API = "https://api.telegram.org"
LOOPBACK = ("127.0.0.0/8", "::1/128")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _network(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return f"expected a network like 10.0.0.0/8 or 127.0.0.1/32; got {shown(value)}"
    return None


@dataclass(frozen=True)
class Portal:
    """A room the network file bridges: found by its locator (network, club, room key)."""

    network: str
    club: str
    room: str
    chat: int
    mode: Mode


@dataclass(frozen=True)
class BridgeConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    url: str = f"http://127.0.0.1:{DEFAULT_PORT}"
    homeserver: str = field(default_factory=default_homeserver_url)
    server_name: str = field(
        default_factory=lambda: os.environ.get("CLUBS_SERVER_NAME", "clubs.local")
    )
    telegram_api: str = TELEGRAM_API
    poll_timeout_s: int = 30
    per_chat_minute: int = 20
    """Sends into one Telegram chat in any 60 s: Telegram's limit for a group is 20; only a
    self-hosted Bot API server or a benchmark against the fake would raise it."""
    hold_s: int = 2
    """How long a Matrix message waits before it leaves for Telegram, so that the moderation
    bot's protections (which redact it) act first; a message redacted meanwhile never leaves."""
    as_token_from: tuple[str, ...] | None = None
    """Networks the homeserver accepts the as_token from (`ip_range_whitelist`); None: loopback
    if the homeserver is on loopback, else anywhere."""

    def token_ranges(self) -> tuple[str, ...]:
        if self.as_token_from is not None:
            return self.as_token_from
        host = urlsplit(self.homeserver).hostname or ""
        if host == "localhost" or _is_loopback(host):
            return LOOPBACK
        return ()


def config_path(given: Path | None = None) -> Path:
    """The deployment file: the one given, else `$CLUBS_BRIDGE_CONFIG`, else `bridge.yaml` in
    the config directory (`config/`, or `$CLUBS_CONFIG_DIR`)."""
    if given is not None:
        return given
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else config_dir() / "bridge.yaml"


def load_config(path: Path | None = None, limits: Limits = DEFAULT_LIMITS) -> BridgeConfig:
    """The deployment's bridge settings; off (the defaults) when the file does not exist.
    Raises ConfigError with every located problem."""
    path = config_path(path)
    if not path.exists():
        return BridgeConfig()
    return _build(read_yaml(path, limits))


def parse_config(data: str | bytes, file: str = "<bridge>") -> BridgeConfig:
    return _build(parse_yaml(data, file))


def _http_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.hostname and not parts.query:
        return None
    return f"expected an http:// or https:// URL without a query; got {shown(value)}"


def _host(value: str) -> str | None:
    if is_server_name(value) or value in ("0.0.0.0", "::"):  # noqa: S104 - the operator's choice
        return None
    return f"expected a host name or address; got {shown(value)}"


def _server_name(value: str) -> str | None:
    return None if is_server_name(value) else f"expected a server name; got {shown(value)}"


def _build(root: Node) -> BridgeConfig:
    d = BridgeConfig()
    f = root.mapping(
        optional=(
            "enabled",
            "listen",
            "url",
            "homeserver",
            "server_name",
            "telegram",
            "as_token_from",
            "hold_s",
        ),
    )
    host, port = d.host, d.port
    if n := f.get("listen"):
        lf = n.mapping(optional=("host", "port"))
        host = h.string(_host) if (h := lf.get("host")) else host
        port = p.integer(low=1, high=65535) if (p := lf.get("port")) else port
    api, timeout, per_chat = d.telegram_api, d.poll_timeout_s, d.per_chat_minute
    if n := f.get("telegram"):
        tf = n.mapping(optional=("api", "poll_timeout_s", "per_chat_minute"))
        api = a.string(_http_url).rstrip("/") if (a := tf.get("api")) else api
        timeout = t.integer(low=0, high=50) if (t := tf.get("poll_timeout_s")) else timeout
        if pace := tf.get("per_chat_minute"):
            per_chat = pace.integer(low=1, high=100_000)
    shown_host = f"[{host}]" if ":" in host else host
    config = BridgeConfig(
        enabled=e.boolean() if (e := f.get("enabled")) else False,
        host=host,
        port=port,
        url=(u.string(_http_url) if (u := f.get("url")) else f"http://{shown_host}:{port}"),
        homeserver=(hs.string(_http_url) if (hs := f.get("homeserver")) else d.homeserver),
        server_name=(s.string(_server_name) if (s := f.get("server_name")) else d.server_name),
        telegram_api=api,
        poll_timeout_s=timeout,
        per_chat_minute=per_chat,
        hold_s=hs_.integer(low=0, high=60) if (hs_ := f.get("hold_s")) else d.hold_s,
        as_token_from=(
            tuple(item.string(_network) for item in n.sequence())
            if (n := f.get("as_token_from"))
            else None
        ),
    )
    root.report.raise_for_errors()
    return config
