"""`clubs db migrate-to-postgres` on a running city: real Synapse, real PostgreSQL, the CLI.

One city goes through the whole move in one test (the port costs seconds; a second network would
double them). It has a network applied through the CLI, an encrypted room where a bot decrypted
a member's message, and an upload. The migration is interrupted at every step with the
project's crash points (`CLUBS_CRASH_AT`); after each the record still says SQLite, the original
database is byte for byte what it was, and at the riskiest points the city really starts on
SQLite again and takes new messages, which the finished migration carries over. Afterwards the
city starts on PostgreSQL without CLUBS_DB: the member's old token works, the upload downloads,
`clubs plan` shows no changes, the bot decrypts the old messages with its untouched store and
answers a newcomer.

Bad targets (wrong password, wrong locale, a database with tables, no database) are one located
line each, and the city keeps running on SQLite.

Not here: a federated room. Federation between the network's servers was built at the same time;
docs/migration.md says what the migration does about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psycopg2
import pytest
from mautrix.types import RoomID

from clubs.core.homeserver import Homeserver, Settings, find_free_port
from clubs.core.http import MatrixHttp, RoomId, path
from clubs.core.postgres import EmbeddedPostgres, choose_database, read_record
from clubs.db_migrate import find_running
from tests.harness import SynapseHarness, bootstrap_admin, eventually, postgres_cluster
from tests.integration.bots.support import (
    CS,
    bot_host,
    echo_room,
    fixed_master_key,
    joined,
    send_text,
    simple_factory,
)
from tests.integration.bots.test_runtime import Echo, wait_reply
from tests.integration.test_backup import clubs, network_file
from tests.mautrix_client import mautrix_peer

ROOT = Path(__file__).resolve().parents[2]
SERVER = "move.local"
OS_USER = "nobody" if os.geteuid() == 0 else None
WORK = "migrate-to-postgres"
OLD = "сказано, когда город был на SQLite"
BETWEEN = "сказано между двумя попытками переноса"


class City:
    """`clubs homeserver run` on one var directory and port (what `make up` supervises)."""

    def __init__(self, var: Path, port: int, env: dict[str, str]) -> None:
        self.var, self.port, self.env = var, port, env
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "clubs.cli", "homeserver", "run", "--var-dir", str(self.var)],
            *["--port", str(self.port), "--server-name", SERVER],
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 90)).decode()
        assert line.startswith(f"Synapse is running on {self.url}"), line

    async def exited(self) -> int:
        """The city's process, stopped by someone else (the migration): its exit status."""
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), 30)
        self.proc = None
        return code

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.exited()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    def database_kind(self) -> str:
        config = (self.var / "synapse" / "homeserver.yaml").read_text()
        return "postgres" if "name: psycopg2" in config else "sqlite"


@contextlib.contextmanager
def city_dir() -> Iterator[Path]:
    """A var directory the PostgreSQL server's user can reach (pytest's tmp tree is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="clubs-migrate-"))
    base.chmod(0o755)
    var = base / "var"
    try:
        yield var
    finally:
        with contextlib.suppress(Exception):  # a cluster a crashed run left running
            EmbeddedPostgres(var / "postgres", var / "secrets" / "postgres", os_user=OS_USER).stop()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_city(var: Path, env: dict[str, str]) -> AsyncIterator[City]:
    city = City(var, find_free_port(), env)
    try:
        await city.start()
        yield city
    finally:
        city.kill()
        if city.proc is not None:
            await city.proc.wait()


def city_env(var: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CLUBS_DB" and not k.startswith("CLUBS_PG")}
    return env | {"CLUBS_PG_OS_USER": OS_USER or "", "CLUBS_VAR_DIR": str(var)}


async def migrate(env: dict[str, str], *extra: str, crash: str | None = None) -> tuple[int, str]:
    code, out, err = await clubs(
        "db", "migrate-to-postgres", *extra, env={**env, "CLUBS_CRASH_AT": crash or ""}
    )
    return code, out + err


def digest(var: Path) -> str:
    db = var / "synapse" / "homeserver.db"
    h = hashlib.sha256(db.read_bytes())
    wal = db.with_name("homeserver.db-wal")
    h.update(wal.read_bytes() if wal.exists() else b"")
    return h.hexdigest()


def assert_on_sqlite(var: Path, env: dict[str, str]) -> None:
    assert read_record(var) == {"database": "sqlite"}
    assert choose_database(var, env).postgres is None


async def download(url: str, token: str, mxc: str) -> bytes:
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


async def test_a_running_city_moves_to_postgres_through_every_interruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_master_key(monkeypatch)  # before the environment is copied for the subprocesses
    doc = network_file(tmp_path)
    with city_dir() as var:
        env = city_env(var) | {"CLUBS_SERVER_NAME": SERVER}
        async with running_city(var, env) as city:
            await move(city, var, doc, env)


async def move(city: City, var: Path, doc: Path, env: dict[str, str]) -> None:
    # --- a city on SQLite with a network, an encrypted conversation and an upload -----------
    hs = Homeserver(Settings(var / "synapse", server_name=SERVER, port=city.port))
    synapse = SynapseHarness(hs, await bootstrap_admin(hs))  # the running city, seen from here
    env |= {
        "CLUBS_HOMESERVER_URL": city.url,
        "CLUBS_ADMIN_TOKEN": synapse.admin.session.access_token,
    }
    code, out, err = await clubs("apply", str(doc), "--yes", env=env)
    assert code == 0, err
    network, account, member, room = await echo_room(synapse, var)
    bot = Echo()
    async with (
        bot_host(synapse, var, [account], {"echo": simple_factory(bot)}, network=network),
        mautrix_peer(member, city.url) as peer,
    ):
        await eventually(lambda: joined(member, room, account.user_id), within=20)
        old = await send_text(peer, room, OLD)

        async def seen() -> bool:
            return old in bot.seen

        await eventually(seen, within=20)
    upload = b"\x89PNG" + os.urandom(3000)
    mxc = (await member.http.request_bytes("POST", "/_matrix/media/v3/upload", upload))[
        "content_uri"
    ]

    # --- the plan changes nothing -----------------------------------------------------------
    code, out = await migrate(env, "--dry-run")
    assert code == 0, out
    assert out.startswith("clubs db migrate-to-postgres --dry-run: the plan (nothing is changed)\n")
    assert city.proc is not None
    assert f"running: `clubs homeserver run` (pid {city.proc.pid}) (stopped by the run)" in out
    assert not any((var / name).exists() for name in ("database.json", "postgres", WORK))

    # --- interrupted after the check: the city was not even stopped --------------------------
    code, out = await migrate(env, crash="pgmigrate.checked")
    assert code == 137, out
    assert_on_sqlite(var, env)
    async with MatrixHttp(city.url, member.session.access_token) as http:
        assert (await http.get(path(*CS, "account", "whoami")))["user_id"] == member.user_id

    # --- interrupted after the stop: it starts again on SQLite and takes new messages --------
    code, out = await migrate(env, crash="pgmigrate.stopped")
    assert code == 137, out
    assert await city.exited() == 0
    assert_on_sqlite(var, env)
    # A stream position ahead of its PostgreSQL sequence (as a faster join over federation
    # leaves): Synapse refuses to start on the port until the migration's sequence step.
    with contextlib.closing(sqlite3.connect(var / "synapse" / "homeserver.db")) as db, db:
        db.execute(
            "INSERT INTO stream_positions VALUES ('un_partial_stated_room_stream', 'master', 7)"
        )
    await city.start()
    assert city.database_kind() == "sqlite"
    second = await synapse.new_user("second")
    await synapse.admin.http.post(path(*CS, "rooms", room, "invite"), {"user_id": second.user_id})
    await second.http.post(path(*CS, "join", room), {})
    async with mautrix_peer(second, city.url) as peer:
        # The bot is away: the room key waits for its device on the server (to-device).
        between = await send_text(peer, room, BETWEEN)

    # --- resumed runs, each interrupted one step further; the first stops the city again ----
    original = ""
    for point in ("pgmigrate.snapshot", "pgmigrate.updated", "pgmigrate.porting:3",
                  "pgmigrate.ported", "pgmigrate.sequences", "pgmigrate.verified"):  # fmt: skip
        code, out = await migrate(env, crash=point)
        assert code == 137, f"{point}: {out}"
        if point == "pgmigrate.snapshot":
            assert await city.exited() == 0
            original = digest(var)
        assert_on_sqlite(var, env)
        assert digest(var) == original, point  # never written, only copied
        assert find_running(var) == []

    # Everything is built and verified but not switched: the city still starts on SQLite.
    await city.start()
    assert city.database_kind() == "sqlite"
    async with MatrixHttp(city.url, member.session.access_token) as http:
        event = await http.get(path(*CS, "rooms", room, "event", between))
        assert event["type"] == "m.room.encrypted"
    await city.stop()  # it wrote to SQLite: the next run starts over from a new snapshot

    code, out = await migrate(env, crash="pgmigrate.committed")
    assert code == 137, out
    assert "snapshot: emptying the target (filled from an older snapshot)" in out
    assert "un_partial_stated_room_stream_sequence -> 7" in out  # and the others, called
    assert "verify: the same rows on both sides (users " in out
    assert f"verify: a sync of {synapse.admin.user_id} shows its " in out
    assert "verify: the newest upload downloads (3004 bytes)" in out
    assert read_record(var) == {"database": "postgres"}
    code, out = await migrate(env)
    assert code == 0, out
    assert out.splitlines()[0] == "migration finished (an earlier run made the switch)"
    kept = var / WORK / "sqlite" / "homeserver.db"
    assert f"the SQLite database as it was is kept in {kept}" in out
    assert not (var / "synapse" / "homeserver.db").exists()
    assert not (var / WORK / "snapshot").exists()
    code, out = await migrate(env)
    assert code == 1
    assert out == (
        f"clubs: error: {var}/database.json: the city runs on PostgreSQL already: nothing to "
        f"do\nthe city uses PostgreSQL ({var}/database.json)\n"
    )

    # --- the city on PostgreSQL, started as before (no CLUBS_DB) ----------------------------
    await city.start()
    assert city.database_kind() == "postgres"
    async with MatrixHttp(city.url, member.session.access_token) as http:
        assert (await http.get(path(*CS, "account", "whoami")))["user_id"] == member.user_id
        raw_old = await http.get(path(*CS, "rooms", room, "event", old))
        raw_between = await http.get(path(*CS, "rooms", room, "event", between))
    assert await download(city.url, member.session.access_token, mxc) == upload
    code, out, err = await clubs("plan", str(doc), env=env)
    assert code == 0, out + err  # no changes

    newcomer = await synapse.new_user("newcomer")
    await synapse.admin.http.post(path(*CS, "rooms", room, "invite"), {"user_id": newcomer.user_id})
    await newcomer.http.post(path(*CS, "join", room), {})
    bot = Echo()
    async with (
        bot_host(synapse, var, [account], {"echo": simple_factory(bot)}, network=network) as host,
        mautrix_peer(newcomer, city.url) as peer,
    ):
        client = host.runtime("echo").client
        event = await client.decrypt_json(RoomId(room), raw_old)
        assert event is not None
        assert event.decrypted
        assert event.content["body"] == OLD

        async def between_decrypted() -> bool:
            # Its key came to the bot's device by to-device message while the bot was away;
            # the bot's first syncs on PostgreSQL deliver it.
            got = await client.decrypt_json(RoomId(room), raw_between)
            return got is not None and got.decrypted and got.content.get("body") == BETWEEN

        await eventually(between_decrypted, within=20)
        # The first room key sent after the move: with the stream sequences as synapse_port_db
        # leaves them, its to-device position was one the bot had already synced past.
        await peer.send_text(RoomID(room), "!ping")
        reply = await wait_reply(peer, account.user_id, room, 0)
        assert (reply.msgtype, reply.body) == ("m.notice", "Pong 🏓")
    await synapse.close()
    await synapse.admin.http.close()
    await city.stop()


def _admin_sql(pg: EmbeddedPostgres, *statements: str, dbname: str = "postgres") -> None:
    conn = psycopg2.connect(**pg.admin_args(dbname))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


async def test_a_bad_target_is_one_located_line_and_the_city_keeps_running() -> None:
    with city_dir() as var, postgres_cluster() as pg:
        env = city_env(var)
        async with running_city(var, env) as city:
            _admin_sql(
                pg,
                "CREATE DATABASE wrong_locale OWNER synapse ENCODING 'UTF8' "
                "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0",
                "CREATE DATABASE used OWNER synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
                "TEMPLATE template0",
            )
            _admin_sql(pg, "CREATE TABLE someone_elses (x int)", dbname="used")
            wrong = var.parent / "wrong-password"
            wrong.write_text("not-the-password\n")
            sock = f"{pg.socket_dir}:5432"
            config = var / "synapse" / "homeserver.yaml"
            server = {"CLUBS_PG_HOST": str(pg.socket_dir), "CLUBS_PG_USER": "synapse"}
            right = {"CLUBS_PG_PASSWORD_FILE": str(pg.password_file)}
            before = sorted(var.rglob("*"))  # the running city's own files change, not the set
            cases = [
                (
                    {"CLUBS_PG_DB": "synapse", "CLUBS_PG_PASSWORD_FILE": str(wrong)},
                    f"{wrong}: PostgreSQL at {sock} refused the password of user 'synapse' for "
                    f'database.args.password: connection to server on socket "{pg.socket_dir}/'
                    '.s.PGSQL.5432" failed: FATAL:  password authentication failed for user '
                    '"synapse"',
                ),
                (
                    {"CLUBS_PG_DB": "wrong_locale", **right},
                    f"{config}: database.args.dbname: database 'wrong_locale' at {sock} has "
                    "ENCODING 'UTF8', LC_COLLATE 'C.UTF-8', LC_CTYPE 'C.UTF-8'; Synapse needs "
                    "UTF8 and C for both: recreate it with `createdb --encoding=UTF8 "
                    "--locale=C --template=template0 wrong_locale` (or initdb --locale=C)",
                ),
                (
                    {"CLUBS_PG_DB": "used", **right},
                    f"{config}: database.args.dbname: database 'used' at {sock} is not empty "
                    "(public.someone_elses); the migration ports into an empty database only "
                    "(create a new one with `createdb --encoding=UTF8 --locale=C "
                    "--template=template0`)",
                ),
                (
                    {"CLUBS_PG_DB": "nope", **right},
                    f"{config}: database.args.dbname: PostgreSQL at {sock} has no database "
                    "'nope'; create it with `createdb --encoding=UTF8 --locale=C "
                    "--template=template0 nope`",
                ),
            ]
            for settings, error in cases:
                code, out = await migrate(env | server | settings)
                assert code == 1, out
                assert out == (
                    f"clubs: error: {error}; nothing was stopped or changed\n"
                    "the city still uses SQLite\n"
                )
                assert city.proc is not None
                assert city.proc.returncode is None
                async with MatrixHttp(city.url) as anon:
                    assert "versions" in await anon.get(path("_matrix", "client", "versions"))
            assert sorted(var.rglob("*")) == before
            # The same server with the right database: the plan says what would happen.
            code, out = await migrate(
                env | server | right | {"CLUBS_PG_DB": "synapse"}, "--dry-run"
            )
            assert code == 0, out
            assert f"  target:  PostgreSQL at {sock}, database 'synapse'\n" in out
            assert "           reachable, UTF8, C collation and ctype, empty\n" in out
