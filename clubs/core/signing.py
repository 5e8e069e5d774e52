"""Signing JSON the Matrix way: canonical JSON, Ed25519, unpadded base64.

Pure functions only (no I/O), so they are tested against the specification's own test vectors
(spec appendices, "Signing JSON"). A signature covers the object without its `signatures` and
`unsigned` members; it is stored under `signatures[<entity>][<key id>]`.

Verification never raises on hostile input: anything malformed is simply "not verified".
"""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Mapping
from typing import Any

from canonicaljson import encode_canonical_json
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

ED25519 = "ed25519"


def encode_base64(data: bytes) -> str:
    """Unpadded standard base64, as the spec uses for keys and signatures."""
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def decode_base64(text: str) -> bytes:
    """Decode unpadded (or padded) standard base64. Raises ValueError on anything else."""
    stripped = text.rstrip("=")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except binascii.Error as e:
        raise ValueError("not base64") from e


def key_id(name: str) -> str:
    """`ed25519:<name>`: a device id for device keys, the public key for cross-signing keys."""
    return f"{ED25519}:{name}"


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: canonical JSON of `obj` without `signatures` and `unsigned`."""
    signable = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return encode_canonical_json(signable)


def public_key_of(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return encode_base64(raw)


def signature(obj: Mapping[str, Any], private_key: Ed25519PrivateKey) -> str:
    """The unpadded base64 Ed25519 signature of `obj`'s canonical JSON."""
    return encode_base64(private_key.sign(canonical_json(obj)))


def signed(
    obj: Mapping[str, Any], entity: str, name: str, private_key: Ed25519PrivateKey
) -> dict[str, Any]:
    """A copy of `obj` with one more signature, keeping the signatures it already has."""
    out = copy.deepcopy(dict(obj))
    out.pop("unsigned", None)
    sigs = out.get("signatures")
    if not isinstance(sigs, dict):
        sigs = {}
    sigs.setdefault(entity, {})[key_id(name)] = signature(obj, private_key)
    out["signatures"] = sigs
    return out


def verify_signature(obj: Any, entity: str, name: str, public_key: Any) -> bool:
    """Whether `obj` carries a valid signature by `public_key` (unpadded base64) under
    `signatures[entity]["ed25519:" + name]`."""
    if not isinstance(obj, Mapping) or not isinstance(public_key, str):
        return False
    sigs = obj.get("signatures")
    if not isinstance(sigs, Mapping):
        return False
    by_entity = sigs.get(entity)
    if not isinstance(by_entity, Mapping):
        return False
    sig = by_entity.get(key_id(name))
    if not isinstance(sig, str):
        return False
    try:
        raw_key = decode_base64(public_key)
        raw_sig = decode_base64(sig)
        if len(raw_key) != 32 or len(raw_sig) != 64:
            return False
        Ed25519PublicKey.from_public_bytes(raw_key).verify(raw_sig, canonical_json(obj))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def private_key_from_seed(seed: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from its 32-byte seed in unpadded base64."""
    raw = decode_base64(seed)
    if len(raw) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(raw)


def seed_of(private_key: Ed25519PrivateKey) -> str:
    return encode_base64(private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
