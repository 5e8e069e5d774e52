"""Records sealed at rest: what a bot must keep but nobody may read from its files.

The bots' database holds things that are message content or key material: replies waiting in
the outbox, job payloads (a reminder's text), attachment keys. SQLite files are plaintext, so
these columns hold Fernet tokens (AES-128-CBC + HMAC-SHA256, from `cryptography`) made with a
key that lives in the encrypted vault, never beside the database. Ids, times and states stay
clear: they are what the store queries by, and they carry no content.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from clubs.core.errors import ClubsError
from clubs.core.secrets import Vault

VAULT_NAME = "bots/store_key"


class SealError(ClubsError):
    """A sealed record cannot be opened (another key, or a damaged row)."""


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_vault(cls, vault: Vault, name: str = VAULT_NAME) -> Sealer:
        """The sealer whose key is `name` in the vault (created there on first use)."""
        key = vault.get(name)
        if key is None:  # first use; two processes starting together keep one key
            key = vault.setdefault(name, Fernet.generate_key().decode())
        return cls(key.encode())

    def seal(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def open(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise SealError("a sealed record cannot be opened with this key") from None

    def seal_json(self, value: Any) -> bytes:
        return self.seal(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())

    def open_json(self, token: bytes) -> Any:
        return json.loads(self.open(token))

    def __repr__(self) -> str:  # the key never reaches a log through a repr
        return "Sealer(<key>)"
