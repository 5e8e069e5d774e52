"""`clubs db migrate-to-postgres`: move a city's Synapse from SQLite to PostgreSQL.

The steps, each recorded in `var/migrate-to-postgres/state.json` once done (a later run resumes
after the last one that still holds):

1. check    the target: the city's own cluster under var/postgres (created), or the server
            CLUBS_PG_* names; reachable, UTF8 with C collation and ctype, an empty database,
            room on disk. A failure here is one located line and nothing is stopped.
2. stop     the homeserver: a `clubs up` supervisor, else the `clubs homeserver run` (or bare
            Synapse) in var/synapse/homeserver.pid. While the migration runs that pid file holds
            its own pid, so nothing starts Synapse on the city meanwhile.
3. snapshot copy homeserver.db (and its WAL) into the working directory; the original is never
            opened for writing. A snapshot is reused only while the original is unchanged.
4. update   finish Synapse's pending background updates on the snapshot (synapse_port_db
            refuses a database with any; a young city always has some).
5. port     synapse_port_db from the snapshot into the target, with a whole homeserver config
            whose background updates do not sleep (otherwise ~1 s per update, ~50 s in all).
6. sequences set every stream sequence past its tables and `stream_positions`: Synapse refuses
            to start while a stream's recorded position is ahead of its sequence, and
            synapse_port_db leaves some (un_partial_stated_room_stream, thread_subscriptions,
            sticky_events, caches) where the schema made them.
7. verify   row counts of the snapshot and the target; Synapse started on the target on a
            spare loopback port (no member can write to it); a sync, whoami and a media download
            with the provisioner's token.
8. commit   `var/database.json` says postgres (one atomic rename): from here on every start of
            the city uses PostgreSQL. Until here it says sqlite, and an interruption at any
            point leaves the SQLite server as it was, startable.
9. finish   the original SQLite database moves into the working directory (kept until you
            delete it); the snapshot and the port's config are removed.

`homeserver.yaml` is rendered again at every start from the recorded choice, so the record is
the one switch. The pure decisions (what is still valid on resume, sequence targets, disk room,
the plan) are functions below; the rest is thin I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clubs.core.crash import crashpoint
from clubs.core.errors import ClubsError, MatrixError, Unreachable
from clubs.core.homeserver import Homeserver, Settings, render_config
from clubs.core.postgres import (
    EmbeddedPostgres,
    PostgresError,
    check_database,
    connect_args,
    external_args,
    read_record,
    record_path,
    write_record,
)
from clubs.core.secrets import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    Vault,
    VaultError,
    write_private,
)

log = logging.getLogger(__name__)

WORK_NAME = "migrate-to-postgres"
STATE_FORMAT = 1
SQLITE_HEADER = b"SQLite format 3\x00"
STOP_TIMEOUT_S = 60.0
MIB = 1 << 20

STEPS: tuple[tuple[str, str], ...] = (
    ("check", "check the target"),
    ("stop", "stop the homeserver"),
    ("snapshot", "copy the SQLite database to a snapshot (the original is never written)"),
    ("update", "finish Synapse's pending background updates on the snapshot"),
    ("port", "synapse_port_db from the snapshot into the target"),
    ("sequences", "set Synapse's stream sequences past the ported rows"),
    ("verify", "compare row counts, start Synapse on PostgreSQL on a spare port, sync"),
    ("commit", "record PostgreSQL as the city's database"),
    ("finish", "move the original SQLite database aside; remove the snapshot"),
)
STEP_NAMES = tuple(name for name, _ in STEPS)
# Steps whose result lives in files or in the target: kept on resume while the source holds.
_KEPT = ("snapshot", "update", "port", "sequences", "verify")

COUNTED = (
    "users",
    "rooms",
    "events",
    "event_json",
    "room_memberships",
    "current_state_events",
    "devices",
    "access_tokens",
    "e2e_device_keys_json",
    "e2e_cross_signing_keys",
    "e2e_room_keys",
    "local_media_repository",
)
"""Tables whose row counts must be equal in the snapshot and the target after the port."""


@dataclass(frozen=True)
class Stream:
    """A Synapse stream generator on PostgreSQL: its sequence must not be behind its tables
    or its row in `stream_positions` (the latter is fatal at start-up)."""

    name: str
    sequence: str
    tables: tuple[tuple[str, str], ...]
    positive: bool = True


# Every MultiWriterIdGenerator of Synapse 1.163 (tests/unit/test_pgmigrate.py reads the
# installed Synapse's source and fails when one is missing).
STREAMS: tuple[Stream, ...] = (
    Stream(
        "events",
        "events_stream_seq",
        (
            ("events", "stream_ordering"),
            ("current_state_delta_stream", "stream_id"),
            ("ex_outlier_stream", "event_stream_ordering"),
        ),
    ),
    Stream(
        "backfill",
        "events_backfill_stream_seq",
        (("events", "stream_ordering"), ("ex_outlier_stream", "event_stream_ordering")),
        positive=False,
    ),
    Stream(
        "un_partial_stated_event_stream",
        "un_partial_stated_event_stream_sequence",
        (("un_partial_stated_event_stream", "stream_id"),),
    ),
    Stream(
        "un_partial_stated_room_stream",
        "un_partial_stated_room_stream_sequence",
        (("un_partial_stated_room_stream", "stream_id"),),
    ),
    Stream(
        "to_device",
        "device_inbox_sequence",
        (("device_inbox", "stream_id"), ("device_federation_outbox", "stream_id")),
    ),
    Stream(
        "account_data",
        "account_data_sequence",
        (
            ("room_account_data", "stream_id"),
            ("room_tags_revisions", "stream_id"),
            ("account_data", "stream_id"),
        ),
    ),
    Stream("receipts", "receipts_sequence", (("receipts_linearized", "stream_id"),)),
    Stream("presence_stream", "presence_stream_sequence", (("presence_stream", "stream_id"),)),
    Stream(
        "device_lists_stream",
        "device_lists_sequence",
        (
            ("device_lists_stream", "stream_id"),
            ("user_signature_stream", "stream_id"),
            ("device_lists_outbound_pokes", "stream_id"),
            ("device_lists_changes_in_room", "stream_id"),
            ("device_lists_remote_pending", "stream_id"),
            ("device_lists_changes_converted_stream_position", "stream_id"),
        ),
    ),
    Stream(
        "e2e_cross_signing_keys",
        "e2e_cross_signing_keys_sequence",
        (("e2e_cross_signing_keys", "stream_id"),),
    ),
    Stream(
        "push_rules_stream", "push_rules_stream_sequence", (("push_rules_stream", "stream_id"),)
    ),
    Stream("pushers", "pushers_sequence", (("pushers", "id"), ("deleted_pushers", "stream_id"))),
    Stream(
        "quarantined_media",
        "quarantined_media_id_seq",
        (("quarantined_media_changes", "stream_id"),),
    ),
    Stream("profile_updates", "profile_updates_sequence", (("profile_updates", "stream_id"),)),
    Stream(
        "thread_subscriptions",
        "thread_subscriptions_sequence",
        (("thread_subscriptions", "stream_id"),),
    ),
    Stream("sticky_events", "sticky_events_sequence", (("sticky_events", "stream_id"),)),
    Stream(
        "caches",
        "cache_invalidation_stream_seq",
        (("cache_invalidation_stream_by_instance", "stream_id"),),
    ),
)


class MigrationError(ClubsError):
    """The migration cannot go on; the message says where, and what is still in use."""


# --- decisions (pure) ------------------------------------------------------------------------


def sequence_target(maxima: Iterable[int | None], last_value: int, is_called: bool) -> int | None:
    """The value to `setval(…, true)` a stream's sequence to, or None when it is right already.

    Past every maximum, and always "called": synapse_port_db restarts sequences (`ALTER
    SEQUENCE … RESTART`, not called), but Synapse takes `last_value` for the stream's current
    position whether called or not. Left so, the first row after the port (a room key sent by
    to-device message, an event) gets a position clients were already told about, and they
    never receive it. Positions start at 1, which Synapse counts as seen."""
    current = last_value if is_called else last_value - 1
    target = max([current, 1, *(m for m in maxima if m is not None)])
    if is_called and target == last_value:
        return None
    return target


def space_needed(sqlite_bytes: int, *, embedded: bool) -> int:
    """Free bytes the var directory's disk needs: the snapshot, plus the new cluster's data
    (PostgreSQL takes about as much again, with indexes and WAL: counted twice) when it is
    ours, plus a margin."""
    return sqlite_bytes * (3 if embedded else 1) + 64 * MIB


def still_valid(
    done: Sequence[str], recorded: Mapping[str, int | None] | None, now: Mapping[str, int | None]
) -> list[str]:
    """The steps of an earlier run that still hold now that the homeserver is stopped: the
    snapshot and what was built from it only while the original is the one it was copied from
    (a server started in between has written to it)."""
    if recorded is not None and dict(recorded) == dict(now):
        return [s for s in done if s in _KEPT]
    return []


def compare_counts(
    before: Mapping[str, int], after: Mapping[str, int]
) -> list[tuple[str, int, int | None]]:
    """The tables whose row count differs (name, in the snapshot, in the target)."""
    return [(t, n, after.get(t)) for t, n in before.items() if after.get(t) != n]


# --- state -----------------------------------------------------------------------------------


@dataclass
class State:
    """What an earlier run did (`state.json`)."""

    target: dict[str, str]
    server_name: str
    done: list[str] = field(default_factory=list)
    source: dict[str, int | None] | None = None
    filled: bool = False
    """The target has rows from a port: emptied before a port from another snapshot."""

    def to_json(self) -> bytes:
        data = {
            "format": STATE_FORMAT,
            "target": self.target,
            "server_name": self.server_name,
            "done": self.done,
            "source": self.source,
            "filled": self.filled,
        }
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise MigrationError(
                f"{path}: cannot read the migration's state ({e}); remove the directory "
                f"{path.parent} to start over"
            ) from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise MigrationError(f"{path}: a state this version does not know")
        done = [s for s in data.get("done", []) if s in STEP_NAMES]
        return cls(
            target=dict(data["target"]),
            server_name=str(data["server_name"]),
            done=done,
            source=data.get("source"),
            filled=bool(data.get("filled")),
        )


# --- the target ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where the city's database goes: our own cluster under var/postgres, or someone else's
    server (CLUBS_PG_*)."""

    args: dict[str, str]
    embedded: EmbeddedPostgres | None

    @property
    def identity(self) -> dict[str, str]:
        return {
            "kind": "embedded" if self.embedded is not None else "external",
            "host": self.args.get("host", ""),
            "port": self.args.get("port", ""),
            "dbname": self.args.get("dbname", ""),
            "user": self.args.get("user", ""),
        }

    def describe(self) -> str:
        where = f"{self.args.get('host')}:{self.args.get('port') or 5432}"
        if self.embedded is not None:
            return (
                f"the city's own PostgreSQL cluster in {self.embedded.root}, database "
                f"{self.args['dbname']!r}"
            )
        return f"PostgreSQL at {where}, database {self.args.get('dbname')!r}"

    def record(self) -> dict[str, str]:
        """What `var/database.json` says once the city runs on this target."""
        if self.embedded is not None:
            return {"database": "postgres"}
        record = {"database": "postgres"}
        for key in ("host", "port", "user", "dbname", "password_file"):
            if self.args.get(key):
                record[key] = self.args[key]
        return record


def choose_target(var_dir: Path, env: Mapping[str, str]) -> Target:
    """CLUBS_PG_HOST names someone else's server; otherwise the city's own cluster."""
    if env.get("CLUBS_PG_HOST"):
        return Target(external_args(env), None)
    embedded = EmbeddedPostgres(var_dir / "postgres", var_dir / "secrets" / "postgres")
    return Target(embedded.synapse_args(), embedded)


# --- processes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Running:
    """A process that runs the city's homeserver, and how to stop it."""

    what: str
    pid: int
    waits_for: tuple[int, ...] = ()
    """Processes that must be gone too before the database is free (Synapse under it)."""


def _alive(pid: int) -> bool:
    """A running process (a zombie waiting for its parent to collect it is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _is_clubs(argv: Sequence[str], *words: str) -> bool:
    joined = " ".join(argv)
    return "clubs" in joined and all(w in argv for w in words)


def find_running(var_dir: Path) -> list[Running]:
    """What runs the city's homeserver now: the `clubs up` supervisor (which would restart a
    stopped child) first, else the `clubs homeserver run` above Synapse, else Synapse itself."""
    found: list[Running] = []
    synapse = _pid_in(var_dir / "synapse" / "homeserver.pid")
    if synapse is not None and (synapse == os.getpid() or not _alive(synapse)):
        synapse = None
    synapse_waits = (synapse,) if synapse is not None else ()
    supervisor = _pid_in(var_dir / "run" / "supervisor.pid")
    if supervisor is not None and _alive(supervisor) and _is_clubs(_cmdline(supervisor), "up"):
        found.append(Running(f"`clubs up` (pid {supervisor})", supervisor, synapse_waits))
        return found
    if synapse is None:
        return found
    parent = _parent(synapse)
    if parent is not None and parent > 1 and _is_clubs(_cmdline(parent), "homeserver", "run"):
        found.append(Running(f"`clubs homeserver run` (pid {parent})", parent, (synapse,)))
    else:
        found.append(Running(f"Synapse (pid {synapse})", synapse))
    return found


def stop_running(running: Sequence[Running], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM each (they stop their children and Synapse cleanly) and wait until all are gone."""
    for r in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(r.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    pids = {p for r in running for p in (r.pid, *r.waits_for)}
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            left = ", ".join(str(p) for p in sorted(pids) if _alive(p))
            raise MigrationError(
                f"the homeserver did not stop within {timeout_s:.0f} s (pid {left} still "
                "runs); stop it yourself and run again: nothing was changed"
            )
        time.sleep(0.05)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: a killed migration takes its synapse_port_db with it (no orphan writing on)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_script(
    argv: Sequence[str],
    log_file: Path,
    *,
    on_line: Callable[[str], None] | None = None,
    what: str,
) -> None:
    """Run one of Synapse's scripts, its output appended to `log_file` (0600). Each line it
    prints on stdout goes to `on_line`. A failure is one line: its last words and the log."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {what}\n".encode())
        out.flush()
        proc = subprocess.Popen(  # noqa: S603 - this interpreter and Synapse's scripts
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=out,
            cwd=log_file.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # progress lines as they happen
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                out.write(raw)
                out.flush()
                if on_line is not None:
                    on_line(raw.decode(errors="replace").strip())
        finally:
            code = proc.wait()
    if code != 0:
        raise MigrationError(
            f"{what} failed (exit {code}): {_last_words(log_file)}; see {log_file}"
        )


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")


def last_words(text: str) -> str:
    """What a Synapse script said last: its closing message (after its log lines), or the last
    line of a traceback."""
    tail: list[str] = []
    for line in reversed([ln.rstrip() for ln in text.splitlines() if ln.strip()]):
        if _LOG_LINE.match(line) or line.startswith("==="):
            break
        tail.append(line.strip())
    tail.reverse()
    if not tail:
        return "it printed nothing after its log; read the log"
    if "Traceback (most recent call last):" in tail:
        return tail[-1][-300:]
    return " ".join(tail)[-400:]


def _last_words(log_file: Path) -> str:
    try:
        return last_words(log_file.read_text(errors="replace")[-20000:])
    except OSError:
        return "its log cannot be read"


# --- files -----------------------------------------------------------------------------------


def source_identity(db: Path) -> dict[str, int | None]:
    """What tells a changed SQLite database: its inode, size and mtime, and its WAL's."""
    st = db.stat()
    wal = db.with_name(db.name + "-wal")
    wst = wal.stat() if wal.exists() else None
    return {
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "wal_size": wst.st_size if wst else None,
        "wal_mtime_ns": wst.st_mtime_ns if wst else None,
    }


def take_snapshot(original: Path, dest: Path) -> None:
    """Copy `original` (and its WAL, when a killed server left one) into the directory `dest`,
    made whole in a sibling first: a crash leaves the old snapshot or none, never half of one.
    The original is only read, as bytes; the copy replays the WAL into itself."""
    part = dest.with_name(dest.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(mode=0o700, parents=True)
    copy = part / original.name
    shutil.copyfile(original, copy)
    wal = original.with_name(original.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, part / wal.name)
    try:
        conn = sqlite3.connect(copy)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            (ok,) = conn.execute("PRAGMA quick_check(1)").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        ok = str(e)
    if ok != "ok":
        shutil.rmtree(part, ignore_errors=True)
        raise MigrationError(f"{original}: SQLite finds the database damaged ({ok})")
    shutil.rmtree(dest, ignore_errors=True)
    part.rename(dest)


def read_server_name(config: Path, fallback: str) -> str:
    """The city's server name, from the homeserver.yaml its last start rendered."""
    try:
        data = yaml.safe_load(config.read_text())
    except FileNotFoundError:
        return fallback
    except (OSError, yaml.YAMLError) as e:
        raise MigrationError(f"{config}: cannot read the server name ({e})") from None
    name = data.get("server_name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise MigrationError(f"{config}: server_name: missing")
    return name


def script_config(
    settings: Settings, *, database: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> bytes:
    """A whole homeserver config (Synapse's scripts parse one) for `database`; no log config
    (the scripts log to their own output, never into the city's homeserver.log)."""
    config = yaml.safe_load(render_config(settings, settings.port or 8008))
    config.pop("log_config", None)
    config["database"] = dict(database)
    config.update(extra or {})
    return yaml.safe_dump(config, sort_keys=False).encode()


def postgres_database(args: Mapping[str, str]) -> dict[str, Any]:
    """Synapse's `database` section for a PostgreSQL target."""
    db_args: dict[str, Any] = {k: v for k, v in connect_args(args).items()}
    if "port" in db_args:
        db_args["port"] = int(db_args["port"])
    return {"name": "psycopg2", "args": {**db_args, "cp_min": 1, "cp_max": 5}}


# --- the database ----------------------------------------------------------------------------


def _pg(args: Mapping[str, str]) -> Any:
    import psycopg2

    return psycopg2.connect(**connect_args(args), connect_timeout=10)


def relations(args: Mapping[str, str]) -> list[str]:
    """The tables, views and sequences in the database, whoever owns them (pg_class: the
    information schema shows only what the connecting role may use)."""
    conn = _pg(args)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1"
            )
            return [str(r[0]) for r in cur.fetchall()]
    finally:
        conn.close()


def fix_sequences(args: Mapping[str, str]) -> list[tuple[str, int]]:
    """Set each stream's sequence past its tables and its `stream_positions` row, as "called"
    (see `sequence_target`); returns the sequences set and their values."""
    moved: list[tuple[str, int]] = []
    conn = _pg(args)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('stream_positions') IS NOT NULL")
            (have_positions,) = cur.fetchone()
            for stream in STREAMS:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (stream.sequence,))
                if not cur.fetchone()[0]:
                    continue
                maxima: list[int | None] = []
                for table, column in stream.tables:
                    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
                    if not cur.fetchone()[0]:
                        continue
                    agg = f"MAX({column})" if stream.positive else f"-MIN({column})"
                    cur.execute(f"SELECT {agg} FROM {table}")  # noqa: S608 - names from STREAMS
                    maxima.append(cur.fetchone()[0])
                if have_positions:
                    cur.execute(
                        "SELECT MAX(stream_id) FROM stream_positions WHERE stream_name = %s",
                        (stream.name,),
                    )
                    maxima.append(cur.fetchone()[0])
                cur.execute(f"SELECT last_value, is_called FROM {stream.sequence}")  # noqa: S608
                last_value, is_called = cur.fetchone()
                target = sequence_target(maxima, int(last_value), bool(is_called))
                if target is not None:
                    cur.execute("SELECT setval(%s::regclass, %s, true)", (stream.sequence, target))
                    moved.append((stream.sequence, target))
    finally:
        conn.close()
    return moved


def sqlite_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {
            t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # noqa: S608
            for t in COUNTED
            if t in have
        }
    finally:
        conn.close()


def postgres_counts(args: Mapping[str, str], tables: Iterable[str]) -> dict[str, int]:
    conn = _pg(args)
    try:
        with conn.cursor() as cur:
            counts = {}
            for t in tables:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (t,))
                if cur.fetchone()[0]:
                    cur.execute(f"SELECT count(*) FROM {t}")  # noqa: S608 - names from COUNTED
                    counts[t] = int(cur.fetchone()[0])
            return counts
    finally:
        conn.close()


def empty_target(target: Target) -> None:
    """Remove what an earlier port put into the target (it was made from another snapshot)."""
    import psycopg2

    if target.embedded is not None:
        conn = psycopg2.connect(**target.embedded.admin_args())
        conn.autocommit = True
        db, owner = target.args["dbname"], target.args["user"]
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                cur.execute(
                    f'CREATE DATABASE "{db}" OWNER "{owner}" ENCODING \'UTF8\' '
                    "LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
                )
        finally:
            conn.close()
        return
    conn = _pg(target.args)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DROP SCHEMA public CASCADE")
            cur.execute("CREATE SCHEMA public")
    except psycopg2.Error as e:
        raise MigrationError(
            f"cannot empty database {target.args.get('dbname')!r} (filled by an interrupted "
            f"port from an older snapshot): {_first_line(e)}; drop and create "
            "it again (`createdb --encoding=UTF8 --locale=C --template=template0`) and run again"
        ) from None
    finally:
        conn.close()


# --- the verification start ------------------------------------------------------------------


class _SpareHomeserver(Homeserver):
    """Synapse on the city's data directory with a config file of the migration's own, so the
    city's homeserver.yaml is not rendered for PostgreSQL before the switch."""

    def __init__(self, settings: Settings, config_file: Path) -> None:
        super().__init__(settings)
        self._config_file = config_file

    @property
    def config_file(self) -> Path:
        return self._config_file


@dataclass(frozen=True)
class Probe:
    """What the sync check expects, from the snapshot."""

    token: str
    user_id: str
    joined: int
    media: tuple[str, int] | None


def provisioner_token(var_dir: Path, server_name: str, env: Mapping[str, str]) -> str | None:
    """$CLUBS_ADMIN_TOKEN, else the provisioner's token in the vault (never created here)."""
    if env.get("CLUBS_ADMIN_TOKEN"):
        return env["CLUBS_ADMIN_TOKEN"]
    path = var_dir / "secrets" / "vault"
    has_key = any(os.environ.get(n) for n in (MASTER_KEY_ENV, MASTER_KEY_FILE_ENV))
    if not path.exists() or not (has_key or path.with_suffix(".key").exists()):
        return None  # (a Vault without its key would make a new key file)
    try:
        return Vault(path).get(f"@provisioner:{server_name}/access_token")
    except VaultError:
        return None


def probe_for(snapshot: Path, token: str | None, media_store: Path) -> Probe | None:
    if not token:
        return None
    conn = sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT user_id FROM access_tokens WHERE token = ?", (token,)).fetchone()
        if row is None:
            return None
        user_id = str(row[0])
        (joined,) = conn.execute(
            "SELECT count(*) FROM local_current_membership WHERE user_id = ? AND "
            "membership = 'join'",
            (user_id,),
        ).fetchone()
        media = None
        for media_id, length in conn.execute(
            "SELECT media_id, media_length FROM local_media_repository WHERE url_cache IS NULL "
            "AND quarantined_by IS NULL ORDER BY created_ts DESC LIMIT 20"
        ):
            m = str(media_id)
            if (media_store / "local_content" / m[:2] / m[2:4] / m[4:]).exists():
                media = (m, int(length))
                break
    finally:
        conn.close()
    return Probe(token, user_id, int(joined), media)


async def run_probe(url: str, server_name: str, probe: Probe) -> list[str]:
    """whoami, a sync and one media download against the PostgreSQL-backed Synapse; returns
    what it saw, raises MigrationError on what is wrong."""
    from clubs.core.http import MatrixHttp, cs, path

    seen: list[str] = []
    async with MatrixHttp(url, probe.token, max_retries=2) as http:
        try:
            who = await http.get(cs("account", "whoami"), label="whoami")
            if who.get("user_id") != probe.user_id:
                raise MigrationError(
                    f"whoami answered {who.get('user_id')!r}, not the token's user"
                )
            sync_filter = {
                "room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": True}},
                "presence": {"types": []},
            }
            synced = await http.get(
                cs("sync"),
                query={"timeout": "0", "filter": json.dumps(sync_filter)},
                label="sync",
            )
        except (MatrixError, Unreachable) as e:
            raise MigrationError(f"Synapse on PostgreSQL: {e}") from None
        joined = len(synced.get("rooms", {}).get("join", {}))
        if "next_batch" not in synced or joined != probe.joined:
            raise MigrationError(
                f"Synapse on PostgreSQL: a sync of {probe.user_id} shows {joined} joined rooms; "
                f"the SQLite database has {probe.joined}"
            )
        seen.append(f"a sync of {probe.user_id} shows its {joined} rooms")
        if probe.media is not None:
            media_id, length = probe.media
            got = 0
            link = url + path("_matrix", "client", "v1", "media", "download", server_name, media_id)
            headers = {"Authorization": f"Bearer {probe.token}"}
            async with http.session.get(link, headers=headers) as resp:
                if resp.status != 200:
                    raise MigrationError(
                        f"Synapse on PostgreSQL: media {media_id} answers {resp.status}"
                    )
                async for chunk in resp.content.iter_chunked(1 << 16):
                    got += len(chunk)
            if got != length:
                raise MigrationError(
                    f"Synapse on PostgreSQL: media {media_id} has {got} bytes, not {length}"
                )
            seen.append(f"the newest upload downloads ({length} bytes)")
    return seen


# --- the migration ---------------------------------------------------------------------------


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _say(line: str) -> None:
    print(line, flush=True)  # progress seen as it happens, and not lost to a kill


@dataclass
class Outcome:
    """What a run did, for the command's last lines."""

    switched: bool = False
    """This run made the switch (an earlier one may have, and this one only finished)."""
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    stopped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kept: Path | None = None


class Migration:
    """One run of `clubs db migrate-to-postgres` over `var_dir`."""

    def __init__(
        self,
        var_dir: Path,
        *,
        server_name: str = "clubs.local",
        env: Mapping[str, str] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.var = var_dir
        self.env = dict(os.environ if env is None else env)
        self.say = say or _say
        self.synapse_dir = var_dir / "synapse"
        self.original = self.synapse_dir / "homeserver.db"
        self.work = var_dir / WORK_NAME
        self.state_file = self.work / "state.json"
        self.snapshot_dir = self.work / "snapshot"
        self.snapshot = self.snapshot_dir / "homeserver.db"
        self.kept_dir = self.work / "sqlite"
        self.server_name = read_server_name(self.synapse_dir / "homeserver.yaml", server_name)
        self.target = choose_target(var_dir, self.env)
        self._locked = False
        self._run_lock: int | None = None
        self._since = time.monotonic()

    # --- what is there ---------------------------------------------------------------------

    def _settings(self, postgres: dict[str, str] | None = None) -> Settings:
        return Settings(
            data_dir=self.synapse_dir, server_name=self.server_name, port=0, postgres=postgres
        )

    def _check_source(self) -> int:
        try:
            with self.original.open("rb") as f:
                header = f.read(16)
        except FileNotFoundError:
            raise MigrationError(
                f"{self.original}: no SQLite database here: nothing to migrate (is "
                f"{self.var} the city's var directory?)"
            ) from None
        if header != SQLITE_HEADER:
            raise MigrationError(f"{self.original}: not an SQLite database")
        return self.original.stat().st_size

    def _state(self) -> State | None:
        state = State.load(self.state_file)
        if state is not None and state.target != self.target.identity:
            raise MigrationError(
                f"{self.state_file}: an earlier run went to {state.target.get('kind')} "
                f"PostgreSQL {state.target.get('host')}/{state.target.get('dbname')}, not to "
                f"{self.target.describe()}; run it with the same target, or remove "
                f"{self.work} to start over"
            )
        return state

    @staticmethod
    def _switched(state: State | None) -> bool:
        """The record says postgres because of this migration, which has not finished (the
        record is written after verify, the state saved after the record)."""
        return (
            state is not None
            and "finish" not in state.done
            and ("commit" in state.done or "verify" in state.done)
        )

    def _save(self, state: State) -> None:
        write_private(self.state_file, state.to_json())

    # --- dry run ---------------------------------------------------------------------------

    def plan(self) -> list[str]:
        """What a run would do, changing nothing (the external server is asked, read-only)."""
        record = read_record(self.var)
        state = self._state()
        if record is not None and record["database"] == "postgres":
            if self._switched(state):
                return [f"the city runs on PostgreSQL already; a run would {STEPS[-1][1]}"]
            return [f"{record_path(self.var)}: the city runs on PostgreSQL already: nothing to do"]
        size = self._check_source()
        lines = [
            f"source:  {self.original} ({size / MIB:.1f} MiB, server name {self.server_name})",
            f"target:  {self.target.describe()}",
        ]
        emb = self.target.embedded
        if emb is not None:
            exists = (emb.data_dir / "PG_VERSION").exists()
            lines.append(f"         {'exists' if exists else 'created by the run'}")
        else:
            check_database(self.target.args, config=self.synapse_dir / "homeserver.yaml")
            found = relations(self.target.args)
            if found and not (state is not None and state.filled):
                raise MigrationError(self._not_empty(found))
            lines.append("         reachable, UTF8, C collation and ctype, empty")
        need = space_needed(size, embedded=emb is not None)
        free = shutil.disk_usage(self.var).free
        lines.append(f"space:   {free / MIB:.0f} MiB free, {need / MIB:.0f} MiB needed")
        running = find_running(self.var)
        lines.append(
            "running: " + (", ".join(r.what for r in running) + " (stopped by the run)")
            if running
            else "running: nothing (the homeserver is stopped)"
        )
        done = state.done if state is not None else []
        if state is not None:
            valid = still_valid(done, state.source, source_identity(self.original))
            kept = f"kept from an earlier run: {', '.join(valid)}" if valid else "none kept"
            lines.append(f"resume:  {kept}")
        lines.append("steps:")
        for n, (name, text) in enumerate(STEPS, 1):
            lines.append(f"  {n}. {name:<9} {text}")
        lines.append(
            f"until step 8 the city uses SQLite; then {record_path(self.var)} says postgres"
        )
        return lines

    def _not_empty(self, found: Sequence[str]) -> str:
        if self.target.embedded is not None:
            fix = f"remove {self.target.embedded.root}, which holds no city yet"
        else:
            fix = "create a new one with `createdb --encoding=UTF8 --locale=C --template=template0`"
        where = f"{self.target.args.get('host')}:{self.target.args.get('port') or 5432}"
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        return (
            f"{self.synapse_dir / 'homeserver.yaml'}: database.args.dbname: database "
            f"{self.target.args.get('dbname')!r} at {where} is not empty ({', '.join(found[:3])}"
            f"{more}); the migration ports into an empty database only ({fix})"
        )

    def standing(self) -> str:
        """Where the city stands, for the line after an error or an interruption."""
        with contextlib.suppress(ClubsError):
            record = read_record(self.var)
            if record is not None and record["database"] == "postgres":
                if self._switched(State.load(self.state_file)):
                    return (
                        f"the city uses PostgreSQL ({record_path(self.var)}); run the command "
                        "again to finish"
                    )
                return f"the city uses PostgreSQL ({record_path(self.var)})"
        if self.state_file.exists():
            return "the city still uses SQLite; run the command again to resume"
        return "the city still uses SQLite"

    # --- the run ---------------------------------------------------------------------------

    def run(self) -> Outcome:
        began = time.monotonic()
        record = read_record(self.var)
        state = self._state()
        if record is not None and record["database"] == "postgres":
            if self._switched(state):
                assert state is not None
                outcome = Outcome()
                self._finish(state, outcome)
                outcome.seconds = time.monotonic() - began
                return outcome
            raise MigrationError(
                f"{record_path(self.var)}: the city runs on PostgreSQL already: nothing to do"
            )
        size = self._check_source()
        if state is None:
            state = State(target=self.target.identity, server_name=self.server_name)
        outcome = Outcome()
        emb = self.target.embedded
        import psycopg2

        try:
            self._check(state, size)
            self._step(state, "check", "pgmigrate.checked")
            outcome.stopped = self._stop()
            identity = source_identity(self.original)
            kept = still_valid(state.done, state.source, identity)
            if "snapshot" in kept and not self.snapshot.exists():
                kept = []
            state.done = ["check", "stop", *kept]
            self._step(state, "stop", "pgmigrate.stopped")
            if "snapshot" not in state.done:
                if state.filled:  # by a port from an older snapshot
                    self.say("snapshot: emptying the target (filled from an older snapshot)")
                    empty_target(self.target)
                    state.filled = False
                    self._save(state)
                self.say("snapshot: copying the SQLite database (the original is only read)")
                state.source = identity
                take_snapshot(self.original, self.snapshot_dir)
                if source_identity(self.original) != identity:
                    raise MigrationError(f"{self.original}: changed while it was copied")
                self._step(state, "snapshot", "pgmigrate.snapshot")
            if "update" not in state.done:
                self.say("update: finishing Synapse's background updates on the snapshot")
                self._update()
                self._step(state, "update", "pgmigrate.updated")
            if "port" not in state.done:
                self._port(state)
                self._step(state, "port", "pgmigrate.ported")
            if "sequences" not in state.done:
                moved = fix_sequences(self.target.args)
                self.say(
                    "sequences: "
                    + (", ".join(f"{s} -> {v}" for s, v in moved) or "all past their rows")
                )
                self._step(state, "sequences", "pgmigrate.sequences")
            if "verify" not in state.done:
                outcome.counts, outcome.notes = self._verify()
                self._step(state, "verify", "pgmigrate.verified")
            self._commit(state)
            outcome.switched = True
            self._finish(state, outcome)
        except psycopg2.Error as e:
            raise MigrationError(f"{self.target.describe()}: {_first_line(e)}") from None
        finally:
            self._unlock()
            if emb is not None:
                emb.stop()
            if self._run_lock is not None:
                os.close(self._run_lock)  # the lock goes with it
                self._run_lock = None
        outcome.seconds = time.monotonic() - began
        return outcome

    def _step(self, state: State, name: str, crash: str) -> None:
        if name not in state.done:
            state.done.append(name)
        self._save(state)
        now = time.monotonic()
        log.info("step %s done (%.1f s)", name, now - self._since)
        self._since = now
        crashpoint(crash)

    def _check(self, state: State, size: int) -> None:
        emb = self.target.embedded
        need = space_needed(size, embedded=emb is not None)
        free = shutil.disk_usage(self.var).free
        if free < need and "port" not in state.done:
            raise MigrationError(
                f"{self.var}: {free / MIB:.0f} MiB free; the migration needs about "
                f"{need / MIB:.0f} MiB (a snapshot of {self.original.name} and the new "
                "database): nothing was stopped or changed"
            )
        if emb is not None:
            if read_record(self.var) is None:
                # From here var/postgres exists: the record keeps the city on SQLite.
                write_record(self.var, {"database": "sqlite"})
            emb.start()
        try:
            check_database(self.target.args, config=self.synapse_dir / "homeserver.yaml")
        except PostgresError as e:
            raise MigrationError(f"{e}; nothing was stopped or changed") from None
        found = relations(self.target.args)
        if found and not state.filled:
            raise MigrationError(self._not_empty(found) + "; nothing was stopped or changed")
        self.say(f"check: {self.target.describe()}: reachable, UTF8, C locale")
        self.work.mkdir(mode=0o700, exist_ok=True)
        self._hold_run_lock()

    def _hold_run_lock(self) -> None:
        """One migration of a var directory at a time (the second would stop the first as if
        it were the homeserver: it holds Synapse's pid file)."""
        path = self.work / "run.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise MigrationError(
                f"{path}: another `clubs db migrate-to-postgres` runs on {self.var} "
                f"(pid {holder}); nothing was stopped or changed"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._run_lock = fd

    def _stop(self) -> list[str]:
        running = find_running(self.var)
        for r in running:
            self.say(f"stop: stopping {r.what}")
        stop_running(running)
        self._lock()
        return [r.what for r in running]

    def _lock(self) -> None:
        """Our pid in Synapse's pid file: a start of the city meanwhile is refused."""
        pid_file = self.synapse_dir / "homeserver.pid"
        other = _pid_in(pid_file)
        if other is not None and other != os.getpid() and _alive(other):
            raise MigrationError(
                f"{pid_file}: a homeserver started again (pid {other}); stop it and run again"
            )
        pid_file.write_text(f"{os.getpid()}\n")
        self._locked = True

    def _unlock(self) -> None:
        pid_file = self.synapse_dir / "homeserver.pid"
        if self._locked and _pid_in(pid_file) == os.getpid():
            pid_file.unlink(missing_ok=True)
        self._locked = False

    def _update(self) -> None:
        config = self.work / "update.yaml"
        write_private(
            config,
            script_config(
                self._settings(),
                database={"name": "sqlite3", "args": {"database": str(self.snapshot)}},
                extra={"run_background_tasks_on": "a-migration"},
            ),
        )
        run_script(
            [sys.executable, "-m", "synapse._scripts.update_synapse_database",
             "--database-config", str(config), "--run-background-updates"],
            self.work / "update.log",
            what="update_synapse_database on the snapshot",
        )  # fmt: skip

    def _port(self, state: State) -> None:
        """synapse_port_db; run again on the same snapshot, it goes on where it stopped."""
        config = self.work / "port.yaml"
        write_private(
            config,
            script_config(
                self._settings(self.target.args),
                database=postgres_database(self.target.args),
                # Background updates of the new schema run before the copy, on empty tables:
                # Synapse's 1 s pause between them is the whole of their time.
                extra={"background_updates": {"sleep_duration_ms": 0}},
            ),
        )
        state.filled = True
        self._save(state)
        self.say(f"port: synapse_port_db into {self.target.describe()}")

        def progress(line: str) -> None:
            if line.endswith("..."):
                self.say(f"port: {line.removesuffix('...')}")
            crashpoint("pgmigrate.porting")

        run_script(
            [sys.executable, "-m", "synapse._scripts.synapse_port_db",
             "--sqlite-database", str(self.snapshot), "--postgres-config", str(config)],
            self.work / "port.log",
            on_line=progress,
            what="synapse_port_db",
        )  # fmt: skip

    def _verify(self) -> tuple[dict[str, int], list[str]]:
        before = sqlite_counts(self.snapshot)
        after = postgres_counts(self.target.args, before)
        wrong = compare_counts(before, after)
        if wrong:
            detail = ", ".join(f"{t} {a} in SQLite, {b} in PostgreSQL" for t, a, b in wrong)
            raise MigrationError(
                f"the port is incomplete: {detail}; see {self.work / 'port.log'}; the city "
                "still uses SQLite"
            )
        self.say(
            "verify: the same rows on both sides ("
            + ", ".join(f"{t} {before[t]}" for t in ("users", "rooms", "events") if t in before)
            + ")"
        )
        token = provisioner_token(self.var, self.server_name, self.env)
        probe = probe_for(self.snapshot, token, self.synapse_dir / "media_store")
        hs = _SpareHomeserver(self._settings(self.target.args), self.work / "verify.yaml")
        notes: list[str] = []
        self._unlock()
        try:
            hs.start()
            self.say(f"verify: Synapse started on PostgreSQL ({hs.url}, for the check only)")
            if probe is None:
                notes.append(
                    "no sync was checked: no provisioner token known to this city "
                    "(set CLUBS_ADMIN_TOKEN to have one checked)"
                )
            else:
                for seen in asyncio.run(run_probe(hs.url, self.server_name, probe)):
                    self.say(f"verify: {seen}")
        finally:
            hs.stop()
            self._lock()
        return before, notes

    def _commit(self, state: State) -> None:
        if source_identity(self.original) != state.source:
            raise MigrationError(
                f"{self.original}: changed since its snapshot (was the homeserver started "
                "during the migration?); run again: the city still uses SQLite"
            )
        write_record(self.var, self.target.record())
        self._step(state, "commit", "pgmigrate.committed")
        self.say(f"commit: {record_path(self.var)} says postgres")

    def _finish(self, state: State, outcome: Outcome) -> None:
        self.kept_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            src = self.original.with_name(self.original.name + suffix)
            if src.exists():
                src.rename(self.kept_dir / src.name)
        shutil.rmtree(self.snapshot_dir, ignore_errors=True)
        for name in ("port.yaml", "update.yaml", "verify.yaml"):
            (self.work / name).unlink(missing_ok=True)
        self._step(state, "finish", "pgmigrate.finished")
        outcome.kept = self.kept_dir / self.original.name
