"""Our nio bot talks to a client that enforces "only cross-signed devices", as Element does.

The other side is mautrix-python with a cross-signed-only policy (tests/mautrix_client.py), not
nio: a nio-to-nio round trip would prove nothing about Element. The negative control shows the
policy is really enforced: without our cross-signing bootstrap the bot never gets a room key.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from mautrix.types import RoomID, TrustState

from clubs.core.admin import ensure_ratelimit_override, ensure_service_account, login_password
from clubs.core.crosssign import CrossSigningError, ensure_cross_signing
from clubs.core.e2ee import (
    DeviceError,
    E2eeClient,
    RoomEvent,
    StoreError,
    pickle_key_name,
    store_file,
)
from clubs.core.errors import ClubsError
from clubs.core.http import MatrixHttp, RoomId, UserId, path
from clubs.core.secrets import Vault
from tests.harness import Account, SynapseHarness, eventually
from tests.mautrix_client import MautrixPeer, Received, mautrix_peer

CS = ("_matrix", "client", "v3")
ENCRYPTION = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


# --- helpers -----------------------------------------------------------------------------------


@dataclass
class BotAccount:
    user_id: UserId
    vault: Vault
    store_dir: Path


async def new_bot(synapse: SynapseHarness, tmp_path: Path, prefix: str = "bot") -> BotAccount:
    vault = Vault(tmp_path / "vault", key=Fernet.generate_key())
    http = synapse.client()
    session, created = await ensure_service_account(
        http,
        vault,
        synapse.hs.registration_shared_secret(),
        f"{prefix}-{secrets.token_hex(4)}",
        server_name=synapse.server_name,
    )
    assert created
    await ensure_ratelimit_override(synapse.admin.http, session.user_id)
    return BotAccount(session.user_id, vault, tmp_path / "store")


@dataclass
class TinyBot:
    """A stand-in for the bot runtime: sync, accept invites, answer `!ping` with a notice."""

    client: E2eeClient
    since: str | None = None
    """The last `next_batch` fully handled (what the real runtime persists)."""
    rounds: int = 0
    seen: list[RoomEvent] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            batch = await self.client.sync(self.since, timeout_ms=500)
            for invite in batch.invites:
                await self.client.join(invite.room_id)
            for ev in batch.events:
                self.seen.append(ev)
                if (
                    ev.decrypted
                    and ev.type == "m.room.message"
                    and ev.content.get("body") == "!ping"
                ):
                    await self.client.send(
                        ev.room_id,
                        "m.room.message",
                        {"msgtype": "m.notice", "body": "pong", "m.mentions": {}},
                        txn_id=f"pong-{ev.event_id}",
                    )
            self.since = batch.next_batch
            self.rounds += 1

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    def check_alive(self) -> None:
        if self.task is not None and self.task.done():
            self.task.result()  # re-raise what killed the loop
            raise AssertionError("the bot's sync loop stopped")

    def encrypted_from(self, sender: str, room_id: str) -> list[RoomEvent]:
        return [e for e in self.seen if e.encrypted and e.sender == sender and e.room_id == room_id]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@contextlib.asynccontextmanager
async def running(client: E2eeClient, since: str | None = None) -> AsyncIterator[TinyBot]:
    bot = TinyBot(client, since)
    bot.start()
    try:
        yield bot
    finally:
        await bot.stop()
        await client.close()


async def create_encrypted_room(owner: Account, bot: str, *, direct: bool = False) -> RoomID:
    body: dict[str, object] = {"invite": [bot], "initial_state": [ENCRYPTION]}
    if direct:
        body.update(is_direct=True, preset="trusted_private_chat")
    else:
        body.update(preset="private_chat", name="r")
    created = await owner.http.post(path(*CS, "createRoom"), body)
    return RoomID(created["room_id"])


async def wait_joined(owner: Account, room_id: str, user_id: str) -> None:
    async def joined() -> bool:
        members = await owner.http.get(path(*CS, "rooms", room_id, "joined_members"))
        return user_id in members.get("joined", {})

    await eventually(joined, within=15)


def replies(peer: MautrixPeer, bot: TinyBot, room_id: RoomID) -> list[Received]:
    return [r for r in peer.received if r.room_id == room_id and r.sender == bot.client.user_id]


async def ping_pong(peer: MautrixPeer, bot: TinyBot, room_id: RoomID) -> Received:
    """`!ping` from the independent client; the bot's `pong` comes back decrypted and trusted."""
    await wait_joined(peer.account, room_id, bot.client.user_id)
    before = len(replies(peer, bot, room_id))
    await peer.send_text(room_id, "!ping")

    async def pong() -> list[Received]:
        bot.check_alive()
        return replies(peer, bot, room_id)[before:]

    (reply,) = await eventually(pong, within=20)
    assert (reply.msgtype, reply.body) == ("m.notice", "pong")
    # The independent client decrypted the bot's reply and rates the bot's device as cross-signed.
    assert reply.trust >= TrustState.CROSS_SIGNED_TOFU
    trust = await peer.trust_of(bot.client.user_id, bot.client.device_id)
    assert trust >= TrustState.CROSS_SIGNED_TOFU
    # ... and the bot decrypted the ping and rates the sender's device as cross-signed too.
    ping = [e for e in bot.encrypted_from(peer.user_id, room_id) if e.decrypted][-1]
    assert ping.content.get("body") == "!ping"
    assert ping.sender_trusted
    return reply


# --- interop -----------------------------------------------------------------------------------


async def test_cross_signed_bot_answers_in_encrypted_room(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    acct = await new_bot(synapse, tmp_path)
    client = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    assert client.cross_signing is not None
    assert client.cross_signing.uploaded_keys
    alice = await synapse.new_user("alice")
    async with mautrix_peer(alice, synapse.url) as peer, running(client) as bot:
        room_id = await create_encrypted_room(alice, acct.user_id)
        await ping_pong(peer, bot, room_id)
        assert peer.undecryptable == []


async def test_cross_signed_bot_answers_in_dm(synapse: SynapseHarness, tmp_path: Path) -> None:
    acct = await new_bot(synapse, tmp_path)
    client = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    bob = await synapse.new_user("bob")
    async with mautrix_peer(bob, synapse.url) as peer, running(client) as bot:
        room_id = await create_encrypted_room(bob, acct.user_id, direct=True)
        await ping_pong(peer, bot, room_id)


async def test_bot_withholds_room_keys_from_a_device_its_owner_did_not_cross_sign(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    acct = await new_bot(synapse, tmp_path)
    client = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    dave = await synapse.new_user("dave")
    second = await login_password(synapse.client(), dave.user_id, dave.password)
    dave2 = Account(second, dave.password, synapse.client(second.access_token))
    async with (
        mautrix_peer(dave, synapse.url) as peer,
        mautrix_peer(dave2, synapse.url, cross_sign=False, key_wait_s=1) as insecure,
        running(client) as bot,
    ):
        room_id = await create_encrypted_room(dave, acct.user_id)
        reply = await ping_pong(peer, bot, room_id)
        # The bot's policy: dave's cross-signed device is trusted, the other one is not ...
        verdict = (await client.refresh_trust([dave.user_id]))[dave.user_id]
        assert set(verdict.trusted) == {dave.session.device_id}
        # ... so the insecure device received the reply but never its key ...
        await eventually(lambda: _is(reply.event_id in insecure.undecryptable), within=15)
        assert [r for r in insecure.received if r.sender == acct.user_id] == []
        # ... and was told why, once per session, as Element expects (it then shows the
        # message as withheld because the device is unverified, not as a key still to come).
        bot_key = client._olm.account.identity_keys["curve25519"]

        def from_bot(p: MautrixPeer) -> list[dict[str, object]]:
            return [w for w in p.withheld if w.get("sender_key") == bot_key]

        await eventually(lambda: _is(bool(from_bot(insecure))), within=15)
        (told,) = from_bot(insecure)
        assert told["code"] == "m.unverified"
        assert told["room_id"] == room_id
        assert told["algorithm"] == "m.megolm.v1.aes-sha2"
        assert told["session_id"] == client._olm.outbound_group_sessions[room_id].id
        assert from_bot(peer) == []  # the cross-signed device got the key, not a refusal
        await ping_pong(peer, bot, room_id)  # same session: no second notice
        await asyncio.sleep(1)
        assert len(from_bot(insecure)) == 1


async def test_without_cross_signing_the_bot_gets_no_room_keys(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    acct = await new_bot(synapse, tmp_path)
    client = await E2eeClient.open(
        synapse.url, acct.vault, acct.user_id, acct.store_dir, cross_sign=False
    )
    carol = await synapse.new_user("carol")
    async with mautrix_peer(carol, synapse.url) as peer, running(client) as bot:
        room_id = await create_encrypted_room(carol, acct.user_id)
        await wait_joined(carol, room_id, acct.user_id)
        assert await peer.trust_of(acct.user_id, client.device_id) < TrustState.CROSS_SIGNED_TOFU
        await peer.send_text(room_id, "!ping")

        async def arrived() -> list[RoomEvent]:
            bot.check_alive()
            return bot.encrypted_from(carol.user_id, room_id)

        await eventually(arrived, within=15)
        # The independent client withheld the room key from the bot's device on purpose ...
        shared, withheld = await peer.outbound_shared_with(room_id)
        assert (acct.user_id, client.device_id) in withheld
        assert (acct.user_id, client.device_id) not in shared
        # ... so no key arrives late: a few more sync rounds, still nothing decrypted or answered.
        later = bot.rounds + 3
        await eventually(lambda: _is(bot.rounds >= later), within=15)
        assert [e.decrypted for e in bot.encrypted_from(carol.user_id, room_id)] == [False]
        assert [r for r in peer.received if r.sender == acct.user_id] == []


async def _is(value: bool) -> bool:
    return value


# --- idempotency -------------------------------------------------------------------------------


async def test_bootstrap_twice_keeps_master_key_and_uploads_nothing(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    acct = await new_bot(synapse, tmp_path)
    client = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    first = client.cross_signing
    assert first is not None
    assert first.changed
    await client.close()

    token = acct.vault.get(f"{acct.user_id}/access_token")
    writes: list[str] = []
    async with MatrixHttp(
        synapse.url, token, on_write=lambda m, label: writes.append(label)
    ) as http:
        again = await ensure_cross_signing(http, acct.vault, acct.user_id, client.device_id)
    assert again.master_key == first.master_key
    assert not again.changed
    assert writes == ["keys/query"]  # one read (a POST), no upload of keys or signatures


async def test_restarted_bot_keeps_its_one_device_and_still_talks(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    acct = await new_bot(synapse, tmp_path)
    client = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    first_master = client.cross_signing.master_key if client.cross_signing else None
    erin = await synapse.new_user("erin")
    async with mautrix_peer(erin, synapse.url) as peer:
        async with running(client) as bot:
            room_id = await create_encrypted_room(erin, acct.user_id)
            await ping_pong(peer, bot, room_id)
            since = bot.since
        # Restart from the stored session, store and sync token: same device, same keys.
        reopened = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
        assert reopened.device_id == client.device_id
        assert reopened.cross_signing is not None
        assert reopened.cross_signing.master_key == first_master
        assert not reopened.cross_signing.changed
        async with running(reopened, since) as bot:
            await ping_pong(peer, bot, room_id)
        assert len(replies(peer, bot, room_id)) == 2
    devices = (await synapse.client(reopened.session.access_token).get(path(*CS, "devices")))[
        "devices"
    ]
    assert [d["device_id"] for d in devices] == [client.device_id]


async def test_resumed_bot_loads_a_quiet_room_before_its_first_send(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """A resumed client takes no full-state sync: a room without activity since the restart is
    loaded on demand, and its first send still reaches every member, encrypted."""
    acct = await new_bot(synapse, tmp_path)
    client = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    gina, hugo = await synapse.new_user("gina"), await synapse.new_user("hugo")
    async with mautrix_peer(gina, synapse.url) as g_peer, mautrix_peer(hugo, synapse.url) as h_peer:
        async with running(client) as bot:
            room_id = await create_encrypted_room(gina, acct.user_id)
            await ping_pong(g_peer, bot, room_id)
            await gina.http.post(path(*CS, "rooms", room_id, "invite"), {"user_id": hugo.user_id})
            await hugo.http.post(path(*CS, "join", room_id), {})
            await eventually(lambda: _is(hugo.user_id in bot.client._client.rooms[room_id].users))
            rounds = bot.rounds
            await eventually(lambda: _is(bot.rounds > rounds + 1))  # hugo's join is behind us
            since = bot.since
        reopened = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
        async with running(reopened, since) as bot:
            await eventually(lambda: _is(bot.rounds > 0))
            assert RoomId(room_id) in reopened.joined_rooms()
            assert RoomId(room_id) not in reopened._client.rooms  # nothing loaded yet
            assert await reopened.is_encrypted(RoomId(room_id))
            members = await reopened.members(RoomId(room_id))
            assert {gina.user_id, hugo.user_id, acct.user_id} <= members
            await reopened.send(
                RoomId(room_id),
                "m.room.message",
                {"msgtype": "m.notice", "body": "after restart", "m.mentions": {}},
            )
            for peer in (g_peer, h_peer):

                async def got(p: MautrixPeer = peer) -> bool:
                    return any(r.body == "after restart" for r in replies(p, bot, room_id))

                await eventually(got, within=20)
            assert g_peer.undecryptable == []
            assert h_peer.undecryptable == []


async def test_foreign_master_key_is_a_clear_error_and_force_replaces_it(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    acct = await new_bot(synapse, tmp_path)
    client = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    await client.close()
    assert client.cross_signing is not None
    # A vault that lost the cross-signing keys (but still has the account): refuse, change nothing.
    lost = Vault(tmp_path / "lost", key=Fernet.generate_key())
    for name in ("access_token", "device_id", "password"):
        value = acct.vault.get(f"{acct.user_id}/{name}")
        assert value is not None
        lost.set(f"{acct.user_id}/{name}", value)
    token = lost.get(f"{acct.user_id}/access_token")
    writes: list[str] = []
    async with MatrixHttp(
        synapse.url, token, on_write=lambda m, label: writes.append(label)
    ) as http:
        with pytest.raises(CrossSigningError, match="does not hold"):
            await ensure_cross_signing(http, lost, acct.user_id, client.device_id)
        assert writes == ["keys/query"]
        # Only an explicit force replaces the keys (user-interactive auth with the stored password).
        forced = await ensure_cross_signing(http, lost, acct.user_id, client.device_id, force=True)
    # Replacing keys took a user-interactive-auth round: refused once, then sent with the password.
    assert writes.count("keys/device_signing/upload") == 2
    assert forced.uploaded_keys
    assert forced.signed_device
    assert forced.master_key != client.cross_signing.master_key


# --- store -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_key", ["DEFAULT_KEY", "", "   ", "short"])
async def test_store_refuses_weak_keys_and_creates_nothing(
    synapse: SynapseHarness, tmp_path: Path, bad_key: str
) -> None:
    acct = await new_bot(synapse, tmp_path)
    acct.vault.set(pickle_key_name(acct.user_id), bad_key)
    with pytest.raises(StoreError, match="crypto store key"):
        await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    assert not acct.store_dir.exists()


async def test_missing_store_of_a_live_device_refuses_to_start(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    acct = await new_bot(synapse, tmp_path)
    client = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    await client.close()
    assert store_file(acct.store_dir, acct.user_id, client.device_id).exists()
    shutil.rmtree(acct.store_dir)
    with pytest.raises(DeviceError, match=r"crypto store \S+ is missing"):
        await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)


async def test_store_without_its_key_or_with_a_wrong_key_refuses_to_start(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    acct = await new_bot(synapse, tmp_path)
    client = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    await client.close()
    key = acct.vault.get(pickle_key_name(acct.user_id))
    assert key is not None
    acct.vault.delete(pickle_key_name(acct.user_id))
    with pytest.raises(StoreError, match="holds no key"):
        await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    acct.vault.set(pickle_key_name(acct.user_id), secrets.token_urlsafe(32))
    with pytest.raises(StoreError, match="cannot open the crypto store"):
        await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    acct.vault.set(pickle_key_name(acct.user_id), key)
    reopened = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    try:
        # One store, one client: a second one (another process, or a double start) is refused.
        with pytest.raises(StoreError, match="already run by another process"):
            await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    finally:
        await reopened.close()


async def test_device_logged_out_elsewhere_refuses_to_start(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    acct = await new_bot(synapse, tmp_path)
    client = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    await client.close()
    await synapse.client(client.session.access_token).post(path(*CS, "logout"), {})
    with pytest.raises(DeviceError, match="no longer valid"):
        await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)


async def test_send_to_a_room_it_does_not_know_is_refused(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    acct = await new_bot(synapse, tmp_path)
    async with await E2eeClient.open(
        synapse.url, acct.vault, acct.user_id, acct.store_dir
    ) as client:
        with pytest.raises(ClubsError, match="not joined to room"):
            await client.send(RoomId("!unknown:test.local"), "m.room.message", {"body": "x"})


async def test_first_send_reaches_a_member_invited_after_the_bots_last_sync(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """A room can arrive in a sync before the invite that belongs to it (the sync ran while the
    bot's own createRoom was still inviting). The first encrypted send must still share its room
    key with the invited member: their invite is on the server, not yet in the bot's sync."""
    acct = await new_bot(synapse, tmp_path)
    client = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    ivan = await synapse.new_user("ivan")
    async with mautrix_peer(ivan, synapse.url) as peer:
        try:
            batch = await client.sync(None, timeout_ms=0)
            created = await client._http.post(
                path(*CS, "createRoom"),
                {
                    "preset": "trusted_private_chat",
                    "initial_state": [
                        ENCRYPTION,
                        {
                            "type": "m.room.history_visibility",
                            "state_key": "",
                            "content": {"history_visibility": "invited"},
                        },
                    ],
                },
            )
            room_id = RoomId(created["room_id"])
            while room_id not in client.joined_rooms():
                batch = await client.sync(batch.next_batch, timeout_ms=1000)
            # The invite happens after the bot's last sync: the bot has not seen it.
            await client._http.post(
                path(*CS, "rooms", room_id, "invite"), {"user_id": ivan.user_id}
            )
            await client.send(
                room_id,
                "m.room.message",
                {"msgtype": "m.notice", "body": "hello before you joined", "m.mentions": {}},
            )
            await ivan.http.post(path(*CS, "join", room_id), {})

            async def got() -> list[Received]:
                return [r for r in peer.received if r.body == "hello before you joined"]

            await eventually(got, within=20)
            assert peer.undecryptable == []
        finally:
            await client.close()


async def test_a_row_on_the_wire_is_not_sent_again_by_a_flush_or_a_second_send(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """The outbox's `send` and the sync loop's `flush` can meet on the same row. A second send
    of the same txn would be deduplicated by the server, but nio would share room keys a second
    time around it, after the first event already went out: one caller sends, the others wait
    for its outcome."""
    from clubs.bots.outbox import Outbox
    from clubs.core.clock import SystemClock
    from clubs.core.db import Database
    from clubs.core.sealed import Sealer

    acct = await new_bot(synapse, tmp_path)
    client = await E2eeClient.open(synapse.url, acct.vault, acct.user_id, acct.store_dir)
    db = await Database.open(tmp_path / "bots.db")
    try:
        outbox = await Outbox.open(db, "bot", Sealer(Fernet.generate_key()), client, SystemClock())
        created = await client._http.post(
            path(*CS, "createRoom"), {"preset": "private_chat", "initial_state": [ENCRYPTION]}
        )
        room_id = RoomId(created["room_id"])
        batch = await client.sync(None, timeout_ms=0)
        while room_id not in client.joined_rooms():
            batch = await client.sync(batch.next_batch, timeout_ms=1000)
        wire: list[str | None] = []
        real_send = client.send

        async def counted(*args: object, **kw: object) -> object:
            wire.append(kw.get("txn_id"))  # type: ignore[arg-type]
            await asyncio.sleep(0.3)  # the first send is still on the wire when the others come
            return await real_send(*args, **kw)  # type: ignore[arg-type]

        client.send = counted  # type: ignore[method-assign]
        content = {"msgtype": "m.notice", "body": "once", "m.mentions": {}}
        first = asyncio.create_task(outbox.send(room_id, "m.room.message", content, "txn-once"))
        await eventually(lambda: _is(wire == ["txn-once"]), within=5, interval=0.01)
        again, _ = await asyncio.gather(
            outbox.send(room_id, "m.room.message", content, "txn-once"), outbox.flush()
        )
        event_id = await first
        assert event_id is not None
        assert again == event_id
        assert wire == ["txn-once"]
        row = await outbox.find("txn-once")
        assert row is not None
        assert (row.state, row.event_id) == ("sent", event_id)
    finally:
        await db.close()
        await client.close()
