"""Encrypted attachments follow the spec: nio (another implementation) decrypts them, refuses
tampered ciphertext, and the `m.file` content carries an EncryptedFile, never a plain url."""

from __future__ import annotations

import base64
import hashlib

import pytest
from nio.crypto.attachments import decrypt_attachment
from nio.exceptions import EncryptionError

from clubs.core.attachments import (
    AttachmentError,
    AttachmentKeys,
    AttachmentTooLarge,
    check_size,
    encrypt,
    encrypted_file,
    file_content,
    parse_mxc,
)

ICS = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:Club\r\nEND:VEVENT\r\n"
MXC = "mxc://clubs.test/AbCdEf123"


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_")


def test_file_content_has_an_encrypted_file_and_no_plain_url() -> None:
    sealed = encrypt(ICS)
    content = file_content(
        "session.ics", "text/calendar", len(ICS), encrypted_file(MXC, sealed.keys)
    )
    assert "url" not in content
    assert {k: v for k, v in content.items() if k != "file"} == {
        "msgtype": "m.file",
        "body": "session.ics",
        "filename": "session.ics",
        "info": {"mimetype": "text/calendar", "size": len(ICS)},
    }
    file = content["file"]
    assert set(file) == {"url", "key", "iv", "hashes", "v"}
    assert file["url"] == MXC
    assert file["v"] == "v2"
    key = file["key"]
    assert {k: v for k, v in key.items() if k != "k"} == {
        "kty": "oct",
        "alg": "A256CTR",
        "ext": True,
        "key_ops": ["encrypt", "decrypt"],
    }
    assert set(key["k"]).isdisjoint("=+/")  # URL-safe, unpadded
    assert len(unb64(key["k"])) == 32
    assert "=" not in file["iv"]
    assert file["iv"].endswith("AAAAAAAAAAA")  # 8 random bytes, then a zero 64-bit counter
    assert len(unb64(file["iv"])) == 16
    assert "=" not in file["hashes"]["sha256"]
    assert unb64(file["hashes"]["sha256"]) == hashlib.sha256(sealed.ciphertext).digest()


def test_nio_decrypts_what_we_encrypt() -> None:
    data = bytes(range(256)) * 400 + b"tail"  # many AES blocks: the counter must run as in nio
    sealed = encrypt(data)
    file = encrypted_file(MXC, sealed.keys)
    assert sealed.ciphertext != data
    assert len(sealed.ciphertext) == len(data)
    plain = decrypt_attachment(
        sealed.ciphertext, file["key"]["k"], file["hashes"]["sha256"], file["iv"]
    )
    assert plain == data


def test_tampered_ciphertext_is_refused() -> None:
    sealed = encrypt(ICS)
    file = encrypted_file(MXC, sealed.keys)
    tampered = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(EncryptionError, match="SHA-256"):
        decrypt_attachment(tampered, file["key"]["k"], file["hashes"]["sha256"], file["iv"])


def test_every_file_gets_a_fresh_key_and_iv() -> None:
    first, second = encrypt(ICS), encrypt(ICS)
    assert first.keys.key != second.keys.key
    assert first.keys.iv[:8] != second.keys.iv[:8]
    assert first.ciphertext != second.ciphertext


def test_a_retry_with_the_same_keys_gives_the_same_ciphertext() -> None:
    first = encrypt(ICS)
    again = encrypt(ICS, first.keys)
    assert again.ciphertext == first.ciphertext
    assert again.keys == first.keys
    other = encrypt(ICS + b"changed", first.keys)
    assert other.keys.sha256 != first.keys.sha256  # how a retry notices other bytes


def test_keys_survive_their_json_form_and_hide_in_reprs() -> None:
    keys = encrypt(ICS).keys
    assert AttachmentKeys.from_json(keys.to_json()) == keys
    assert keys.to_json()["k"] not in repr(keys)
    assert repr(encrypt(ICS)) == f"EncryptedData(<{len(ICS)} bytes>)"
    with pytest.raises(AttachmentError, match="damaged"):
        AttachmentKeys.from_json({"k": "AAAA", "iv": "AAAA", "sha256": "AAAA"})
    for damaged in ({"iv": "AAAA"}, {"k": None, "iv": "AAAA", "sha256": "AAAA"}, ["k"]):
        with pytest.raises(AttachmentError, match="damaged"):
            AttachmentKeys.from_json(damaged)  # type: ignore[arg-type]


def test_files_above_the_upload_limit_are_refused() -> None:
    check_size(100, 100)
    check_size(10**12, None)
    with pytest.raises(AttachmentTooLarge) as e:
        check_size(101, 100)
    assert str(e.value) == (
        "the file is 101 bytes; the homeserver accepts at most 100 bytes per upload"
    )


def test_mxc_uris_are_parsed_strictly() -> None:
    assert parse_mxc(MXC) == ("clubs.test", "AbCdEf123")
    assert parse_mxc("mxc://localhost:8448/x") == ("localhost:8448", "x")
    for bad in ("https://clubs.test/x", "mxc://clubs.test", "mxc:///x", "mxc://a/b/c"):
        with pytest.raises(AttachmentError, match="not an mxc URI"):
            parse_mxc(bad)
