"""`clubs db migrate-to-postgres` on a running city: real Synapse, real PostgreSQL, the CLI.

One city goes through the whole move in one test (the port costs seconds; a second network would
double them). It has a network applied through the CLI, an encrypted room where a bot decrypted
a member's message, an upload, and a federated room: the city is one of two servers of the
network (TLS from a network CA of the test's own, allow-lists naming each other, the network
file's `servers:`), and its member joined a room on the other server, B, over federation (a
partial-state join, resynced), with messages both ways. The migration is interrupted at every
step with the project's crash points (`CLUBS_CRASH_AT`); after each the record still says
SQLite, the original database is byte for byte what it was, and at the riskiest points the city
really starts on SQLite again and takes new messages, which the finished migration carries over.
Afterwards the city starts on PostgreSQL without CLUBS_DB: the member's old token works, the
upload downloads, `clubs plan` shows no changes, the bot decrypts the old messages with its
untouched store and answers a newcomer. Its homeserver.yaml differs from the SQLite one in the
database alone (the federation listener, its TLS and allow-list are rendered as before); the
member reads the federated room's old messages, a new message and a to-device message cross
each way (the member's device syncing on from its token of before), the room is not
partial-state, the member's new device reaches B's copy of the device list (an outbound
device-list poke written on PostgreSQL), and Synapse logged no error on PostgreSQL.

Bad targets (wrong password, wrong locale, a database with tables, no database) are one located
line each, and the city keeps running on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import canonicaljson
import olm
import psycopg2
import pytest
import yaml
from mautrix.types import RoomID

from clubs.core.ca import NetworkCA
from clubs.core.errors import NotFound
from clubs.core.homeserver import Homeserver, Settings, find_free_port
from clubs.core.http import MatrixHttp, RoomId, path
from clubs.core.postgres import EmbeddedPostgres, choose_database, read_record
from clubs.db_migrate import find_running
from tests.federation import LOOPBACK_RANGES, federation_settings
from tests.harness import Account, SynapseHarness, bootstrap_admin, eventually, postgres_cluster
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
from tests.integration.test_backup import clubs
from tests.mautrix_client import mautrix_peer

ROOT = Path(__file__).resolve().parents[2]
SERVER = "move.local"
OS_USER = "nobody" if os.geteuid() == 0 else None
WORK = "migrate-to-postgres"
OLD = "сказано, когда город был на SQLite"
BETWEEN = "сказано между двумя попытками переноса"
FROM_CITY, FROM_B = "из города, до переноса", "с сервера B, до переноса"
AFTER_CITY, AFTER_B = "из города, уже на PostgreSQL", "с сервера B, городу на PostgreSQL"
TO_DEVICE_TYPE = "org.example.clubs.move_check"
TO_DEVICE_ONLY = quote(
    json.dumps({"room": {"rooms": []}, "presence": {"types": []}, "account_data": {"types": []}})
)


class City:
    """`clubs homeserver run` on one var directory and port (what `make up` supervises)."""

    def __init__(self, var: Path, port: int, env: dict[str, str], server_name: str) -> None:
        self.var, self.port, self.env, self.server_name = var, port, env, server_name
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "clubs.cli", "homeserver", "run", "--var-dir", str(self.var)],
            *["--port", str(self.port), "--server-name", self.server_name],
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
async def running_city(
    var: Path, env: dict[str, str], server_name: str = SERVER
) -> AsyncIterator[City]:
    city = City(var, find_free_port(), env, server_name)
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


def two_servers(var: Path, base: Path) -> tuple[str, Path, dict[str, str], Homeserver]:
    """The city as one of the network's two servers, set up as docs/federation.md says: its name
    `localhost:<federation port>`, its key, certificate and the CA's certificate in
    var/federation (where `clubs federation issue` puts them), the network file's `servers:`
    naming both (its allow-list). And B, the other server, on the same CA, allowing the city.
    Returns (the city's server name, the network file, the city's environment, B)."""
    ca = NetworkCA.create(base / "ca", secrets.token_bytes(16), network="test")
    city_port, b_port = find_free_port(), find_free_port()
    name, b_name = f"localhost:{city_port}", f"localhost:{b_port}"
    ca.issue(name, var / "federation")
    shutil.copyfile(NetworkCA.cert_path(ca.directory), var / "federation" / "ca.crt")
    doc = base / "network.yaml"
    doc.write_text(
        f'version: 1\nnetwork: move-{secrets.token_hex(3)}\nname: "Сеть"\nservers:\n'
        f'  de: {{server_name: "{name}"}}\n  kz: {{server_name: "{b_name}"}}\ncountries:\n'
        '  - key: de\n    name: "Германия"\n    server: de\n    clubs:\n      - key: berlin\n'
        '        name: "Берлин"\n        rooms:\n          - {key: general, name: "Общий"}\n'
    )
    env = {
        "CLUBS_SERVER_NAME": name,
        "CLUBS_NETWORK_FILE": str(doc),
        "CLUBS_FEDERATION_PORT": str(city_port),
        "CLUBS_FEDERATION_BIND": "127.0.0.1",
        "CLUBS_FEDERATION_IP_RANGES": ",".join(LOOPBACK_RANGES),
    }
    b = Homeserver(federation_settings(base / "b", b_name, b_port, ca, [name]))
    return name, doc, env, b


async def test_a_running_city_moves_to_postgres_through_every_interruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_master_key(monkeypatch)  # before the environment is copied for the subprocesses
    with city_dir() as var:
        name, doc, federation, b = two_servers(var, tmp_path)
        env = city_env(var) | federation
        b_started = asyncio.create_task(asyncio.to_thread(b.start))  # beside the city's start
        try:
            async with running_city(var, env, name) as city:
                await b_started
                peer = SynapseHarness(b, await bootstrap_admin(b))
                try:
                    await move(city, var, doc, env, peer)
                finally:
                    await peer.admin.http.close()
                    await peer.close()
        finally:
            with contextlib.suppress(Exception):
                await b_started
            b.stop()


async def message(sender: Account, room: RoomId, body: str) -> str:
    """A plain `m.text` (the federated room is not encrypted: E2EE across servers is
    test_federation.py's); its event id."""
    txn = secrets.token_hex(8)
    content = {"msgtype": "m.text", "body": body}
    sent = await sender.http.put(path(*CS, "rooms", room, "send", "m.room.message", txn), content)
    return str(sent["event_id"])


async def body_of(reader: Account, room: RoomId, event_id: str) -> str | None:
    """The event's body as `reader`'s server has it; None while it has not arrived."""
    try:
        event = await reader.http.get(path(*CS, "rooms", room, "event", event_id))
    except NotFound:
        return None
    return str(event["content"]["body"])


def sqlite_value(var: Path, sql: str, *args: str) -> Any:
    """One value from the city's SQLite database, read-only (None without a row)."""
    uri = f"file:{var / 'synapse' / 'homeserver.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        row = db.execute(sql, args).fetchone()
    return row[0] if row else None


def unpartial_position(var: Path) -> int:
    """Where the city's `un_partial_stated_room_stream` stands (a partial-state join, once
    resynced, advances it; synapse_port_db leaves its PostgreSQL sequence behind)."""
    table = "SELECT MAX(stream_id) FROM un_partial_stated_room_stream"
    recorded = "SELECT MAX(stream_id) FROM stream_positions WHERE stream_name = ?"
    return max(
        sqlite_value(var, table) or 0,
        sqlite_value(var, recorded, "un_partial_stated_room_stream") or 0,
    )


async def devices_seen_by(reader: Account, user_id: str) -> set[str]:
    """The devices with keys that `reader`'s server reports for `user_id` (a remote user's list
    is B's cached copy once they share a room, kept current by the owner's server's pokes)."""
    keys = await reader.http.post(path(*CS, "keys", "query"), {"device_keys": {user_id: []}})
    return set(keys.get("device_keys", {}).get(user_id, {}))


async def new_device_with_keys(account: Account, url: str) -> str:
    """A second login of `account` that uploads its device keys (olm's own, signed); its id."""
    async with MatrixHttp(url) as anon:
        login = await anon.post(
            path(*CS, "login"),
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": account.user_id},
                "password": account.password,
            },
        )
    device = str(login["device_id"])
    olm_account = olm.Account()
    identity = olm_account.identity_keys
    keys: dict[str, object] = {
        "user_id": account.user_id,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"{alg}:{device}": key for alg, key in identity.items()},
    }
    signature = olm_account.sign(canonicaljson.encode_canonical_json(keys))
    keys["signatures"] = {account.user_id: {f"ed25519:{device}": signature}}
    async with MatrixHttp(url, str(login["access_token"])) as http:
        await http.post(path(*CS, "keys", "upload"), {"device_keys": keys})
    return device


async def send_to_device(sender: Account, to: Account) -> str:
    """A to-device message to `to`'s device (as room keys travel; across servers, through the
    sender's device_federation_outbox and the receiver's device_federation_inbox); its nonce."""
    nonce = secrets.token_hex(8)
    messages = {to.user_id: {to.session.device_id: {"nonce": nonce}}}
    txn = secrets.token_hex(8)
    await sender.http.put(path(*CS, "sendToDevice", TO_DEVICE_TYPE, txn), {"messages": messages})
    return nonce


class ToDevice:
    """An account's device syncing its to-device messages only, each sync from the token the
    last one gave (Synapse answers a repeated token from a cache), across the move too: a
    message numbered behind the token after the port would never come."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.since: str | None = None
        self.nonces: set[str] = set()

    async def sync(self) -> None:
        query = f"?timeout=0&filter={TO_DEVICE_ONLY}"
        if self.since is not None:
            query += f"&since={self.since}"
        synced = await self.account.http.get(path(*CS, "sync") + query)
        self.since = str(synced["next_batch"])
        for event in synced.get("to_device", {}).get("events", []):
            if event.get("type") == TO_DEVICE_TYPE:
                self.nonces.add(event["content"].get("nonce"))

    async def received(self, nonce: str) -> bool:
        await self.sync()
        return nonce in self.nonces


async def crosses(sender: Account, inbox: ToDevice) -> None:
    """A to-device message from `sender` comes to `inbox`'s device."""
    nonce = await send_to_device(sender, inbox.account)
    await eventually(lambda: inbox.received(nonce), within=20)


def rendered(var: Path) -> dict[str, object]:
    """The city's homeserver.yaml as its last start rendered it, without `database`."""
    config = yaml.safe_load((var / "synapse" / "homeserver.yaml").read_text())
    config.pop("database")
    return dict(config)


async def move(city: City, var: Path, doc: Path, env: dict[str, str], b: SynapseHarness) -> None:
    # --- a city on SQLite with a network, an encrypted conversation and an upload -----------
    hs = Homeserver(Settings(var / "synapse", server_name=city.server_name, port=city.port))
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

    # --- a federated room: on B, the member joined it from the city, messages both ways -----
    federation = rendered(var)
    assert federation["federation_domain_whitelist"] == [b.server_name]
    bob = await b.new_user("bob")
    created = await bob.http.post(
        path(*CS, "createRoom"),
        {"room_version": "12", "preset": "private_chat", "invite": [member.user_id]},
    )
    shared = RoomId(created["room_id"])
    await member.http.post(path(*CS, "join", shared) + f"?server_name={b.server_name}", {})
    from_city = await message(member, shared, FROM_CITY)
    from_b = await message(bob, shared, FROM_B)
    assert await eventually(lambda: body_of(bob, shared, from_city), within=20) == FROM_CITY
    assert await eventually(lambda: body_of(member, shared, from_b), within=20) == FROM_B

    # The join was a partial-state one (the room's state came later from B): the resync is done
    # and advanced the city's un_partial_stated_room_stream.
    async def resynced() -> bool:
        left = sqlite_value(var, "SELECT 1 FROM partial_state_rooms WHERE room_id = ?", shared)
        return left is None and unpartial_position(var) > 0

    await eventually(resynced, within=20)
    assert (
        sqlite_value(
            var, "SELECT room_id FROM un_partial_stated_room_stream WHERE room_id = ?", shared
        )
        == shared
    )
    # B keeps a copy of the member's device list from here (they share a room).
    assert member.session.device_id in await devices_seen_by(bob, member.user_id)
    # To-device messages cross both ways; the member's device syncs on after the move from
    # its token of before.
    member_inbox, bob_inbox = ToDevice(member), ToDevice(bob)
    await member_inbox.sync()
    await bob_inbox.sync()
    await crosses(member, bob_inbox)
    await crosses(bob, member_inbox)

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
    # The resynced join's stream position is ahead of its PostgreSQL sequence after the port:
    # Synapse refuses to start on it until the migration's sequence step.
    unpartial = unpartial_position(var)
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
    assert re.search(rf"un_partial_stated_room_stream_sequence -> {unpartial}\b", out), out
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
    city_log = var / "synapse" / "homeserver.log"
    logged_before = city_log.stat().st_size
    await city.start()
    assert city.database_kind() == "postgres"
    async with MatrixHttp(city.url, member.session.access_token) as http:
        assert (await http.get(path(*CS, "account", "whoami")))["user_id"] == member.user_id
        raw_old = await http.get(path(*CS, "rooms", room, "event", old))
        raw_between = await http.get(path(*CS, "rooms", room, "event", between))
    assert await download(city.url, member.session.access_token, mxc) == upload
    code, out, err = await clubs("plan", str(doc), env=env)
    assert code == 0, out + err  # no changes

    # --- the federated room, on PostgreSQL ---------------------------------------------------
    # The same federation listener, TLS files and allow-list: only the database changed.
    assert rendered(var) == federation
    async with MatrixHttp(city.url, member.session.access_token) as http:
        for event_id, body in ((from_city, FROM_CITY), (from_b, FROM_B)):
            old_event = await http.get(path(*CS, "rooms", shared, "event", event_id))
            assert old_event["content"]["body"] == body
    pg = EmbeddedPostgres(var / "postgres", var / "secrets" / "postgres", os_user=OS_USER)
    conn = psycopg2.connect(**pg.admin_args(pg.dbname))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM partial_state_rooms")
            assert cur.fetchone() == (0,)
    finally:
        conn.close()
    # A new message each way: the city first (B then knows it is back and delivers at once).
    after_city = await message(member, shared, AFTER_CITY)
    assert await eventually(lambda: body_of(bob, shared, after_city), within=20) == AFTER_CITY
    after_b = await message(bob, shared, AFTER_B)
    assert await eventually(lambda: body_of(member, shared, after_b), within=20) == AFTER_B
    # To-device messages both ways (as room keys travel), each sync going on from its token.
    await crosses(member, bob_inbox)
    await crosses(bob, member_inbox)
    # A device made on PostgreSQL: the city's device-list poke (a row of
    # device_lists_outbound_pokes, numbered by the ported sequence) reaches B, whose copy of the
    # member's list then has the device.
    b_log = b.hs.settings.log_file
    seen_before = b_log.stat().st_size
    device = await new_device_with_keys(member, city.url)

    async def b_knows() -> bool:
        with b_log.open("rb") as f:
            f.seek(seen_before)
            poked = f"Received device list update for {member.user_id}".encode() in f.read()
        return poked and device in await devices_seen_by(bob, member.user_id)

    await eventually(b_knows, within=20)

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
    # Nothing went wrong on PostgreSQL that Synapse only logs (a stream behind its sequence, a
    # federation sender's failure).
    with city_log.open("rb") as f:
        f.seek(logged_before)
        text = f.read().decode()
    errors = [line for line in text.splitlines() if re.search(r" - (ERROR|CRITICAL) - ", line)]
    assert "STARTING SERVER" in text  # the start on PostgreSQL is in what was read
    assert errors == []
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
