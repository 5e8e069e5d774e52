"""Synapse as main + workers + Redis behind the front (CLUBS_WORKERS=1), in the normal suite.

One stack for the module (PostgreSQL from the wheel, Valkey on a Unix socket, main, an event
persister, a client worker, a federation sender; docs/workers.md). Through the front: the
provisioning chain (`clubs validate/plan/apply` of a small network) and a bot answering a member's
`!ping` in an encrypted room, both imported from their own modules and run here; an event sent
through the front is written by the persister and seen by a `/sync` on the client worker itself;
the admin API is refused to non-loopback peers by the routing; and a wrong worker file is one
located error from `clubs homeserver run` with nothing started.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psycopg2
import pytest

from clubs.core.errors import MatrixError
from clubs.core.http import MatrixHttp, path
from clubs.core.postgres import EmbeddedPostgres
from clubs.workersrun import Stack
from tests.harness import SynapseHarness, eventually, postgres_cluster, synapse_workers_on
from tests.integration.bots.support import CS, fixed_master_key
from tests.integration.bots.test_runtime import (
    test_ping_in_managed_encrypted_room_is_answered_and_trusted as test_bot_answers_through_workers,
)
from tests.integration.provisioning.test_example import (
    test_cli_plan_exit_codes_and_apply as test_provisioning_cli_through_workers,
)
from tests.integration.test_postgres import _gone

__all__ = ["test_bot_answers_through_workers", "test_provisioning_cli_through_workers"]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pg() -> Iterator[EmbeddedPostgres]:
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
async def stack_and_synapse(
    pg: EmbeddedPostgres,
) -> AsyncIterator[tuple[SynapseHarness, Stack]]:
    # Not pytest's tmp tree: its long path would not fit the Redis socket's 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="clubs-w-"))
    try:
        async with synapse_workers_on(base / "synapse", pg) as both:
            yield both
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def synapse(stack_and_synapse: tuple[SynapseHarness, Stack]) -> SynapseHarness:
    """This module's Synapse: the worker stack (it hides the session's single process)."""
    return stack_and_synapse[0]


@pytest.fixture(scope="module")
def stack(stack_and_synapse: tuple[SynapseHarness, Stack]) -> Stack:
    return stack_and_synapse[1]


@pytest.fixture(autouse=True)
def master_key(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_master_key(monkeypatch)  # as the bots' own conftest does for the imported bot test


async def test_every_process_runs_and_only_the_front_is_client_facing(stack: Stack) -> None:
    names = ["redis", "main", "persister1", "worker1", "fedsender1"]
    assert all(stack.pid(n) for n in names)
    main = stack.main
    config = main.config_file.read_text()
    assert "name: psycopg2" in config
    assert f"path: {main.layout.redis_socket}" in config
    assert main.layout.redis_socket.stat().st_mode & 0o077 == 0
    assert (main.layout.redis_dir.stat().st_mode & 0o777) == 0o700
    secret = main.layout.replication_secret.read_text().strip()
    for f in [main.config_file, *main.layout.workers_dir.iterdir()]:
        assert secret not in f.read_text()  # the secret is read from its 0600 file
    async with MatrixHttp(stack.url) as anon:
        versions = await anon.get(path(*CS[:2], "versions"))
    assert "v1.11" in versions["versions"]


async def test_event_written_by_the_persister_is_seen_by_a_sync_on_the_client_worker(
    synapse: SynapseHarness, stack: Stack, pg: EmbeddedPostgres
) -> None:
    ana = await synapse.new_user("ana")
    room = (await ana.http.post(path(*CS, "createRoom"), {"name": "w"}))["room_id"]
    first = await ana.http.get(path(*CS, "sync"), query={"timeout": "0"})
    sent = await ana.http.put(
        path(*CS, "rooms", room, "send", "m.room.message", "w-1"),
        {"msgtype": "m.text", "body": "через воркеры"},
    )
    conn = psycopg2.connect(**pg.admin_args("synapse"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT instance_name FROM events WHERE event_id = %s", (sent["event_id"],))
            assert cur.fetchone() == ("persister1",)
    finally:
        conn.close()
    client_port = stack.main.ports.workers["worker1"]
    async with MatrixHttp(f"http://127.0.0.1:{client_port}", ana.session.access_token) as direct:

        async def seen() -> bool:
            batch = await direct.get(
                path(*CS, "sync"), query={"since": first["next_batch"], "timeout": "1000"}
            )
            events = batch.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {})
            return any(e["event_id"] == sent["event_id"] for e in events.get("events", []))

        await eventually(seen, within=10)


@pytest.mark.parametrize("victim", ["worker1", "redis"])
async def test_killed_process_is_restarted_and_nothing_sent_meanwhile_is_lost(
    synapse: SynapseHarness, stack: Stack, victim: str
) -> None:
    """SIGKILL the client worker (the front answers 502 until it is back) or Redis (replication
    between the processes): five sends retried under their transaction ids land once each, and
    an incremental /sync (on the client worker, fed by the persister through Redis) sees them."""
    ana = await synapse.new_user("ana")
    room = (await ana.http.post(path(*CS, "createRoom"), {"name": "k"}))["room_id"]
    since = (await ana.http.get(path(*CS, "sync"), query={"timeout": "0"}))["next_batch"]
    before = stack.pid(victim)
    assert before is not None
    os.kill(before, 9)
    sent = []
    for i in range(5):

        async def send(i: int = i) -> str | None:
            try:
                answer = await ana.http.put(
                    path(*CS, "rooms", room, "send", "m.room.message", f"k-{i}"),
                    {"msgtype": "m.text", "body": f"{i}"},
                )
            except MatrixError:  # the 502 of a worker being restarted
                return None
            return str(answer["event_id"])

        sent.append(await eventually(send, within=60, interval=0.2))

    async def back() -> bool:
        return stack.pid(victim) not in (None, before)

    await eventually(back, within=30)
    history = await ana.http.get(
        path(*CS, "rooms", room, "messages"), query={"dir": "b", "limit": "20"}
    )
    bodies = [e["content"]["body"] for e in history["chunk"] if e["type"] == "m.room.message"]
    assert sorted(bodies) == ["0", "1", "2", "3", "4"]
    assert len(set(sent)) == 5
    seen: set[str] = set()

    async def synced() -> bool:
        nonlocal since
        batch = await ana.http.get(path(*CS, "sync"), query={"since": since, "timeout": "1000"})
        since = batch["next_batch"]
        timeline = batch.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {})
        seen.update(e["event_id"] for e in timeline.get("events", []))
        return set(sent) <= seen

    await eventually(synced, within=30)


async def test_media_goes_up_and_down_through_the_front_byte_for_byte(
    synapse: SynapseHarness, stack: Stack
) -> None:
    ana = await synapse.new_user("ana")
    upload = os.urandom(1_500_000)  # many chunks of the front's relay, both ways
    auth = {"Authorization": f"Bearer {ana.session.access_token}"}
    async with aiohttp.ClientSession(headers=auth) as session:
        async with session.post(
            f"{stack.url}/_matrix/media/v3/upload",
            data=io.BytesIO(upload),
            headers={"Content-Type": "application/octet-stream"},
        ) as resp:
            assert resp.status == 200
            mxc = (await resp.json())["content_uri"]
        server, media_id = mxc.removeprefix("mxc://").split("/", 1)
        async with session.get(
            f"{stack.url}/_matrix/client/v1/media/download/{server}/{media_id}"
        ) as resp:
            assert resp.status == 200
            assert await resp.read() == upload


async def test_admin_api_through_the_front_is_loopback_only(synapse: SynapseHarness) -> None:
    from clubs.core.front import Refused, route

    admin = "/_synapse/admin/v2/users/@x:test.local"
    assert route(admin, "127.0.0.1", has_client_worker=True) == "main"
    assert isinstance(route(admin, "192.0.2.7", has_client_worker=True), Refused)
    # Through the real front, from loopback, the provisioner's admin call reaches main.
    who = await synapse.admin.http.get(
        path("_synapse", "admin", "v2", "users", synapse.admin.user_id)
    )
    assert who["admin"] is True


async def test_wrong_worker_file_is_one_located_error_and_nothing_starts(tmp_path: Path) -> None:
    shape = tmp_path / "workers.yaml"
    shape.write_text(
        "version: 1\n"
        "workers:\n"
        "  persister1: {kind: stream_writer}\n"
        "stream_writers:\n"
        "  events: [persister1, persister2]\n"
    )
    var = Path(tempfile.mkdtemp(prefix="clubs-wv-"))
    env = {
        **os.environ,
        "CLUBS_WORKERS": "1",
        "CLUBS_WORKERS_CONFIG": str(shape),
        "CLUBS_PG_OS_USER": "nobody",
    }
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "clubs.cli", "homeserver", "run", "--var-dir", str(var)],
        *["--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        left = sorted(p.name for p in var.iterdir())
    finally:
        shutil.rmtree(var, ignore_errors=True)
    assert proc.returncode == 1
    assert err.decode() == (
        f'clubs: error: {shape}:5:24: stream_writers.events[1]: "persister2" is not an '
        "instance: instance_map has main, persister1\n"
    )
    assert left == []  # no cluster, no Synapse files, no process


async def test_homeserver_run_with_workers_starts_the_stack_and_stops_every_process() -> None:
    """What `make up CLUBS_WORKERS=1` supervises: `clubs homeserver run` with CLUBS_WORKERS=1
    (CLUBS_DB unset means PostgreSQL) answers on its port; SIGTERM stops every process."""
    var = Path(tempfile.mkdtemp(prefix="clubs-wr-"))
    var.chmod(0o755)  # the PostgreSQL user passes through it
    env = {**os.environ, "CLUBS_WORKERS": "1", "CLUBS_PG_OS_USER": "nobody"}
    env.pop("CLUBS_DB", None)
    env.pop("CLUBS_WORKERS_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "clubs.cli", "homeserver", "run", "--var-dir", str(var)],
        *["--port", "0", "--server-name", "w.local"],
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
        assert line.startswith("Synapse is running on http://127.0.0.1:"), line
        assert line.endswith(" with 3 worker(s) (Ctrl-C stops it)\n"), line
        run_dir = var / "synapse" / "run"
        pids = {f.stem: int(f.read_text()) for f in run_dir.glob("*.pid")}
        assert sorted(pids) == ["fedsender1", "main", "persister1", "redis", "worker1"]
        async with MatrixHttp(line.split()[4]) as anon:
            assert "versions" in await anon.get(path(*CS[:2], "versions"))
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        assert all(_gone(pid) for pid in pids.values())
        assert not (var / "postgres" / "data" / "postmaster.pid").exists()
    finally:
        if proc.returncode is None:
            proc.kill()
        shutil.rmtree(var, ignore_errors=True)
