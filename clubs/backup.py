"""`clubs backup` / `clubs restore`: a city's whole state in one file encrypted with the master key.

What a backup holds (`var/` as `make up` and the compose stack lay it out):
- Synapse's database: SQLite through SQLite's online backup API (a consistent copy while
  Synapse runs), PostgreSQL through the wheel's `pg_dump -Fc`. Either way without the rows of
  `e2e_one_time_keys_json`: one-time keys restored would be handed out a second time and break
  the decryption of new messages (Synapse's backup advice);
- the media store's `local_content` and `local_thumbnails` (the only copy of members'
  uploads), not the caches of remote media and URL previews;
- the signing key (events and federation are signed with it) and Synapse's secrets;
- the bots' stores (their E2EE sessions: without them old messages cannot be decrypted), the
  provisioning store, the bridge's files and the vault, each SQLite file copied consistently.

Not in it: logs, pid files, the running PostgreSQL cluster's files (the dump replaces them), and
the master key itself (`var/secrets/vault.key`, `$CLUBS_MASTER_KEY` or `$CLUBS_MASTER_KEY_FILE`):
the backup is encrypted with it, so it must be kept apart, or the backup cannot be opened.

File format: `CLUBSBK1`, a 16-byte salt, then a gzip'd tar in chunks of at most 1 MiB, each
sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the master key and the salt; a
chunk's nonce is its number, and the last chunk is marked, so a reordered, cut or altered file
is refused whole before anything is written.

`restore` only writes into an empty var directory (Synapse must never start on half a state),
checks the whole file first, then unpacks, and loads a PostgreSQL dump into a fresh database.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import shutil
import sqlite3
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clubs import __version__
from clubs.core.errors import ClubsError
from clubs.core.postgres import DatabaseChoice, EmbeddedPostgres, bin_dir, choose_database
from clubs.core.secrets import MASTER_KEY_ENV, MASTER_KEY_FILE_ENV

log = logging.getLogger(__name__)

MAGIC = b"CLUBSBK1"
CHUNK = 1 << 20
MANIFEST = "manifest.json"
PG_DUMP = "synapse.pgdump"
SKIP_TABLE = "e2e_one_time_keys_json"
# Media Synapse can fetch or make again; everything else under media_store is ours alone.
MEDIA_CACHES = {"remote_content", "remote_thumbnail", "url_cache", "url_cache_thumbnails"}
SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".lock", ".pid", ".tmp")
# pid files; the cluster's files (dumped instead); a migration's snapshot and the SQLite
# database it left behind (kept for a while by hand, not part of the city's state).
SKIP_TOP = {"run", "postgres", "migrate-to-postgres"}
SQLITE_HEADER = b"SQLite format 3\x00"


class BackupError(ClubsError):
    """A backup cannot be made or restored; the message says which file and why."""


@dataclass(frozen=True)
class Summary:
    path: Path
    size: int
    files: int
    seconds: float
    database: str


# --- the master key and the sealed stream --------------------------------------------------


def master_key(var_dir: Path) -> tuple[bytes, str]:
    """The vault's key and where it came from (the same order the vault reads it in)."""
    key_path = var_dir / "secrets" / "vault.key"  # the vault's own key file (Vault.key_path)
    if os.environ.get(MASTER_KEY_ENV):
        raw, source = os.environ[MASTER_KEY_ENV].encode(), f"${MASTER_KEY_ENV}"
    elif os.environ.get(MASTER_KEY_FILE_ENV):
        source = os.environ[MASTER_KEY_FILE_ENV]
        try:
            raw = Path(source).read_bytes()
        except OSError as e:
            raise BackupError(f"{source}: cannot read the master key ({e.strerror})") from None
    else:
        source = str(key_path)
        try:
            raw = key_path.read_bytes()
        except OSError as e:
            raise BackupError(
                f"{source}: no master key ({e.strerror}); set ${MASTER_KEY_ENV} or "
                f"${MASTER_KEY_FILE_ENV} to the key the backup was made with"
            ) from None
    try:
        key = base64.urlsafe_b64decode(raw.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise BackupError(f"{source}: not a master key (32 url-safe base64-encoded bytes)")
    return key, source


def _aead(master: bytes, salt: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"clubs backup v1")
    return AESGCM(hkdf.derive(master))


def _nonce(n: int, last: bool) -> bytes:
    return struct.pack(">IQ", 1 if last else 0, n)


def seal_stream(master: bytes, src: IO[bytes], dst: IO[bytes]) -> None:
    salt = os.urandom(16)
    aead = _aead(master, salt)
    dst.write(MAGIC + salt)
    n = 0
    block = src.read(CHUNK)
    while True:
        following = src.read(CHUNK)
        last = not following
        sealed = aead.encrypt(_nonce(n, last), block, MAGIC + salt)
        dst.write(struct.pack(">I", len(sealed)) + sealed)
        if last:
            return
        block, n = following, n + 1


def open_stream(master: bytes, src: IO[bytes], dst: IO[bytes], *, name: str, source: str) -> None:
    header = src.read(len(MAGIC) + 16)
    if header[: len(MAGIC)] != MAGIC or len(header) != len(MAGIC) + 16:
        raise BackupError(f"{name}: not a Matrix Clubs backup")
    aead = _aead(master, header[len(MAGIC) :])
    n = 0
    while True:
        size_bytes = src.read(4)
        if len(size_bytes) != 4:
            raise BackupError(f"{name}: the backup is cut short (chunk {n} missing)")
        (size,) = struct.unpack(">I", size_bytes)
        sealed = src.read(size)
        if len(sealed) != size or size > CHUNK + 16:
            raise BackupError(f"{name}: the backup is cut short (chunk {n})")
        for last in (False, True):
            try:
                dst.write(aead.decrypt(_nonce(n, last), sealed, header))
                break
            except InvalidTag:
                continue
        else:
            raise BackupError(
                f"{name}: cannot open the backup with the master key from {source}: it was "
                "made with another key, or the file is damaged"
            )
        if last:
            if src.read(1):
                raise BackupError(f"{name}: data after the end of the backup")
            return
        n += 1


# --- backup ----------------------------------------------------------------------------------


def _wanted(rel: Path) -> bool:
    parts = rel.parts
    if parts[0] in SKIP_TOP or rel.name.endswith(SKIP_SUFFIXES) or ".log" in rel.name:
        return False
    if parts[:2] == ("secrets", "vault.key"):
        return False  # the backup is sealed with it: it is kept apart
    if parts[:2] == ("secrets", "postgres") or parts[:2] == ("synapse", "homeserver.db"):
        return False  # regenerated on restore / added as a consistent copy
    return not (
        parts[:2] == ("synapse", "media_store") and len(parts) > 2 and parts[2] in MEDIA_CACHES
    )


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == SQLITE_HEADER


def sqlite_copy(src: Path, dst: Path, *, drop_rows_of: str | None = None) -> None:
    """A consistent copy of a live SQLite database (its WAL included)."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
        if drop_rows_of is not None:
            with contextlib.suppress(sqlite3.OperationalError):  # a server that never ran
                target.execute(f"DELETE FROM {drop_rows_of}")  # noqa: S608 - a constant
                target.commit()
    finally:
        source.close()
        target.close()


def _pg_dump(db: DatabaseChoice, out: Path) -> None:
    args = db.postgres or {}
    env = {**os.environ}
    if db.embedded is not None:
        env.update(db.embedded.client_env())
    else:
        env.update({"PGHOST": args["host"], "PGUSER": args["user"]})
        if args.get("port"):
            env["PGPORT"] = args["port"]
        if args.get("password"):
            env["PGPASSWORD"] = args["password"]
    argv = [str(bin_dir() / "pg_dump"), "-Fc", "--no-owner", "--no-privileges",
            f"--exclude-table-data={SKIP_TABLE}", "-f", str(out), args["dbname"]]  # fmt: skip
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise BackupError(f"pg_dump of {args['dbname']!r} failed: {result.stderr.strip()}")


def backup(var_dir: Path, out: Path) -> Summary:
    """Write the encrypted backup of `var_dir` to `out` (atomically, 0600)."""
    began = time.monotonic()
    if not (var_dir / "synapse").is_dir():
        raise BackupError(f"{var_dir}: no homeserver here (no synapse/ directory) to back up")
    key, _ = master_key(var_dir)
    db = choose_database(var_dir)
    started = False
    files = 0
    with tempfile.TemporaryDirectory(prefix="clubs-backup-") as tmp_name:
        tmp = Path(tmp_name)
        plain = tmp / "backup.tar.gz"
        with tarfile.open(plain, "w:gz", compresslevel=6) as tar:
            for path in sorted(var_dir.rglob("*")):
                rel = path.relative_to(var_dir)
                if not path.is_file() or path.is_symlink() or not _wanted(rel):
                    continue
                if _is_sqlite(path):
                    copy = tmp / "copy.sqlite"
                    sqlite_copy(path, copy)
                    tar.add(copy, arcname=f"var/{rel}")
                    copy.unlink()
                else:
                    tar.add(path, arcname=f"var/{rel}")
                files += 1
            if db.postgres is None:
                kind = "sqlite"
                live = var_dir / "synapse" / "homeserver.db"
                if not live.exists():
                    raise BackupError(f"{live}: the homeserver's database is missing")
                copy = tmp / "homeserver.db"
                sqlite_copy(live, copy, drop_rows_of=SKIP_TABLE)
                tar.add(copy, arcname="var/synapse/homeserver.db")
            else:
                kind = "postgres-embedded" if db.embedded is not None else "postgres"
                if db.embedded is not None and not db.embedded.running():
                    db.embedded.start()  # the homeserver is stopped: dump its cluster anyway
                    started = True
                try:
                    _pg_dump(db, tmp / PG_DUMP)
                finally:
                    if started and db.embedded is not None:
                        db.embedded.stop()
                tar.add(tmp / PG_DUMP, arcname=PG_DUMP)
            files += 1
            manifest = json.dumps(
                {"format": 1, "clubs": __version__, "database": kind, "made_at": int(time.time())}
            ).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(manifest)
            tar.addfile(info, io.BytesIO(manifest))
        sealed = tmp / "backup.sealed"
        with plain.open("rb") as src, sealed.open("wb") as dst:
            seal_stream(key, src, dst)
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = out.with_name(f".{out.name}.tmp")
        shutil.move(sealed, staged)
        staged.chmod(0o600)
        staged.replace(out)
    size = out.stat().st_size
    log.info("backup of %s: %d files, %d bytes, %s", var_dir, files, size, kind)
    return Summary(out, size, files, time.monotonic() - began, kind)


# --- restore ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _opened(path: Path, key: bytes, source: str) -> Iterator[tarfile.TarFile]:
    with tempfile.TemporaryFile() as plain:
        try:
            src = path.open("rb")
        except OSError as e:
            raise BackupError(f"{path}: cannot read the backup ({e.strerror})") from None
        with src:
            open_stream(key, src, plain, name=str(path), source=source)
        plain.seek(0)
        try:
            with tarfile.open(fileobj=plain, mode="r:gz") as tar:
                yield tar
        except tarfile.TarError as e:
            raise BackupError(
                f"{path}: the backup opens but its content is damaged ({e})"
            ) from None


def _manifest(tar: tarfile.TarFile, path: Path) -> dict[str, Any]:
    member = tar.extractfile(MANIFEST) if MANIFEST in tar.getnames() else None
    if member is None:
        raise BackupError(f"{path}: the backup has no {MANIFEST}")
    data = json.loads(member.read())
    if not isinstance(data, dict) or data.get("format") != 1:
        raise BackupError(f"{path}: a backup format this version does not know")
    return data


def restore(backup_file: Path, var_dir: Path) -> Summary:
    """Restore `backup_file` into `var_dir`, which must be empty or absent."""
    began = time.monotonic()
    if var_dir.exists() and any(p.name != "vault.key" for p in var_dir.rglob("*") if p.is_file()):
        raise BackupError(
            f"{var_dir}: not empty; restore only into an empty var directory (move this one "
            "aside first: a homeserver must never start on a mix of two states)"
        )
    key, source = master_key(var_dir)
    with _opened(backup_file, key, source) as tar:  # the whole file is checked before writing
        manifest = _manifest(tar, backup_file)
        kind = str(manifest.get("database"))
        names = [m for m in tar.getmembers() if m.name.startswith("var/")]
        var_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="clubs-restore-"))
        try:
            tar.extractall(tmp, members=names, filter="data")
            if kind.startswith("postgres"):
                tar.extract(PG_DUMP, tmp, filter="data")
            for item in sorted((tmp / "var").rglob("*")):
                if item.is_file():  # merged file by file: var/secrets may hold the key already
                    dest = var_dir / item.relative_to(tmp / "var")
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(item, dest)
            for d in (var_dir / "secrets", var_dir / "synapse" / "secrets"):
                if d.exists():
                    d.chmod(0o700)
            if kind.startswith("postgres"):
                _pg_restore(var_dir, tmp / PG_DUMP)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("restored %s into %s (%s)", backup_file, var_dir, kind)
    return Summary(
        backup_file, backup_file.stat().st_size, len(names), time.monotonic() - began, kind
    )


def _pg_restore(var_dir: Path, dump: Path) -> None:
    db = choose_database(var_dir, {**os.environ, "CLUBS_DB": "postgres"})
    args = db.postgres or {}
    embedded: EmbeddedPostgres | None = db.embedded
    env = {**os.environ}
    if embedded is not None:
        embedded.start()  # a new cluster with an empty `synapse` database
        env.update(embedded.client_env())
    else:
        env.update({"PGHOST": args["host"], "PGUSER": args["user"]})
        if args.get("port"):
            env["PGPORT"] = args["port"]
        if args.get("password"):
            env["PGPASSWORD"] = args["password"]
    try:
        argv = [str(bin_dir() / "pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
                "--role", args["user"], "-d", args["dbname"], str(dump)]  # fmt: skip
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise BackupError(
                f"pg_restore into {args['dbname']!r} failed (restore only into an empty "
                f"database): {result.stderr.strip().splitlines()[-1:]}"
            )
    finally:
        if embedded is not None:
            embedded.stop()
