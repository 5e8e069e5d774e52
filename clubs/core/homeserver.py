"""The embedded homeserver: Synapse from PyPI, configured from our one hardened template.

`Homeserver(settings).start()` renders `config/synapse/*.j2` into a data directory, creates the
secrets Synapse needs (0600 files), starts Synapse on loopback, waits until the client API
answers, and `stop()` ends it with no process left behind. Every failure becomes one
`HomeserverError` line naming the cause and the log file to read.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from clubs.core.ca import TlsSetting, check_server_tls
from clubs.core.errors import HomeserverError
from clubs.core.paths import config_dir
from clubs.core.secrets import ensure_secret_file, write_private

log = logging.getLogger(__name__)

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class FederationTls:
    """Federation over TLS with the network's own CA (docs/federation.md): a listener of its
    own on `port`, this server's certificate and key, the CA that every peer's certificate must
    come from, and the private address ranges peers may be reached on (Synapse refuses loopback
    and private addresses for federation unless they are listed)."""

    port: int
    cert: TlsSetting
    key: TlsSetting
    ca: TlsSetting
    bind_host: str = "127.0.0.1"
    ip_ranges: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Where and how the homeserver runs. `port=0` picks a free loopback port."""

    data_dir: Path
    server_name: str = "clubs.local"
    bind_host: str = "127.0.0.1"
    port: int = 8008
    public_baseurl: str | None = None
    federation_allowlist: tuple[str, ...] = ()
    token_registration: bool = True
    metrics_port: int | None = None
    log_level: str = "INFO"
    provisioner_localpart: str = "provisioner"
    app_service_config_files: tuple[str, ...] = ()
    postgres: dict[str, str] | None = field(default=None, hash=False)
    behind_proxy: bool = False
    federation_tls: FederationTls | None = None

    @property
    def provisioner_user_id(self) -> str:
        return f"@{self.provisioner_localpart}:{self.server_name}"

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "homeserver.log"

    @property
    def console_file(self) -> Path:
        return self.data_dir / "homeserver.console.log"

    @property
    def registration_secret_file(self) -> Path:
        return self.secrets_dir / "registration_shared_secret"


def _template_env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(config_dir() / "synapse"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, not HTML; values are quoted in the template
    )


def render_config(
    settings: Settings, port: int, *, replication_port: int | None = None, workers_yaml: str = ""
) -> str:
    """The homeserver.yaml for these settings (pure: no files touched). With workers
    (clubs/core/workers.py): main's replication listener and the shared worker settings."""
    values: dict[str, Any] = {
        "server_name": settings.server_name,
        "public_baseurl": settings.public_baseurl or f"http://{settings.bind_host}:{port}/",
        "data_dir": str(settings.data_dir),
        "secrets_dir": str(settings.secrets_dir),
        "bind_host": settings.bind_host,
        "port": port,
        "behind_proxy": settings.behind_proxy,
        "federation_allowlist": list(settings.federation_allowlist),
        "token_registration": settings.token_registration,
        "metrics_port": settings.metrics_port,
        "provisioner_user_id": settings.provisioner_user_id,
        "app_service_config_files": list(settings.app_service_config_files),
        "postgres": settings.postgres,
        "federation_tls": _federation_values(settings.federation_tls),
        "replication_port": replication_port,
        "workers_yaml": workers_yaml,
    }
    return _template_env().get_template("homeserver.yaml.j2").render(**values)


def _federation_values(tls: FederationTls | None) -> dict[str, Any] | None:
    if tls is None:
        return None
    return {
        "port": tls.port,
        "bind_host": tls.bind_host,
        "cert": str(tls.cert.path),
        "key": str(tls.key.path),
        "ca": str(tls.ca.path),
        "ip_ranges": list(tls.ip_ranges),
    }


def check_federation_tls(settings: Settings) -> None:
    """The TLS files parse and fit this server (CertificateError, naming file and setting)."""
    tls = settings.federation_tls
    if tls is not None:
        check_server_tls(settings.server_name, tls.cert, tls.key, [tls.ca])


def render_log_config(settings: Settings, log_name: str = "homeserver.log") -> str:
    return (
        _template_env()
        .get_template("log.yaml.j2")
        .render(data_dir=str(settings.data_dir), log_level=settings.log_level, log_name=log_name)
    )


def default_homeserver_url() -> str:
    """Where the commands find the homeserver: `CLUBS_HOMESERVER_URL`, else the embedded one on
    loopback at `CLUBS_PORT` (8008)."""
    port = os.environ.get("CLUBS_PORT", str(Settings.port))
    return os.environ.get("CLUBS_HOMESERVER_URL", f"http://127.0.0.1:{port}")


def find_free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port_free(
    host: str, port: int, hint: str = "choose another with --port or CLUBS_PORT"
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As Synapse (Twisted) binds: connections of a previous run lingering in TIME_WAIT do
        # not make the port "taken"; a listening process still does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise HomeserverError(
                    f"port {port} on {host} is already in use (another homeserver?); {hint}"
                ) from None
            raise HomeserverError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def _signing_key_line() -> str:
    """A Synapse signing key file line: `ed25519 <key id> <unpadded base64 seed>`."""
    seed = Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )
    key_id = "a_" + secrets.token_hex(2)
    return f"ed25519 {key_id} {base64.b64encode(seed).decode().rstrip('=')}\n"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: ask the kernel to SIGTERM the child when its parent dies (no orphan Synapse)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Homeserver:
    """One Synapse process. Use as a context manager, or call start() and stop()."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = settings.port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.bind_host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        """Written by us (Synapse only writes one when it daemonises): guards the data dir."""
        return self.settings.data_dir / "homeserver.pid"

    @property
    def config_file(self) -> Path:
        return self.settings.data_dir / "homeserver.yaml"

    # --- preparation ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the data directory, secrets and config files. Idempotent: keys are kept."""
        s = self.settings
        check_federation_tls(s)  # a bad certificate stops us before anything is written
        try:
            s.data_dir.mkdir(parents=True, exist_ok=True)
            probe = s.data_dir / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise HomeserverError(
                f"data directory {s.data_dir} is not usable: {e.strerror or e}"
            ) from None
        pid_file = self.pid_file
        if pid_file.exists():
            text = pid_file.read_text().strip()
            if text.isdigit() and _pid_alive(int(text)) and int(text) != os.getpid():
                raise HomeserverError(
                    f"a homeserver is already running on {s.data_dir} (pid {text}); "
                    "stop it first, or use another data directory"
                )
            pid_file.unlink(missing_ok=True)
        if self.port == 0:
            self.port = find_free_port(s.bind_host)
        for name in ("registration_shared_secret", "macaroon_secret_key", "form_secret"):
            ensure_secret_file(s.secrets_dir / name)
        signing_key = s.data_dir / "signing.key"
        if not signing_key.exists():
            write_private(signing_key, _signing_key_line().encode())
        (s.data_dir / "media_store").mkdir(exist_ok=True)
        write_private(self.config_file, self.render().encode())
        write_private(s.data_dir / "log.yaml", render_log_config(s).encode())

    def render(self) -> str:
        """This process's homeserver.yaml (the worker stack's main adds its replication)."""
        return render_config(self.settings, self.port)

    # --- process -------------------------------------------------------------------------------

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Prepare, start Synapse and wait until it answers. Raises HomeserverError."""
        self.prepare()
        check_port_free(self.settings.bind_host, self.port)
        if (tls := self.settings.federation_tls) is not None:
            check_port_free(tls.bind_host, tls.port, "the federation port: CLUBS_FEDERATION_PORT")
        if self.settings.postgres is not None:
            # Wrong password, missing database, wrong locale: one located error, no Synapse.
            from clubs.core.postgres import check_database

            check_database(self.settings.postgres, config=self.config_file)
        console = self.settings.console_file.open("wb")
        cmd = [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config_file)]
        log.info("starting Synapse on %s", self.url)
        try:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.settings.data_dir,
                start_new_session=True,  # Ctrl-C in the terminal is ours to handle
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            console.close()
        self.pid_file.write_text(f"{self.process.pid}\n")
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        url = self.url + "/_matrix/client/versions"
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise HomeserverError(
                    f"Synapse exited with code {self.process.returncode} during start-up: "
                    f"{self._last_error()}; see {self._log_hint()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our loopback URL
                    if resp.status == 200 and "versions" in json.loads(resp.read()):
                        log.info("Synapse is ready on %s", self.url)
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise HomeserverError(
                    f"Synapse did not answer on {self.url} within {timeout_s:.0f}s; "
                    f"see {self._log_hint()}"
                )
            time.sleep(0.1)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop Synapse and everything it started. Safe to call twice."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is not None:
            self.pid_file.unlink(missing_ok=True)
            return
        log.info("stopping Synapse (pid %d)", proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("Synapse did not stop within %.0fs; killing it", timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> Homeserver:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- diagnostics ---------------------------------------------------------------------------

    def _log_hint(self) -> str:
        return f"{self.settings.console_file} and {self.settings.log_file}"

    def _last_error(self) -> str:
        """The most telling line Synapse printed: its last error, else its last line."""
        lines: list[str] = []
        for f in (self.settings.console_file, self.settings.log_file):
            with contextlib.suppress(OSError):
                lines += f.read_text(errors="replace").splitlines()[-200:]
        lines = [ln.strip() for ln in lines if ln.strip()]
        for i in range(len(lines) - 1, -1, -1):
            if "error" in lines[i].lower():
                text = lines[i]
                if text.endswith(":"):  # "Error in configuration:" + the detail below it
                    text = " ".join([text, *lines[i + 1 : i + 3]])
                return text[-300:]
        return lines[-1][-300:] if lines else "it printed nothing"

    def registration_shared_secret(self) -> str:
        return self.settings.registration_secret_file.read_text().strip()


def render_element_config(server_name: str, base_url: str) -> str:
    """Element Web's config.json pointing at this homeserver (pure: no files touched)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(config_dir() / "element"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - JSON; values go through tojson
    )
    text = env.get_template("config.json.j2").render(
        server_name=server_name, base_url=base_url.rstrip("/")
    )
    json.loads(text)  # a template that does not render valid JSON fails here, not in browsers
    return text.lstrip()
