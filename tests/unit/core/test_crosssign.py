"""Signing JSON, cross-signing objects and the trust decision, without a server."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clubs.core.crosssign import (
    CrossSigningError,
    CrossSigningKeys,
    device_signature_body,
    device_signing_upload_body,
    verify_cross_signed,
)
from clubs.core.signing import (
    decode_base64,
    encode_base64,
    private_key_from_seed,
    public_key_of,
    signed,
    verify_signature,
)
from clubs.core.trust import MasterKeyPins, TrustStoreError, evaluate_user

# The specification's signing test vectors (appendices, cryptographic test vectors: JSON signing).
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SPEC_PUBLIC = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"
SPEC_EMPTY = (
    "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
)
SPEC_ONE_TWO = (
    "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
)

USER = "@bot:test.local"


def test_signing_matches_the_spec_test_vectors() -> None:
    key = private_key_from_seed(SPEC_SEED)
    assert public_key_of(key) == SPEC_PUBLIC
    assert signed({}, "domain", "1", key) == {"signatures": {"domain": {"ed25519:1": SPEC_EMPTY}}}
    one_two = signed({"one": 1, "two": "Two"}, "domain", "1", key)
    assert one_two["signatures"]["domain"]["ed25519:1"] == SPEC_ONE_TWO
    assert verify_signature(one_two, "domain", "1", SPEC_PUBLIC)


def test_signature_ignores_unsigned_and_other_signatures_but_not_content() -> None:
    key = private_key_from_seed(SPEC_SEED)
    obj = signed({"one": 1, "two": "Two"}, "domain", "1", key)
    decorated = {**obj, "unsigned": {"age": 5}}
    decorated["signatures"] = {**obj["signatures"], "other": {"ed25519:x": "AAAA"}}
    assert verify_signature(decorated, "domain", "1", SPEC_PUBLIC)
    assert not verify_signature({**obj, "two": "Three"}, "domain", "1", SPEC_PUBLIC)
    assert not verify_signature(obj, "domain", "2", SPEC_PUBLIC)
    assert not verify_signature(obj, "elsewhere", "1", SPEC_PUBLIC)


@pytest.mark.parametrize(
    "hostile",
    [
        None,
        [],
        "x",
        {},
        {"signatures": "x"},
        {"signatures": {"domain": {"ed25519:1": 5}}},
        {"signatures": {"domain": {"ed25519:1": "!!notbase64"}}},
        {"a": float("nan"), "signatures": {"domain": {"ed25519:1": SPEC_EMPTY}}},
        {"a": "\ud800", "signatures": {"domain": {"ed25519:1": SPEC_EMPTY}}},
    ],
)
def test_verification_of_hostile_input_is_false_not_an_exception(hostile: Any) -> None:
    assert verify_signature(hostile, "domain", "1", SPEC_PUBLIC) is False
    assert verify_signature({}, "domain", "1", "not a key") is False


def test_unpadded_base64_round_trips() -> None:
    for n in range(0, 40):
        data = bytes(range(n))
        text = encode_base64(data)
        assert "=" not in text
        assert decode_base64(text) == data
    with pytest.raises(ValueError, match="base64"):
        decode_base64("a*b")


# --- cross-signing -----------------------------------------------------------------------------


def device(user_id: str, device_id: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    """A self-signed device key object, as `/keys/upload` would publish it."""
    obj = {
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"ed25519:{device_id}": public_key_of(key), f"curve25519:{device_id}": "curve"},
    }
    return signed(obj, user_id, device_id, key)


def cross_signed(user_id: str = USER) -> tuple[CrossSigningKeys, dict[str, Any], dict[str, Any]]:
    """Keys, the upload body and a device signed with them (as the server would merge it)."""
    keys = CrossSigningKeys.generate()
    upload = device_signing_upload_body(user_id, keys)
    dev = device(user_id, "DEV", Ed25519PrivateKey.generate())
    sig = device_signature_body(dev, keys)[user_id]["DEV"]["signatures"][user_id]
    dev["signatures"][user_id].update(sig)
    return keys, upload, dev


def test_bootstrap_objects_verify_as_cross_signed() -> None:
    _, upload, dev = cross_signed()
    assert upload["master_key"]["usage"] == ["master"]
    assert verify_cross_signed(dev, upload["master_key"], upload["self_signing_key"], USER)


def test_device_signature_body_carries_only_the_new_signature_and_no_unsigned() -> None:
    keys = CrossSigningKeys.generate()
    dev = {**device(USER, "DEV", Ed25519PrivateKey.generate()), "unsigned": {"name": "x"}}
    body = device_signature_body(dev, keys)[USER]["DEV"]
    assert "unsigned" not in body
    assert list(body["signatures"][USER]) == [f"ed25519:{keys.self_signing_public}"]


def test_not_cross_signed_when_any_link_is_missing_or_forged() -> None:
    _, upload, dev = cross_signed()
    master, ssk = upload["master_key"], upload["self_signing_key"]
    unsigned_dev = device(USER, "DEV", Ed25519PrivateKey.generate())
    assert not verify_cross_signed(unsigned_dev, master, ssk, USER)
    # A self-signing key that the master key did not sign.
    other = cross_signed()[1]
    assert not verify_cross_signed(dev, master, other["self_signing_key"], USER)
    # The right keys, claimed for another user.
    assert not verify_cross_signed(dev, master, ssk, "@mallory:test.local")
    # The master key in the self-signing slot and vice versa.
    assert not verify_cross_signed(dev, ssk, master, USER)
    # A device whose content was changed after signing (a new curve key slipped in).
    tampered = copy.deepcopy(dev)
    tampered["keys"]["curve25519:DEV"] = "evil"
    assert not verify_cross_signed(tampered, master, ssk, USER)
    # Garbage never raises.
    assert not verify_cross_signed(None, "x", 3, USER)


def test_stored_keys_round_trip_and_never_print() -> None:
    keys = CrossSigningKeys.generate()
    again = CrossSigningKeys.from_secret(keys.to_secret())
    assert again.master_public == keys.master_public
    assert again.self_signing_public == keys.self_signing_public
    assert again.user_signing_public == keys.user_signing_public
    assert keys.to_secret() not in repr(keys)
    with pytest.raises(CrossSigningError, match="damaged"):
        CrossSigningKeys.from_secret('{"master": "x"}')


# --- trust policy ------------------------------------------------------------------------------


def query_for(upload: dict[str, Any], *devices: dict[str, Any]) -> dict[str, Any]:
    return {
        "device_keys": {USER: {d["device_id"]: d for d in devices}},
        "master_keys": {USER: upload["master_key"]},
        "self_signing_keys": {USER: upload["self_signing_key"]},
    }


def test_trust_on_first_use_trusts_only_cross_signed_devices() -> None:
    keys, upload, dev = cross_signed()
    insecure = device(USER, "NEW", Ed25519PrivateKey.generate())
    verdict = evaluate_user(query_for(upload, dev, insecure), USER, None)
    assert verdict.master_key == keys.master_public
    assert not verdict.identity_changed
    assert set(verdict.trusted) == {"DEV"}
    ed = dev["keys"]["ed25519:DEV"]
    assert verdict.trusts("DEV", ed, "curve")
    assert not verdict.trusts("DEV", ed, "another curve")  # the exact keys, not just the id
    assert not verdict.trusts("NEW", insecure["keys"]["ed25519:NEW"], "curve")


def test_changed_master_key_withholds_everything_until_accepted() -> None:
    old_keys, _, _ = cross_signed()
    _, upload, dev = cross_signed()
    verdict = evaluate_user(query_for(upload, dev), USER, old_keys.master_public)
    assert verdict.identity_changed
    assert verdict.trusted == {}


def test_user_without_cross_signing_gets_nothing() -> None:
    dev = device(USER, "DEV", Ed25519PrivateKey.generate())
    verdict = evaluate_user({"device_keys": {USER: {"DEV": dev}}}, USER, None)
    assert verdict.master_key is None
    assert verdict.trusted == {}


def test_device_listed_under_another_id_is_not_trusted() -> None:
    _, upload, dev = cross_signed()
    query = query_for(upload)
    query["device_keys"][USER] = {"OTHER": dev}
    assert evaluate_user(query, USER, None).trusted == {}


def test_pins_survive_a_restart_and_are_only_replaced_on_purpose(tmp_path: Path) -> None:
    pins = MasterKeyPins(tmp_path / "pins.json")
    assert pins.pin(USER, "first")
    assert not pins.pin(USER, "second")
    again = MasterKeyPins(tmp_path / "pins.json")
    assert again.get(USER) == "first"
    again.replace(USER, "second")
    assert MasterKeyPins(tmp_path / "pins.json").get(USER) == "second"
    assert (tmp_path / "pins.json").stat().st_mode & 0o077 == 0
    (tmp_path / "pins.json").write_text('{"@a:b": 1}')
    with pytest.raises(TrustStoreError, match="damaged"):
        MasterKeyPins(tmp_path / "pins.json")
