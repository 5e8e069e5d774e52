"""`clubs db migrate-to-postgres` without a server: its decisions, the snapshot, the state, the
homeserver it stops, and the stream sequences it sets (checked against the installed Synapse)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from clubs.backup import _wanted
from clubs.cli import build_parser
from clubs.core.homeserver import Settings
from clubs.core.postgres import read_record, write_record
from clubs.db_migrate import (
    STEP_NAMES,
    STREAMS,
    Migration,
    MigrationError,
    State,
    compare_counts,
    find_running,
    last_words,
    postgres_database,
    script_config,
    sequence_target,
    source_identity,
    space_needed,
    still_valid,
    stop_running,
    take_snapshot,
)

MIB = 1 << 20


def test_a_stream_sequence_is_set_past_its_rows_and_called() -> None:
    assert sequence_target([5, None, 9], last_value=3, is_called=True) == 9
    assert sequence_target([9], last_value=9, is_called=True) is None
    assert sequence_target([4], last_value=9, is_called=True) is None
    # As synapse_port_db leaves them: not called, 10 is handed out next. Synapse would take 10
    # for the stream's current position already; set, it says 9, and 10 is still next.
    assert sequence_target([9], last_value=10, is_called=False) == 9
    assert sequence_target([12], last_value=10, is_called=False) == 12
    # A sequence never used: Synapse counts position 1 as seen.
    assert sequence_target([None, None], last_value=1, is_called=False) == 1
    assert sequence_target([], last_value=1, is_called=True) is None


def _balanced(text: str, start: int) -> str:
    """The text from `start` to the parenthesis that closes the one just before it."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return text[start:]


def test_every_stream_of_the_installed_synapse_is_covered() -> None:
    """A Synapse upgrade that adds a stream generator fails here, before a migration does."""
    spec = importlib.util.find_spec("synapse")
    if spec is None or spec.origin is None:
        pytest.skip("Synapse is not installed (the server extra)")
    storage = Path(spec.origin).parent / "storage" / "databases"
    found: dict[str, str | None] = {}
    for source in storage.rglob("*.py"):
        text = source.read_text()
        for call in re.finditer(r"MultiWriterIdGenerator\(", text):
            body = _balanced(text, call.end())
            sequence = re.search(r'sequence_name="([a-z0-9_]+)"', body)
            name = re.search(r'stream_name="([a-z0-9_]+)"', body)
            assert sequence is not None, f"{source}: a stream generator without a sequence name"
            found[sequence.group(1)] = name.group(1) if name else None
    ours = {s.sequence: s.name for s in STREAMS}
    assert len(found) >= 15
    assert set(found) <= set(ours), sorted(set(found) - set(ours))
    for sequence, name in found.items():
        assert name is None or ours[sequence] == name, sequence


def test_a_changed_original_keeps_nothing_built_from_its_snapshot() -> None:
    done = ["check", "stop", "snapshot", "update", "port"]
    identity = {"ino": 1, "size": 10, "mtime_ns": 5, "wal_size": None, "wal_mtime_ns": None}
    assert still_valid(done, identity, dict(identity)) == ["snapshot", "update", "port"]
    assert still_valid(done, identity, {**identity, "mtime_ns": 6}) == []
    assert still_valid(done, identity, {**identity, "wal_size": 0, "wal_mtime_ns": 7}) == []
    assert still_valid(done, None, identity) == []
    assert still_valid(["check", "stop", "commit"], identity, identity) == []


def test_room_on_disk_and_counts() -> None:
    assert space_needed(100 * MIB, embedded=True) == 364 * MIB
    assert space_needed(100 * MIB, embedded=False) == 164 * MIB
    assert compare_counts({"events": 3, "users": 2}, {"events": 3, "users": 2}) == []
    assert compare_counts({"events": 3, "users": 2}, {"events": 2}) == [
        ("events", 3, 2),
        ("users", 2, None),
    ]


def test_the_port_config_is_a_whole_homeserver_config_without_sleeping_updates(
    tmp_path: Path,
) -> None:
    args = {"host": "/v/postgres/run", "port": "5432", "user": "synapse", "dbname": "synapse",
            "passfile": "/v/secrets/postgres/postgres_synapse.pgpass"}  # fmt: skip
    text = script_config(
        Settings(tmp_path, server_name="city.example", port=0, postgres=args),
        database=postgres_database(args),
        extra={"background_updates": {"sleep_duration_ms": 0}},
    )
    config = yaml.safe_load(text)
    assert config["server_name"] == "city.example"
    assert config["database"] == {
        "name": "psycopg2",
        "args": {**args, "port": 5432, "cp_min": 1, "cp_max": 5},
    }
    assert config["background_updates"] == {"sleep_duration_ms": 0}
    assert "log_config" not in config  # the scripts never write the city's homeserver.log
    assert config["signing_key_path"] == f"{tmp_path}/signing.key"


def _sha(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes() if p.exists() else b"-")
    return h.hexdigest()


def test_a_snapshot_replays_a_killed_servers_wal_and_never_writes_the_original(
    tmp_path: Path,
) -> None:
    db = tmp_path / "synapse" / "homeserver.db"
    db.parent.mkdir()
    # A writer killed with its last rows only in the WAL (no checkpoint at exit).
    subprocess.run(
        [sys.executable, "-c",
         "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
         "c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0'); "
         "c.execute('CREATE TABLE events (n)'); "
         "c.executemany('INSERT INTO events VALUES (?)', [(i,) for i in range(500)]); "
         "c.commit(); os._exit(0)", str(db)],
        check=True,
    )  # fmt: skip
    wal = db.with_name("homeserver.db-wal")
    assert wal.stat().st_size > 0
    before = (_sha(db, wal), source_identity(db))
    take_snapshot(db, tmp_path / "snapshot")
    assert (_sha(db, wal), source_identity(db)) == before
    copy = sqlite3.connect(tmp_path / "snapshot" / "homeserver.db")
    assert copy.execute("SELECT count(*) FROM events").fetchone() == (500,)
    copy.close()
    assert not (tmp_path / "snapshot.part").exists()


def test_a_damaged_original_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "homeserver.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(os.urandom(500),) for _ in range(100)])
    conn.commit()
    conn.close()
    data = bytearray(db.read_bytes())
    data[4096 : 4096 + 8] = b"\xff" * 8  # the second page's b-tree header
    db.write_bytes(bytes(data))
    with pytest.raises(MigrationError) as err:
        take_snapshot(db, tmp_path / "snapshot")
    assert str(err.value).startswith(f"{db}: SQLite finds the database damaged (")
    assert str(err.value).endswith(")")
    assert not (tmp_path / "snapshot").exists()
    assert not (tmp_path / "snapshot.part").exists()


def _city(var: Path, server_name: str = "city.example") -> None:
    (var / "synapse").mkdir(parents=True)
    (var / "synapse" / "homeserver.yaml").write_text(f'server_name: "{server_name}"\n')
    conn = sqlite3.connect(var / "synapse" / "homeserver.db")
    conn.execute("CREATE TABLE users (name)")
    conn.commit()
    conn.close()


def test_the_plan_changes_nothing(tmp_path: Path) -> None:
    var = tmp_path / "var"
    _city(var)
    before = sorted((p, p.stat().st_mtime_ns) for p in var.rglob("*"))
    lines = Migration(var, env={}).plan()
    assert lines[0].startswith(f"source:  {var}/synapse/homeserver.db (0.0 MiB, server name ")
    assert "city.example" in lines[0]
    assert lines[1] == (
        f"target:  the city's own PostgreSQL cluster in {var}/postgres, database 'synapse'"
    )
    assert "running: nothing (the homeserver is stopped)" in lines
    assert [ln.split()[1] for ln in lines if re.match(r"  \d\. ", ln)] == list(STEP_NAMES)
    assert sorted((p, p.stat().st_mtime_ns) for p in var.rglob("*")) == before


def test_a_city_on_postgres_has_nothing_to_migrate(tmp_path: Path) -> None:
    var = tmp_path / "var"
    _city(var)
    write_record(var, {"database": "postgres"})
    with pytest.raises(MigrationError) as err:
        Migration(var, env={}).run()
    assert str(err.value) == (
        f"{var}/database.json: the city runs on PostgreSQL already: nothing to do"
    )


def test_a_var_directory_without_sqlite_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError) as err:
        Migration(tmp_path, env={}).run()
    assert str(err.value) == (
        f"{tmp_path}/synapse/homeserver.db: no SQLite database here: nothing to migrate (is "
        f"{tmp_path} the city's var directory?)"
    )
    assert read_record(tmp_path) is None


def test_a_run_towards_another_target_than_the_interrupted_one_is_refused(
    tmp_path: Path,
) -> None:
    var = tmp_path / "var"
    _city(var)
    earlier = State(
        target={"kind": "embedded", "host": "/x", "port": "5432", "dbname": "synapse",
                "user": "synapse"},
        server_name="city.example",
        done=["check", "stop", "snapshot"],
    )  # fmt: skip
    (var / "migrate-to-postgres").mkdir()
    (var / "migrate-to-postgres" / "state.json").write_bytes(earlier.to_json())
    with pytest.raises(MigrationError) as err:
        Migration(var, env={"CLUBS_PG_HOST": "db.example"}).run()
    assert str(err.value) == (
        f"{var}/migrate-to-postgres/state.json: an earlier run went to embedded PostgreSQL "
        "/x/synapse, not to PostgreSQL at db.example:5432, database 'synapse'; run it with "
        f"the same target, or remove {var}/migrate-to-postgres to start over"
    )
    assert State.load(var / "migrate-to-postgres" / "state.json") == earlier


def test_state_survives_a_round_trip_and_drops_unknown_steps(tmp_path: Path) -> None:
    state = State(target={"kind": "external"}, server_name="s", done=["check", "stop"],
                  source={"ino": 1, "size": 2, "mtime_ns": 3, "wal_size": None,
                          "wal_mtime_ns": None}, filled=True)  # fmt: skip
    path = tmp_path / "state.json"
    path.write_bytes(state.to_json())
    assert State.load(path) == state
    data = json.loads(path.read_text())
    data["done"].append("teleport")
    path.write_text(json.dumps(data))
    assert State.load(path) == state
    path.write_text("{")
    with pytest.raises(MigrationError) as err:
        State.load(path)
    assert str(err.value).startswith(f"{path}: cannot read the migration's state (")


def _wait_for(cond: object, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not callable(cond) or not cond():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_supervisor_is_stopped_before_its_children(tmp_path: Path) -> None:
    """`clubs up` would restart a homeserver stopped under it: the supervisor goes first."""
    var = tmp_path / "var"
    (var / "run").mkdir(parents=True)
    (var / "synapse").mkdir()
    sleeper = "import time; time.sleep(60)"
    up = subprocess.Popen([sys.executable, "-c", sleeper, "clubs", "up"])
    synapse = subprocess.Popen([sys.executable, "-c", sleeper, "synapse"])
    try:
        (var / "run" / "supervisor.pid").write_text(f"{up.pid}\n")
        (var / "synapse" / "homeserver.pid").write_text(f"{synapse.pid}\n")
        _wait_for(lambda: b"clubs" in Path(f"/proc/{up.pid}/cmdline").read_bytes())
        running = find_running(var)
        assert [(r.what, r.pid, r.waits_for) for r in running] == [
            (f"`clubs up` (pid {up.pid})", up.pid, (synapse.pid,))
        ]
        synapse.terminate()  # what the supervisor does to its children when it stops
        stop_running(running, timeout_s=10)
        assert up.wait(5) == -15
    finally:
        for p in (up, synapse):
            p.kill()
            p.wait()


def test_a_lone_synapse_is_stopped_and_a_stale_pid_file_ignored(tmp_path: Path) -> None:
    var = tmp_path / "var"
    (var / "run").mkdir(parents=True)
    (var / "synapse").mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (var / "run" / "supervisor.pid").write_text(f"{dead.pid}\n")
    assert find_running(var) == []
    synapse = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (var / "synapse" / "homeserver.pid").write_text(f"{synapse.pid}\n")
        running = find_running(var)
        assert [r.what for r in running] == [f"Synapse (pid {synapse.pid})"]
        stop_running(running, timeout_s=10)  # its zombie, not yet collected, counts as gone
        assert synapse.wait(5) == -15
    finally:
        synapse.kill()
        synapse.wait()


def test_the_command_parses() -> None:
    args = build_parser().parse_args(["db", "migrate-to-postgres", "--dry-run", "--var-dir", "v"])
    assert (args.command, args.db_command, args.dry_run) == ("db", "migrate-to-postgres", True)


def test_backups_leave_the_migration_behind_but_keep_the_record() -> None:
    assert not _wanted(Path("migrate-to-postgres/sqlite/homeserver.db"))
    assert not _wanted(Path("migrate-to-postgres/snapshot/homeserver.db"))
    assert _wanted(Path("database.json"))


def test_a_failed_script_is_told_by_its_closing_words() -> None:
    log = "2026-12-06 19:29:15,945 - synapse.storage - 88 - INFO - Checking\n"
    assert (
        last_words(
            "=== 2026-12-06 synapse_port_db\nPreparing sqlite3...\n"
            + log
            + "Pending background updates exist in the SQLite3 database. Please start Synapse "
            "again.\n"
        )
        == "Pending background updates exist in the SQLite3 database. Please start Synapse again."
    )
    assert last_words(
        log + "auto_vacuum is enabled in the SQLite database.\n This script relies on rowids."
        "\n PRAGMA auto_vacuum=off;\n VACUUM;"
    ) == (
        "auto_vacuum is enabled in the SQLite database. This script relies on rowids. "
        "PRAGMA auto_vacuum=off; VACUUM;"
    )
    assert (
        last_words(
            log + 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
            "psycopg2.errors.DiskFull: could not extend file\ncould not extend file"
        )
        == "could not extend file"
    )
    assert last_words(log) == "it printed nothing after its log; read the log"


def test_a_switch_cut_before_its_state_was_saved_is_finished_by_the_next_run(
    tmp_path: Path,
) -> None:
    """The record is written, then the state: a crash in between leaves a state that ends at
    verify and a record that says postgres. The next run finishes; it does not start over."""
    var = tmp_path / "var"
    _city(var)
    migration = Migration(var, env={})
    (var / "migrate-to-postgres" / "snapshot").mkdir(parents=True)
    state = State(
        target=migration.target.identity,
        server_name="city.example",
        done=["check", "stop", "snapshot", "update", "port", "sequences", "verify"],
    )
    (var / "migrate-to-postgres" / "state.json").write_bytes(state.to_json())
    write_record(var, {"database": "postgres"})
    assert migration.standing() == (
        f"the city uses PostgreSQL ({var}/database.json); run the command again to finish"
    )
    done = Migration(var, env={}).run()
    assert not done.switched
    assert done.kept == var / "migrate-to-postgres" / "sqlite" / "homeserver.db"
    assert done.kept.exists()
    assert not (var / "synapse" / "homeserver.db").exists()
    assert not (var / "migrate-to-postgres" / "snapshot").exists()
    loaded = State.load(var / "migrate-to-postgres" / "state.json")
    assert loaded is not None
    assert loaded.done[-1] == "finish"
    assert Migration(var, env={}).standing() == f"the city uses PostgreSQL ({var}/database.json)"


def test_one_migration_of_a_city_at_a_time(tmp_path: Path) -> None:
    var = tmp_path / "var"
    _city(var)
    (var / "migrate-to-postgres").mkdir()
    first = Migration(var, env={})
    first._hold_run_lock()
    with pytest.raises(MigrationError) as err:
        Migration(var, env={})._hold_run_lock()
    assert str(err.value) == (
        f"{var}/migrate-to-postgres/run.lock: another `clubs db migrate-to-postgres` runs on "
        f"{var} (pid {os.getpid()}); nothing was stopped or changed"
    )
    assert first._run_lock is not None
    os.close(first._run_lock)
