"""Cases at rest: AES-256-GCM records, keyed pseudonyms of authors and keyed search terms.

One vault entry (`bots/cases_key`, created on first use, never beside the database) gives three
keys through HKDF: one seals records, one makes authors' pseudonyms, one makes search terms. A
record is bound by its associated data to its kind and row, so a sealed case copied into another
row does not open. A pseudonym is an HMAC-SHA256 of the author's user id: their cases are found
by it, and someone holding only the database cannot tell whose they are (not even by trying user
ids). A search term is an HMAC of a normalised word (a tag, a word of the relation), so `!cases`
is an indexed query and the database does not say which tags a case has.
Layout of a sealed record: 12-byte random nonce, then the ciphertext with its 16-byte tag.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clubs.core.errors import ClubsError
from clubs.core.secrets import Vault

VAULT_NAME = "bots/cases_key"
NONCE_BYTES = 12
HEX = 32


class BoxError(ClubsError):
    """A case record cannot be opened (another key, another row, or a damaged row)."""


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master)


class CaseBox:
    def __init__(self, master: bytes) -> None:
        if len(master) != 32:
            raise ValueError("the cases key has 32 bytes")
        self._aead = AESGCM(_derive(master, b"clubs cases records"))
        self._names = _derive(master, b"clubs cases pseudonyms")
        self._terms = _derive(master, b"clubs cases terms")

    @classmethod
    def from_vault(cls, vault: Vault, name: str = VAULT_NAME) -> CaseBox:
        key = vault.get(name)
        if key is None:  # first use; two processes starting together keep one key
            fresh = base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()
            key = vault.setdefault(name, fresh)
        return cls(base64.b64decode(key))

    def pseudonym(self, user_id: str) -> str:
        """The author's name in the tables: stable, keyed, not reversible without the key."""
        return hmac.new(self._names, user_id.encode(), hashlib.sha256).hexdigest()[:HEX]

    def term(self, word: str) -> str:
        """A normalised search word as the index stores it."""
        return hmac.new(self._terms, word.encode(), hashlib.sha256).hexdigest()[:HEX]

    def seal_json(self, value: Any, context: str) -> bytes:
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, context.encode())

    def open_json(self, blob: bytes, context: str) -> Any:
        try:
            data = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError):
            raise BoxError("a case record cannot be opened") from None
        return json.loads(data)

    def __repr__(self) -> str:  # the keys never reach a log through a repr
        return "CaseBox(<key>)"
