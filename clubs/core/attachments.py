"""Encrypted file attachments: what the server stores is ciphertext, the key travels in the
Megolm-encrypted event.

Per the spec's "Sending encrypted attachments": every file gets a fresh AES-256 key and a random
64-bit IV (followed by a 64-bit block counter starting at 0) from the OS CSPRNG, is encrypted
with AES-CTR, and is sent as an `m.file` whose `file` is an `EncryptedFile` (mxc `url`, JWK
`key`, `iv`, `hashes.sha256` of the ciphertext, `v: "v2"`) instead of a plain `url`; the
mimetype lives in `info`, never in the upload, which is `application/octet-stream`.

Uploads are made idempotent with the asynchronous upload API: the mxc is reserved first
(`POST /_matrix/media/v1/create`), the caller records it, then the ciphertext is `PUT` to it; a
second `PUT` answers 409 `M_CANNOT_OVERWRITE_MEDIA`, which means the first one arrived.

`encrypt(data, keys)` with the keys of an earlier attempt gives the very same ciphertext for the
very same bytes (CTR is deterministic for a key and IV), so a retry needs no copy of the
ciphertext; the caller compares `sha256` and must never upload other bytes under those keys.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from clubs.core.errors import ClubsError, MatrixError
from clubs.core.http import JsonDict, MatrixHttp, path

log = logging.getLogger(__name__)

KEY_BYTES = 32
IV_RANDOM_BYTES = 8
"""The IV's random half; the other half is the block counter, starting at zero."""
CANNOT_OVERWRITE = "M_CANNOT_OVERWRITE_MEDIA"
OCTET_STREAM = "application/octet-stream"


class AttachmentError(ClubsError):
    """A file cannot be sent as an encrypted attachment."""


class AttachmentTooLarge(AttachmentError):
    """The file is bigger than the homeserver accepts (`m.upload.size`)."""


@dataclass(frozen=True)
class AttachmentKeys:
    """One file's key material: AES-256 key, 16-byte IV, SHA-256 of the ciphertext."""

    key: bytes
    iv: bytes
    sha256: bytes

    def to_json(self) -> dict[str, str]:
        """For sealing at rest (`clubs.core.sealed`): never store this in clear."""
        return {"k": _b64(self.key, urlsafe=True), "iv": _b64(self.iv), "sha256": _b64(self.sha256)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> AttachmentKeys:
        try:
            keys = cls(
                key=_unb64(str(value["k"])),
                iv=_unb64(str(value["iv"])),
                sha256=_unb64(str(value["sha256"])),
            )
        except (KeyError, TypeError, ValueError):
            raise AttachmentError("damaged attachment key record") from None
        if len(keys.key) != KEY_BYTES or len(keys.iv) != 16 or len(keys.sha256) != 32:
            raise AttachmentError("damaged attachment key record")
        return keys

    def __repr__(self) -> str:  # key material never reaches a log through a repr
        return "AttachmentKeys(<key>)"


@dataclass(frozen=True)
class EncryptedData:
    ciphertext: bytes
    keys: AttachmentKeys

    def __repr__(self) -> str:
        return f"EncryptedData(<{len(self.ciphertext)} bytes>)"


def encrypt(data: bytes, keys: AttachmentKeys | None = None) -> EncryptedData:
    """Encrypt `data` with a fresh key and IV, or with the key and IV of `keys` (a retry: the
    result's `keys.sha256` then tells whether these are the bytes encrypted the first time)."""
    if keys is None:
        key = secrets.token_bytes(KEY_BYTES)
        iv = secrets.token_bytes(IV_RANDOM_BYTES) + bytes(16 - IV_RANDOM_BYTES)
    else:
        key, iv = keys.key, keys.iv
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    ciphertext = encryptor.update(data) + encryptor.finalize()
    return EncryptedData(ciphertext, AttachmentKeys(key, iv, hashlib.sha256(ciphertext).digest()))


def encrypted_file(url: str, keys: AttachmentKeys) -> dict[str, Any]:
    """The spec's `EncryptedFile` object for ciphertext uploaded to `url` (an mxc URI)."""
    return {
        "url": url,
        "key": {
            "kty": "oct",
            "alg": "A256CTR",
            "ext": True,
            "key_ops": ["encrypt", "decrypt"],
            "k": _b64(keys.key, urlsafe=True),
        },
        "iv": _b64(keys.iv),
        "hashes": {"sha256": _b64(keys.sha256)},
        "v": "v2",
    }


def file_content(
    filename: str, mimetype: str, size: int, file: Mapping[str, Any]
) -> dict[str, Any]:
    """An `m.file` message whose file is encrypted (`file`, never a plain `url`)."""
    return {
        "msgtype": "m.file",
        "body": filename,
        "filename": filename,
        "info": {"mimetype": mimetype, "size": size},
        "file": dict(file),
    }


def check_size(size: int, limit: int | None) -> None:
    """Refuse a file bigger than the homeserver's upload limit (None: no limit announced)."""
    if limit is not None and size > limit:
        raise AttachmentTooLarge(
            f"the file is {size} bytes; the homeserver accepts at most {limit} bytes per upload"
        )


def parse_mxc(uri: str) -> tuple[str, str]:
    """(server name, media id) of `mxc://server/media_id`."""
    prefix = "mxc://"
    server, _, media_id = uri.removeprefix(prefix).partition("/")
    if not uri.startswith(prefix) or not server or not media_id or "/" in media_id:
        raise AttachmentError(f"not an mxc URI: {uri!r}")
    return server, media_id


class MediaRepo:
    """One account's view of the homeserver's media repository: the upload limit (read once),
    reserving an mxc, uploading ciphertext to it."""

    def __init__(self, http: MatrixHttp) -> None:
        self._http = http
        self._config: JsonDict | None = None

    async def max_upload_size(self) -> int | None:
        if self._config is None:
            self._config = await self._http.get(
                path("_matrix", "client", "v1", "media", "config"), label="media/config"
            )
        limit = self._config.get("m.upload.size")
        return limit if isinstance(limit, int) and not isinstance(limit, bool) else None

    async def check_size(self, size: int) -> None:
        check_size(size, await self.max_upload_size())

    async def reserve(self) -> str:
        """A new mxc URI to upload to later (Synapse keeps an unused one for 24 hours)."""
        created = await self._http.post(
            path("_matrix", "media", "v1", "create"), {}, label="media/create"
        )
        uri = created.get("content_uri")
        if not isinstance(uri, str):
            raise AttachmentError("the homeserver reserved no content_uri")
        parse_mxc(uri)
        return uri

    async def upload(self, uri: str, ciphertext: bytes) -> bool:
        """Upload to a reserved mxc. True if uploaded now, False if it already was (a retry)."""
        server, media_id = parse_mxc(uri)
        try:
            await self._http.request_bytes(
                "PUT",
                path("_matrix", "media", "v3", "upload", server, media_id),
                ciphertext,
                content_type=OCTET_STREAM,
                label="media/upload",
            )
        except MatrixError as e:
            if e.status == 409 and e.errcode == CANNOT_OVERWRITE:
                log.debug("media %s was already uploaded", media_id)
                return False
            raise
        return True


def _b64(data: bytes, *, urlsafe: bool = False) -> str:
    encoded = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    return encoded.rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Unpadded base64, standard or URL-safe alphabet."""
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
