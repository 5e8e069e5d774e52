"""Cross-signing for a bot account: master and self-signing keys, and the bot's signed device.

Element no longer exchanges room keys with devices that their owner has not cross-signed
(spec v1.18 "SHOULD NOT"; MSC4153), and matrix-nio cannot cross-sign. So each bot account gets an
Ed25519 master key, a self-signing key (signed by the master key) and a user-signing key, uploaded
with `/keys/device_signing/upload`; the self-signing key then signs the bot's one device and the
signature goes up with `/keys/signatures/upload`.

The bootstrap is idempotent and conservative: the private keys are written to the vault *before*
anything is uploaded (a crash in between re-uploads the same keys), a second run that finds our
master key on the server and our device signed changes nothing, and an existing master key is
never replaced unless the caller says `force=True` — a new master key orphans every signature
made with the old one. Private keys live only in the vault; they are never logged.

The upper half of this module is pure (building and checking signed key objects); the I/O is
`ensure_cross_signing` at the bottom.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clubs.core.errors import ClubsError, MatrixError
from clubs.core.http import DeviceId, JsonDict, MatrixHttp, UserId, cs
from clubs.core.secrets import Vault
from clubs.core.signing import (
    key_id,
    private_key_from_seed,
    public_key_of,
    seed_of,
    signed,
    verify_signature,
)

log = logging.getLogger(__name__)

MASTER, SELF_SIGNING, USER_SIGNING = "master", "self_signing", "user_signing"


class CrossSigningError(ClubsError):
    """Cross-signing cannot be set up without a decision by an operator, or the server refused."""


# --- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class CrossSigningKeys:
    """An account's three private cross-signing keys. Never printed, never logged."""

    master: Ed25519PrivateKey
    self_signing: Ed25519PrivateKey
    user_signing: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> CrossSigningKeys:
        return cls(
            Ed25519PrivateKey.generate(),
            Ed25519PrivateKey.generate(),
            Ed25519PrivateKey.generate(),
        )

    @property
    def master_public(self) -> str:
        return public_key_of(self.master)

    @property
    def self_signing_public(self) -> str:
        return public_key_of(self.self_signing)

    @property
    def user_signing_public(self) -> str:
        return public_key_of(self.user_signing)

    def to_secret(self) -> str:
        """Serialise the seeds for the vault (one secret, so the three are written atomically)."""
        return json.dumps(
            {
                MASTER: seed_of(self.master),
                SELF_SIGNING: seed_of(self.self_signing),
                USER_SIGNING: seed_of(self.user_signing),
            }
        )

    @classmethod
    def from_secret(cls, text: str) -> CrossSigningKeys:
        try:
            seeds = json.loads(text)
            return cls(
                private_key_from_seed(seeds[MASTER]),
                private_key_from_seed(seeds[SELF_SIGNING]),
                private_key_from_seed(seeds[USER_SIGNING]),
            )
        except (ValueError, KeyError, TypeError):
            raise CrossSigningError("the stored cross-signing keys are damaged") from None

    def __repr__(self) -> str:
        return f"CrossSigningKeys(master={self.master_public!r})"


def cross_signing_key(user_id: str, usage: str, public_key: str) -> JsonDict:
    """An unsigned CrossSigningKey object (spec: `/keys/device_signing/upload`)."""
    return {"user_id": user_id, "usage": [usage], "keys": {key_id(public_key): public_key}}


def device_signing_upload_body(user_id: str, keys: CrossSigningKeys) -> JsonDict:
    """The body of `/keys/device_signing/upload`: master, and the two subkeys signed by it."""
    master = keys.master_public
    return {
        "master_key": cross_signing_key(user_id, MASTER, master),
        "self_signing_key": signed(
            cross_signing_key(user_id, SELF_SIGNING, keys.self_signing_public),
            user_id,
            master,
            keys.master,
        ),
        "user_signing_key": signed(
            cross_signing_key(user_id, USER_SIGNING, keys.user_signing_public),
            user_id,
            master,
            keys.master,
        ),
    }


def device_signature_body(device_keys: Mapping[str, Any], keys: CrossSigningKeys) -> JsonDict:
    """The body of `/keys/signatures/upload` that signs one of our devices with our self-signing
    key. The object sent is the device's key object with only the new signature."""
    user_id = str(device_keys["user_id"])
    device_id = str(device_keys["device_id"])
    obj = {k: v for k, v in device_keys.items() if k not in ("signatures", "unsigned")}
    sig = signed(obj, user_id, keys.self_signing_public, keys.self_signing)
    return {user_id: {device_id: sig}}


# --- verification (pure, never raises on hostile input) ----------------------------------------


def single_ed25519_key(key: Any, user_id: str, usage: str) -> str | None:
    """The public key of a CrossSigningKey object if it is well-formed for `user_id` and
    `usage` and has exactly one ed25519 key whose id names it; otherwise None."""
    if not isinstance(key, Mapping) or key.get("user_id") != user_id:
        return None
    usages = key.get("usage")
    if not isinstance(usages, list) or usage not in usages:
        return None
    keys = key.get("keys")
    if not isinstance(keys, Mapping) or len(keys) != 1:
        return None
    ((kid, public),) = keys.items()
    if not isinstance(public, str) or kid != key_id(public):
        return None
    return public


def device_ed25519(device_keys: Any, user_id: str) -> tuple[str, str, str] | None:
    """(device_id, ed25519, curve25519) of a self-signed device key object of `user_id`, or None
    if it is malformed or its self-signature does not verify."""
    if not isinstance(device_keys, Mapping) or device_keys.get("user_id") != user_id:
        return None
    device_id = device_keys.get("device_id")
    keys = device_keys.get("keys")
    if not isinstance(device_id, str) or not isinstance(keys, Mapping):
        return None
    ed = keys.get(f"ed25519:{device_id}")
    curve = keys.get(f"curve25519:{device_id}")
    if not isinstance(ed, str) or not isinstance(curve, str):
        return None
    if not verify_signature(device_keys, user_id, device_id, ed):
        return None
    return device_id, ed, curve


def verify_cross_signed(
    device_keys: Any, master_key: Any, self_signing_key: Any, user_id: str
) -> bool:
    """Whether `device_keys` is a valid device of `user_id` cross-signed by its owner.

    True only if: the master key is a well-formed master key of `user_id`; the self-signing key is
    a self-signing key of `user_id` signed by that master key; the device's key object is
    self-signed by its own ed25519 key and signed by that self-signing key. Which master key to
    trust (TOFU, or verified) is the caller's decision.
    """
    master = single_ed25519_key(master_key, user_id, MASTER)
    ssk = single_ed25519_key(self_signing_key, user_id, SELF_SIGNING)
    if master is None or ssk is None:
        return False
    if not verify_signature(self_signing_key, user_id, master, master):
        return False
    if device_ed25519(device_keys, user_id) is None:
        return False
    return verify_signature(device_keys, user_id, ssk, ssk)


# --- I/O --------------------------------------------------------------------------------------


def _vault_name(user_id: str) -> str:
    return f"{user_id}/cross_signing"


def stored_keys(vault: Vault, user_id: str) -> CrossSigningKeys | None:
    secret = vault.get(_vault_name(user_id))
    return CrossSigningKeys.from_secret(secret) if secret is not None else None


async def query_own_keys(http: MatrixHttp, user_id: str) -> JsonDict:
    """`/keys/query` for one user (all devices)."""
    return await http.post(cs("keys", "query"), {"device_keys": {user_id: []}}, label="keys/query")


async def _upload_with_uia(
    http: MatrixHttp, url: str, body: JsonDict, user_id: str, password: str | None
) -> None:
    """POST `body`, completing user-interactive auth with the account's password if asked.

    Synapse lets an account upload its first cross-signing keys without UIA (MSC3967); replacing
    them needs it.
    """
    try:
        await http.post(url, body, label="keys/device_signing/upload")
        return
    except MatrixError as e:
        if e.status != 401 or "flows" not in e.body:
            raise
        session = e.body.get("session")
    if password is None:
        raise CrossSigningError(
            f"{user_id}: the server asks for the account password to upload cross-signing keys, "
            "and none is stored"
        )
    auth: JsonDict = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    }
    if isinstance(session, str):
        auth["session"] = session
    await http.post(url, {**body, "auth": auth}, label="keys/device_signing/upload")


@dataclass(frozen=True)
class CrossSigningState:
    """What `ensure_cross_signing` found or did."""

    master_key: str
    self_signing_key: str
    uploaded_keys: bool
    signed_device: bool

    @property
    def changed(self) -> bool:
        return self.uploaded_keys or self.signed_device


async def ensure_cross_signing(
    http: MatrixHttp,
    vault: Vault,
    user_id: UserId,
    device_id: DeviceId,
    *,
    password: str | None = None,
    force: bool = False,
) -> CrossSigningState:
    """Make sure `user_id` has our cross-signing keys on the server and `device_id` is signed.

    `http` carries the account's own token. The device's keys must already be uploaded.
    `password` is used only if the server asks for user-interactive auth (replacing keys);
    it defaults to the password the vault stores for the account.

    Raises CrossSigningError if the server has a master key that the vault does not hold (an
    operator decides: restore the vault, or pass `force=True` to replace it, which orphans every
    signature made with the old key).
    """
    if password is None:
        password = vault.get(f"{user_id}/password")
    keys = stored_keys(vault, user_id)
    found = await query_own_keys(http, user_id)
    server_master = single_ed25519_key(found.get("master_keys", {}).get(user_id), user_id, MASTER)
    server_ssk_obj = found.get("self_signing_keys", {}).get(user_id)
    server_ssk = single_ed25519_key(server_ssk_obj, user_id, SELF_SIGNING)

    ours_on_server = (
        keys is not None
        and server_master == keys.master_public
        and server_ssk == keys.self_signing_public
    )
    uploaded = False
    if force or not ours_on_server:
        if server_master is not None and not force:
            if keys is not None and server_master == keys.master_public:
                raise CrossSigningError(
                    f"{user_id}: the server has our master key but a different self-signing key; "
                    "re-run with force=True to upload a fresh set of cross-signing keys"
                )
            raise CrossSigningError(
                f"{user_id}: the server has a cross-signing master key that this vault does not "
                "hold; restore the vault that created it, or re-run with force=True to replace it "
                "(every earlier signature made with it will no longer count)"
            )
        if keys is None or force:
            keys = CrossSigningKeys.generate()
            vault.set(
                _vault_name(user_id), keys.to_secret()
            )  # before upload: a crash loses nothing
        await _upload_with_uia(
            http,
            cs("keys", "device_signing", "upload"),
            device_signing_upload_body(user_id, keys),
            user_id,
            password,
        )
        uploaded = True
        log.info("uploaded cross-signing keys of %s", user_id)
        found = await query_own_keys(http, user_id)

    if keys is None:  # unreachable: our keys are on the server, or we have just uploaded them
        raise CrossSigningError(f"{user_id}: no cross-signing keys after the bootstrap")
    device = found.get("device_keys", {}).get(user_id, {}).get(device_id)
    if device_ed25519(device, user_id) is None:
        raise CrossSigningError(
            f"{user_id}: device {device_id} has no valid device keys on the server; "
            "upload the device keys before cross-signing"
        )
    ssk_obj = found.get("self_signing_keys", {}).get(user_id)
    master_obj = found.get("master_keys", {}).get(user_id)
    signed_device = False
    if not verify_cross_signed(device, master_obj, ssk_obj, user_id):
        resp = await http.post(
            cs("keys", "signatures", "upload"),
            device_signature_body(device, keys),
            label="keys/signatures/upload",
        )
        failures = resp.get("failures")
        if failures:
            raise CrossSigningError(
                f"{user_id}: the server refused the signature of device {device_id}: "
                f"{json.dumps(failures)[:300]}"
            )
        signed_device = True
        log.info("signed device %s of %s with its self-signing key", device_id, user_id)
    return CrossSigningState(keys.master_public, keys.self_signing_public, uploaded, signed_device)
