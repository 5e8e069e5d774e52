"""The backup file's sealed stream and what a backup leaves out (no server needed)."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest

from clubs.backup import CHUNK, BackupError, _wanted, open_stream, seal_stream

KEY = os.urandom(32)


def sealed(data: bytes, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    seal_stream(key, io.BytesIO(data), out)
    return out.getvalue()


def opened(blob: bytes, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    open_stream(key, io.BytesIO(blob), out, name="b.backup", source="$CLUBS_MASTER_KEY")
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 2 * CHUNK + 5])
def test_round_trip(size: int) -> None:
    data = os.urandom(size)
    blob = sealed(data)
    # A short random plaintext can occur in ciphertext by chance; 16+ bytes cannot.
    assert size < 16 or data[:64] not in blob
    assert opened(blob) == data


def test_another_key_is_refused() -> None:
    with pytest.raises(BackupError) as err:
        opened(sealed(b"state"), os.urandom(32))
    assert str(err.value) == (
        "b.backup: cannot open the backup with the master key from $CLUBS_MASTER_KEY: it was "
        "made with another key, or the file is damaged"
    )


def test_a_backup_cut_at_a_chunk_boundary_is_refused() -> None:
    blob = sealed(os.urandom(2 * CHUNK + 5))
    first = 8 + 16 + 4 + CHUNK + 16  # header and the first whole chunk
    with pytest.raises(BackupError) as err:
        opened(blob[:first])
    assert str(err.value) == "b.backup: the backup is cut short (chunk 1 missing)"


def test_reordered_or_altered_chunks_are_refused() -> None:
    blob = bytearray(sealed(os.urandom(2 * CHUNK)))
    blob[100] ^= 1
    with pytest.raises(BackupError):
        opened(bytes(blob))
    with pytest.raises(BackupError) as err:
        opened(b"not a backup at all")
    assert str(err.value) == "b.backup: not a Matrix Clubs backup"


@pytest.mark.parametrize(
    ("rel", "kept"),
    [
        ("synapse/signing.key", True),
        ("synapse/secrets/macaroon_secret_key", True),
        ("synapse/media_store/local_content/ab/cd/ef", True),
        ("synapse/media_store/local_thumbnails/ab/cd/ef/1-1-image-png", True),
        ("synapse/media_store/remote_content/x/ab/cd", False),
        ("synapse/media_store/url_cache/ab", False),
        ("synapse/homeserver.db", False),  # added separately, as a consistent copy
        ("synapse/homeserver.log", False),
        ("bots/bots.db", True),
        ("bots/bots.db-wal", False),
        ("secrets/vault", True),
        ("secrets/vault.key", False),
        ("secrets/vault.lock", False),
        ("postgres/data/base/1/1259", False),
        ("run/supervisor.pid", False),
        ("provisioning/tokens.sqlite", True),
    ],
)
def test_what_a_backup_holds(rel: str, kept: bool) -> None:
    assert _wanted(Path(rel)) is kept


def test_a_key_that_is_not_a_master_key_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clubs.backup import master_key

    monkeypatch.delenv("CLUBS_MASTER_KEY", raising=False)
    monkeypatch.setenv("CLUBS_MASTER_KEY_FILE", str(tmp_path / "k"))
    (tmp_path / "k").write_text("short")
    with pytest.raises(BackupError) as err:
        master_key(tmp_path)
    assert str(err.value) == f"{tmp_path}/k: not a master key (32 url-safe base64-encoded bytes)"
    key = os.urandom(32)
    (tmp_path / "k").write_bytes(base64.urlsafe_b64encode(key))
    assert master_key(tmp_path) == (key, f"{tmp_path}/k")
