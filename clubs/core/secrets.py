"""Secrets at rest: access tokens, passwords and private keys are never written in plaintext.

A `Vault` keeps named secrets in one Fernet-encrypted file (AES-128-CBC + HMAC-SHA256 from the
`cryptography` package). Its key comes from `CLUBS_MASTER_KEY`, or the file named by
`CLUBS_MASTER_KEY_FILE` (production: a secret manager or container secret), or else from a 0600
key file created beside the vault on first use (the embedded default).

Several processes share one vault (`clubs up`, `apply`, `serve`, `bots run`), and a lost write
can brick a device whose pickle key it carried. So every change is one read-modify-write under
an exclusive `flock` on `<vault>.lock`, a separate file that is never replaced or deleted (a lock
on the vault itself would protect nothing: the atomic rename installs a new inode). Writes are
atomic and durable (temporary file, fsync, rename, fsync of the directory), so a crash never
leaves a half-written vault; readers take no lock, since a rename is seen whole or not at all.
The key file is created under the same lock, so two first runs agree on one key. Keep the vault
on a local filesystem: `flock` is not reliable over NFS.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from clubs.core.errors import ClubsError

MASTER_KEY_ENV = "CLUBS_MASTER_KEY"
MASTER_KEY_FILE_ENV = "CLUBS_MASTER_KEY_FILE"
LOCK_TIMEOUT_S = 30.0

# A Fernet token: version byte, 8-byte timestamp, 16-byte IV, at least one AES block, HMAC.
_FERNET_VERSION = 0x80
_FERNET_MIN_LEN = 1 + 8 + 16 + 16 + 32


class VaultError(ClubsError):
    """The vault cannot be opened or written."""


def fsync_dir(path: Path) -> None:
    """Make a rename or creation inside directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Atomically and durably write `data` to `path`, readable by the owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def ensure_secret_file(path: Path, nbytes: int = 32) -> bool:
    """Create a random secret in `path` (0600) unless it exists. Returns whether it created it."""
    if path.exists():
        return False
    write_private(path, secrets.token_urlsafe(nbytes).encode())
    return True


class Vault:
    """Named secrets in one encrypted file, shared safely between processes."""

    def __init__(
        self, path: Path, key: bytes | None = None, *, lock_timeout_s: float = LOCK_TIMEOUT_S
    ) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.lock_timeout_s = lock_timeout_s
        if key is None:
            key, self._key_source = self._load_key()
        else:
            self._key_source = "the key given to the vault"
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise VaultError(
                f"{self._key_source}: not a Fernet key (32 url-safe base64-encoded bytes); "
                'make one with `python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"`'
            ) from None

    @property
    def key_path(self) -> Path:
        """The key file used when neither environment variable names a key."""
        return self.path.with_suffix(".key")

    def _load_key(self) -> tuple[bytes, str]:
        env = os.environ.get(MASTER_KEY_ENV)
        if env:
            return env.strip().encode(), f"${MASTER_KEY_ENV}"
        key_file = os.environ.get(MASTER_KEY_FILE_ENV)
        if key_file:
            try:
                return Path(key_file).read_bytes().strip(), key_file
            except OSError as e:
                raise VaultError(
                    f"{key_file}: cannot read the vault key named by ${MASTER_KEY_FILE_ENV} "
                    f"({e.strerror}); fix the path or the file's permissions"
                ) from None
        key_path = self.key_path
        if not key_path.exists():
            # Under the lock, so that two first runs cannot each write a different key.
            with self._locked():
                if not key_path.exists():
                    write_private(key_path, Fernet.generate_key())
        return key_path.read_bytes().strip(), str(key_path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the exclusive cross-process lock on `<vault>.lock` (created 0600 if missing)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + self.lock_timeout_s
            pause = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise VaultError(
                            f"{self.lock_path}: still locked by another process after "
                            f"{self.lock_timeout_s:g} s; check for a stuck `clubs` process"
                        ) from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.02)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read(self) -> dict[str, str]:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            raw = self._fernet.decrypt(blob)
        except InvalidToken:
            if not _looks_like_fernet_token(blob):
                raise VaultError(
                    f"{self.path}: the vault is damaged (not an encrypted vault); restore it "
                    "from a backup, or move it aside to start empty (its secrets are then lost)"
                ) from None
            raise VaultError(
                f"{self.path}: cannot decrypt the vault with the configured key "
                f"({self._key_source}): it was written with another key, or it is damaged; "
                f"set ${MASTER_KEY_ENV} or ${MASTER_KEY_FILE_ENV} to the key it was written "
                "with, or restore the vault from a backup"
            ) from None
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise VaultError(
                f"{self.path}: the vault decrypts but its content is damaged (not a JSON "
                "object); restore it from a backup"
            )
        return {str(k): str(v) for k, v in data.items()}

    def _update(self, change: Callable[[dict[str, str]], bool]) -> None:
        """Read, apply `change` (which says whether it changed anything) and write, all under
        the lock, so that a concurrent writer's secret is never lost."""
        with self._locked():
            data = self._read()
            if change(data):
                write_private(self.path, self._fernet.encrypt(json.dumps(data).encode()))

    def get(self, name: str) -> str | None:
        return self._read().get(name)

    def set(self, name: str, value: str) -> None:
        def put(data: dict[str, str]) -> bool:
            if data.get(name) == value:
                return False
            data[name] = value
            return True

        self._update(put)

    def setdefault(self, name: str, value: str) -> str:
        """The secret `name`, set to `value` first if absent; two processes racing to create
        it both get the one that was stored."""
        stored: list[str] = []

        def put(data: dict[str, str]) -> bool:
            created = name not in data
            stored.append(data.setdefault(name, value))
            return created

        self._update(put)
        return stored[0]

    def delete(self, name: str) -> None:
        self._update(lambda data: data.pop(name, None) is not None)


def _looks_like_fernet_token(blob: bytes) -> bool:
    try:
        raw = base64.urlsafe_b64decode(blob.strip())
    except (binascii.Error, ValueError):
        return False
    return len(raw) >= _FERNET_MIN_LEN and raw[0] == _FERNET_VERSION and (len(raw) - 57) % 16 == 0
