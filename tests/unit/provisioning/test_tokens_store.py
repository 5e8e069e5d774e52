"""The token store keeps hashes only and refuses a database newer than the code."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from clubs.core.errors import ClubsError
from clubs.provisioning.apply import crash_hook_from_env
from clubs.provisioning.discover import record_status
from clubs.provisioning.tokens import TokenStore, TokenStoreError, token_hash


def test_store_keeps_only_the_hash(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "t.sqlite")
    rec = store.add("n", "anna", "SECRET-token-value", expiry_ms=10_000, uses_allowed=1)
    store.close()
    raw = (tmp_path / "t.sqlite").read_bytes()
    assert b"SECRET-token-value" not in raw
    assert rec.token_sha256 == token_hash("SECRET-token-value")
    assert (tmp_path / "t.sqlite").stat().st_mode & 0o077 == 0
    again = TokenStore(tmp_path / "t.sqlite")
    assert [r.person for r in again.list("n")] == ["anna"]
    again.mark_revoked(rec.id)
    got = again.get(rec.id)
    assert got is not None
    assert got.revoked


def test_newer_database_is_refused(tmp_path: Path) -> None:
    TokenStore(tmp_path / "t.sqlite").close()
    db = sqlite3.connect(tmp_path / "t.sqlite")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(TokenStoreError, match="newer than this code"):
        TokenStore(tmp_path / "t.sqlite")


def test_token_status_rules(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "t.sqlite")
    rec = store.add("n", "p", "x", expiry_ms=1000, uses_allowed=1)
    live = {"uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": 2000}
    assert record_status(rec, live, now_ms=500) == "live"
    assert record_status(rec, live, now_ms=3000) == "expired"
    assert record_status(rec, {**live, "completed": 1}, now_ms=500) == "used"
    assert record_status(rec, {**live, "pending": 1}, now_ms=500) == "used"
    assert record_status(rec, None, now_ms=500) == "revoked"
    store.close()


def test_crash_hook_is_read_from_the_environment() -> None:
    assert crash_hook_from_env({}) is None
    assert crash_hook_from_env({"CLUBS_CRASH_AT_WRITE": "3"}) is not None
    with pytest.raises(ClubsError, match="positive integer"):
        crash_hook_from_env({"CLUBS_CRASH_AT_WRITE": "zero"})
