"""Secrets at rest: access tokens, passwords and private keys are never written in plaintext.

A `Vault` keeps named secrets in one Fernet-encrypted file (AES-128-CBC + HMAC-SHA256 from the
`cryptography` package). Its key comes from `CLUBS_MASTER_KEY`, or the file named by
`CLUBS_MASTER_KEY_FILE` (production: a secret manager or container secret), or else from a 0600
key file created beside the vault on first use (the embedded default). Writes are
atomic (temporary file, fsync, rename), so a crash never leaves a half-written vault.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from clubs.core.errors import ClubsError

MASTER_KEY_ENV = "CLUBS_MASTER_KEY"
MASTER_KEY_FILE_ENV = "CLUBS_MASTER_KEY_FILE"


class VaultError(ClubsError):
    """The vault cannot be opened or written."""


def write_private(path: Path, data: bytes) -> None:
    """Atomically write `data` to `path` readable by the owner only."""
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


def ensure_secret_file(path: Path, nbytes: int = 32) -> bool:
    """Create a random secret in `path` (0600) unless it exists. Returns whether it created it."""
    if path.exists():
        return False
    write_private(path, secrets.token_urlsafe(nbytes).encode())
    return True


class Vault:
    """Named secrets in one encrypted file."""

    def __init__(self, path: Path, key: bytes | None = None) -> None:
        self.path = path
        self._fernet = Fernet(key if key is not None else self._load_key())

    def _load_key(self) -> bytes:
        env = os.environ.get(MASTER_KEY_ENV)
        if env:
            return env.encode()
        key_file = os.environ.get(MASTER_KEY_FILE_ENV)
        if key_file:
            return Path(key_file).read_bytes().strip()
        key_path = self.path.with_suffix(".key")
        if not key_path.exists():
            write_private(key_path, Fernet.generate_key())
        return key_path.read_bytes().strip()

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        try:
            raw = self._fernet.decrypt(self.path.read_bytes())
        except InvalidToken:
            raise VaultError(
                f"{self.path}: cannot decrypt the vault with the configured key "
                f"({MASTER_KEY_ENV} or {self.path.with_suffix('.key')})"
            ) from None
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise VaultError(f"{self.path}: the vault is damaged")
        return {str(k): str(v) for k, v in data.items()}

    def get(self, name: str) -> str | None:
        return self._read().get(name)

    def set(self, name: str, value: str) -> None:
        data = self._read()
        if data.get(name) == value:
            return
        data[name] = value
        write_private(self.path, self._fernet.encrypt(json.dumps(data).encode()))

    def delete(self, name: str) -> None:
        data = self._read()
        if data.pop(name, None) is not None:
            write_private(self.path, self._fernet.encrypt(json.dumps(data).encode()))
