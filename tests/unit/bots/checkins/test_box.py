"""Answers at rest: AES-GCM, bound to their member; the key comes from the vault."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from clubs.bots.checkins.box import Box, BoxError
from clubs.core.secrets import MASTER_KEY_ENV, Vault


def test_a_sealed_answer_opens_only_for_its_member() -> None:
    box = Box(os.urandom(32))
    blob = box.seal("мне было тяжело".encode(), "checkin|a")
    assert "тяжело".encode() not in blob
    assert box.open(blob, "checkin|a").decode() == "мне было тяжело"
    with pytest.raises(BoxError):
        box.open(blob, "checkin|b")
    with pytest.raises(BoxError):
        Box(os.urandom(32)).open(blob, "checkin|a")
    with pytest.raises(BoxError):
        box.open(blob[:-1] + bytes([blob[-1] ^ 1]), "checkin|a")
    with pytest.raises(BoxError):
        box.open(b"short", "checkin|a")


def test_the_key_is_created_once_in_the_vault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, Fernet.generate_key().decode())
    vault = Vault(tmp_path / "vault")
    first = Box.from_vault(vault)
    blob = first.seal_json({"mood": 3}, "x")
    assert Box.from_vault(vault).open_json(blob, "x") == {"mood": 3}
    assert "key" not in repr(first).replace("<key>", "")
