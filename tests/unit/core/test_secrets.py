"""Secrets at rest are encrypted, private to the owner, written atomically, and shared safely
between processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from clubs.core.secrets import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    Vault,
    VaultError,
    ensure_secret_file,
)

ROOT = Path(__file__).resolve().parents[3]

# One process of the concurrency tests: waits for the go file, then opens the vault and sets its
# own names one by one (each set a whole read-modify-write), then prints the key it used.
WRITER = """
import sys, time
from pathlib import Path
from clubs.core.secrets import Vault

vault_path, who, count, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
(go.parent / f"ready-{who}").touch()
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("no go signal")
    time.sleep(0.001)
vault = Vault(vault_path)
for i in range(count):
    vault.set(f"{who}/{i}", f"value-{who}-{i}")
print(vault._fernet._signing_key.hex())
"""


def _run_writers(tmp_path: Path, processes: int, count: int, env: dict[str, str]) -> list[str]:
    """Start the writers, release them at once, and return what each printed."""
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path / "vault"), f"w{n}", str(count), str(go)],
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < processes:
            assert time.monotonic() < deadline, "writers did not start"
            assert all(p.poll() is None for p in procs), "a writer died before the start"
            time.sleep(0.01)
        go.touch()
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    return [out.strip() for out, _ in results]


def _env_without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (MASTER_KEY_ENV, MASTER_KEY_FILE_ENV)}


def test_values_round_trip_and_never_appear_in_plaintext(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault")
    vault.set("@bot:x/access_token", "syt_canary_token_value")
    assert Vault(tmp_path / "vault").get("@bot:x/access_token") == "syt_canary_token_value"
    for f in tmp_path.iterdir():
        assert b"syt_canary_token_value" not in f.read_bytes()
        assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    Vault(tmp_path / "vault").set("a", "b")
    with pytest.raises(VaultError, match="cannot decrypt the vault with the configured key"):
        Vault(tmp_path / "vault", key=Fernet.generate_key()).get("a")


def test_wrong_key_error_names_the_file_the_key_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MASTER_KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(MASTER_KEY_ENV, Fernet.generate_key().decode())
    Vault(tmp_path / "vault").set("a", "b")
    monkeypatch.setenv(MASTER_KEY_ENV, Fernet.generate_key().decode())
    with pytest.raises(VaultError) as caught:
        Vault(tmp_path / "vault").get("a")
    assert str(caught.value) == (
        f"{tmp_path / 'vault'}: cannot decrypt the vault with the configured key "
        "($CLUBS_MASTER_KEY): it was written with another key, or it is damaged; set "
        "$CLUBS_MASTER_KEY or $CLUBS_MASTER_KEY_FILE to the key it was written with, or "
        "restore the vault from a backup"
    )


def test_a_wrong_key_never_overwrites_the_vault(tmp_path: Path) -> None:
    Vault(tmp_path / "vault").set("a", "b")
    before = (tmp_path / "vault").read_bytes()
    with pytest.raises(VaultError, match="cannot decrypt"):
        Vault(tmp_path / "vault", key=Fernet.generate_key()).set("c", "d")
    assert (tmp_path / "vault").read_bytes() == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the vault is damaged (not an encrypted vault)"),
        (b'{"a": "b"}', "the vault is damaged (not an encrypted vault)"),
        (None, "the vault decrypts but its content is damaged (not a JSON object)"),
    ],
)
def test_damaged_vault_is_a_clear_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    key = Fernet.generate_key()
    path = tmp_path / "vault"
    path.write_bytes(content if content is not None else Fernet(key).encrypt(b"[1, 2"))
    with pytest.raises(VaultError) as caught:
        Vault(path, key=key).get("a")
    assert str(caught.value).startswith(f"{path}: {message}; restore it from a backup")


@pytest.mark.parametrize("where", ["env", "file", "key_file"])
def test_malformed_key_is_a_vault_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    monkeypatch.delenv(MASTER_KEY_FILE_ENV, raising=False)
    bad = tmp_path / "bad-key"
    bad.write_text("not-a-fernet-key\n")
    source = {"env": "$CLUBS_MASTER_KEY", "file": str(bad), "key_file": str(tmp_path / "vault.key")}
    if where == "env":
        monkeypatch.setenv(MASTER_KEY_ENV, "not-a-fernet-key")
    elif where == "file":
        monkeypatch.setenv(MASTER_KEY_FILE_ENV, str(bad))
    else:
        (tmp_path / "vault.key").write_text("not-a-fernet-key")
    with pytest.raises(VaultError) as caught:
        Vault(tmp_path / "vault")
    assert str(caught.value).startswith(
        f"{source[where]}: not a Fernet key (32 url-safe base64-encoded bytes); make one with"
    )


def test_missing_key_file_named_by_the_environment_is_a_vault_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    monkeypatch.setenv(MASTER_KEY_FILE_ENV, str(tmp_path / "absent"))
    with pytest.raises(VaultError) as caught:
        Vault(tmp_path / "vault")
    assert str(caught.value) == (
        f"{tmp_path / 'absent'}: cannot read the vault key named by $CLUBS_MASTER_KEY_FILE "
        "(No such file or directory); fix the path or the file's permissions"
    )


def test_key_from_environment_creates_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, Fernet.generate_key().decode())
    Vault(tmp_path / "vault").set("a", "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vault", "vault.lock"]
    assert stat.S_IMODE((tmp_path / "vault.lock").stat().st_mode) == 0o600


def test_the_lock_file_is_never_replaced(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault", key=Fernet.generate_key())
    vault.set("a", "1")
    inode = (tmp_path / "vault.lock").stat().st_ino
    vault.set("b", "2")
    vault.delete("a")
    assert (tmp_path / "vault.lock").stat().st_ino == inode


def test_setdefault_keeps_the_first_value(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault", key=Fernet.generate_key())
    assert vault.setdefault("k", "first") == "first"
    assert vault.setdefault("k", "second") == "first"
    assert vault.get("k") == "first"


def test_a_held_lock_times_out_with_a_clear_error(tmp_path: Path) -> None:
    key = Fernet.generate_key()
    holder = Vault(tmp_path / "vault", key=key)
    waiter = Vault(tmp_path / "vault", key=key, lock_timeout_s=0.05)
    with holder._locked(), pytest.raises(VaultError) as caught:
        waiter.set("a", "b")
    assert str(caught.value) == (
        f"{tmp_path / 'vault.lock'}: still locked by another process after 0.05 s; "
        "check for a stuck `clubs` process"
    )
    waiter.set("a", "b")
    assert holder.get("a") == "b"


def test_concurrent_writers_in_several_processes_lose_nothing(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    processes, count = 4, 40
    _run_writers(tmp_path, processes, count, {**_env_without_key(), MASTER_KEY_ENV: key})
    stored = Vault(tmp_path / "vault", key=key.encode())._read()
    missing = [
        f"w{n}/{i}"
        for n in range(processes)
        for i in range(count)
        if stored.get(f"w{n}/{i}") != f"value-w{n}-{i}"
    ]
    assert missing == []


def test_processes_creating_the_key_together_agree_on_one(tmp_path: Path) -> None:
    used = _run_writers(tmp_path, 4, 3, _env_without_key())
    assert len(set(used)) == 1
    vault = Vault(tmp_path / "vault", key=(tmp_path / "vault.key").read_bytes())
    assert [vault.get(f"w{n}/2") for n in range(4)] == [f"value-w{n}-2" for n in range(4)]
    assert stat.S_IMODE((tmp_path / "vault.key").stat().st_mode) == 0o600


def test_delete_and_missing(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault")
    assert vault.get("nothing") is None
    vault.set("a", "1")
    vault.delete("a")
    assert vault.get("a") is None


def test_secret_file_is_created_once(tmp_path: Path) -> None:
    target = tmp_path / "s" / "secret"
    assert ensure_secret_file(target) is True
    first = target.read_bytes()
    assert ensure_secret_file(target) is False
    assert target.read_bytes() == first
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
