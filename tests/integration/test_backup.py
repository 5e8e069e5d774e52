"""The restore drill: apply, back up (while everything runs), destroy var/, restore.

Afterwards the provisioner's and a member's old tokens work, `clubs plan` shows no changes, the
bot decrypts a message sent before the backup with its restored keys, and it answers a command
in the same encrypted room. On SQLite, and on the city's own PostgreSQL cluster (pg_dump while
it runs; a new cluster and pg_restore after the loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mautrix.types import RoomID

from clubs.core.homeserver import Homeserver, Settings
from clubs.core.http import MatrixHttp, RoomId, path
from clubs.core.postgres import EmbeddedPostgres
from tests.harness import SynapseHarness, bootstrap_admin, eventually
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
from tests.mautrix_client import mautrix_peer

ROOT = Path(__file__).resolve().parents[2]
SERVER = "drill.local"
OS_USER = "nobody" if os.geteuid() == 0 else None


async def clubs(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "clubs.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def network_file(tmp_path: Path) -> Path:
    doc = tmp_path / "network.yaml"
    doc.write_text(
        f'version: 1\nnetwork: drill-{secrets.token_hex(3)}\nname: "Сеть"\ncountries:\n'
        '  - key: de\n    name: "Германия"\n    clubs:\n      - key: berlin\n'
        '        name: "Берлин"\n        rooms:\n          - {key: general, name: "Общий"}\n'
    )
    return doc


@contextlib.contextmanager
def city(var: Path, db: str, port: int = 0) -> Iterator[Homeserver]:
    """The city's homeserver on `var`, as `clubs homeserver run` lays it out: SQLite, or its
    own PostgreSQL cluster under var/postgres (run by `nobody` when we are root)."""
    pg = None
    if db == "postgres":
        pg = EmbeddedPostgres(var / "postgres", var / "secrets" / "postgres", os_user=OS_USER)
        pg.start()
    try:
        hs = Homeserver(
            Settings(
                data_dir=var / "synapse",
                server_name=SERVER,
                port=port,
                postgres=pg.synapse_args() if pg is not None else None,
            )
        )
        hs.start()
        try:
            yield hs
        finally:
            hs.stop()
    finally:
        if pg is not None:
            pg.stop()


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_restore_drill(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_master_key(monkeypatch)  # the master key lives outside var/, as it must
    # The PostgreSQL server's user must reach var/postgres: pytest's tmp tree is 0700.
    base = Path(tempfile.mkdtemp(prefix="clubs-drill-")) if db == "postgres" else tmp_path
    base.chmod(0o755)
    var = base / "var"
    backup_file = tmp_path / "city.backup"
    doc = network_file(tmp_path)
    env = {
        **os.environ,
        "CLUBS_DB": db,
        "CLUBS_PG_OS_USER": OS_USER or "",
        "CLUBS_VAR_DIR": str(var),
    }
    try:
        await drill(var, db, doc, backup_file, env)
    finally:
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


async def drill(var: Path, db: str, doc: Path, backup_file: Path, env: dict[str, str]) -> None:
    with city(var, db) as hs:
        synapse = SynapseHarness(hs, await bootstrap_admin(hs))
        env |= {
            "CLUBS_HOMESERVER_URL": synapse.url,
            "CLUBS_ADMIN_TOKEN": synapse.admin.session.access_token,
            "CLUBS_SERVER_NAME": SERVER,
        }
        code, out, err = await clubs("apply", str(doc), "--yes", env=env)
        assert code == 0, err
        network, account, member, room = await echo_room(synapse, var)
        bot = Echo()
        async with (
            bot_host(synapse, var, [account], {"echo": simple_factory(bot)}, network=network),
            mautrix_peer(member, synapse.url) as peer,
        ):
            await eventually(lambda: joined(member, room, account.user_id), within=20)
            old = await send_text(peer, room, "сказано до резервной копии")

            async def seen() -> bool:
                return old in bot.seen

            await eventually(seen, within=20)  # the bot decrypted it: its store has the key
            code, out, err = await clubs("backup", "--out", str(backup_file), env=env)
            assert code == 0, err
            assert out.startswith(f"backup: {backup_file} (")
        await synapse.close()
        await synapse.admin.http.close()
    port = hs.port

    sealed = backup_file.read_bytes()
    assert sealed.startswith(b"CLUBSBK1")
    assert b"SQLite format 3" not in sealed  # nothing in clear, not even file headers
    assert backup_file.stat().st_mode & 0o777 == 0o600
    shutil.rmtree(var)  # the disaster
    code, out, err = await clubs("restore", str(backup_file), env=env)
    assert code == 0, err
    assert out.startswith("restored ")

    with city(var, db, port) as hs:
        admin = synapse.admin
        admin.http = MatrixHttp(hs.url, admin.session.access_token)
        restored = SynapseHarness(hs, admin)
        async with MatrixHttp(hs.url, member.session.access_token) as old_token:
            whoami = await old_token.get(path(*CS, "account", "whoami"))
            assert whoami["user_id"] == member.user_id
            raw = await old_token.get(path(*CS, "rooms", room, "event", old))
        code, out, err = await clubs("plan", str(doc), env=env)
        assert code == 0, out + err  # no changes

        newcomer = await restored.new_user("newcomer")
        await admin.http.post(path(*CS, "rooms", room, "invite"), {"user_id": newcomer.user_id})
        await newcomer.http.post(path(*CS, "join", room), {})
        bot = Echo()
        async with (
            bot_host(
                restored, var, [account], {"echo": simple_factory(bot)}, network=network
            ) as host,
            mautrix_peer(newcomer, hs.url) as peer,
        ):
            event = await host.runtime("echo").client.decrypt_json(RoomId(room), raw)
            assert event is not None
            assert event.decrypted
            assert event.content["body"] == "сказано до резервной копии"
            bot_device = str(host.runtime("echo").client.device_id)

            async def fresh_one_time_keys() -> bool:
                # The backup left the server none of the bot's one-time keys (they would be
                # handed out twice); the restored bot uploads new ones after its first sync.
                got = await newcomer.http.post(
                    path(*CS, "keys", "claim"),
                    {"one_time_keys": {account.user_id: {bot_device: "signed_curve25519"}}},
                )
                keys = got["one_time_keys"].get(account.user_id, {}).get(bot_device, {})
                return any(not k.get("fallback") for k in keys.values())

            await eventually(fresh_one_time_keys, within=20)
            await peer.send_text(RoomID(room), "!ping")
            reply = await wait_reply(peer, account.user_id, room, 0)
            assert (reply.msgtype, reply.body) == ("m.notice", "Pong 🏓")
        await restored.close()
        await admin.http.close()
