"""Check-in answers and journal entries, encrypted at rest with AES-256-GCM.

The key is the vault's `bots/checkins_key` (created there on first use), never beside the
database. Each record is bound to its member and kind by the associated data, so a sealed
answer copied into another member's row does not open. Layout: 12-byte random nonce, then the
ciphertext with its 16-byte tag.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clubs.core.errors import ClubsError
from clubs.core.secrets import Vault

VAULT_NAME = "bots/checkins_key"
NONCE_BYTES = 12


class BoxError(ClubsError):
    """A record cannot be opened (another key, another member's row, or a damaged row)."""


class Box:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("an AES-256 key has 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_vault(cls, vault: Vault, name: str = VAULT_NAME) -> Box:
        key = vault.get(name)
        if key is None:  # first use; two processes starting together keep one key
            fresh = base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()
            key = vault.setdefault(name, fresh)
        return cls(base64.b64decode(key))

    def seal(self, data: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, context.encode())

    def open(self, blob: bytes, context: str) -> bytes:
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError):
            raise BoxError("a check-ins record cannot be opened") from None

    def seal_json(self, value: Any, context: str) -> bytes:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return self.seal(text.encode(), context)

    def open_json(self, blob: bytes, context: str) -> Any:
        return json.loads(self.open(blob, context))

    def __repr__(self) -> str:  # the key never reaches a log through a repr
        return "Box(<key>)"
