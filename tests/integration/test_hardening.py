"""The running homeserver shows the hardening of config/synapse/homeserver.yaml.j2."""

from __future__ import annotations

import secrets
from pathlib import Path

import aiohttp
import pytest
from cryptography.fernet import Fernet

from clubs.core.admin import MASTER_PUSH_RULE, ensure_service_account
from clubs.core.errors import Forbidden, MatrixError
from clubs.core.http import path
from clubs.core.secrets import Vault
from tests.harness import SynapseHarness, room_state

CS = ("_matrix", "client", "v3")


async def test_register_without_token_is_refused(synapse: SynapseHarness) -> None:
    anon = synapse.client()
    body = {"username": "walkin", "password": "long-enough-pass", "auth": {"type": "m.login.dummy"}}
    with pytest.raises(MatrixError) as refused:
        await anon.post(path(*CS, "register"), body, auth=False)
    assert refused.value.status == 401
    # The only way in is a registration token: no dummy/open flow is offered.
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            synapse.url + path(*CS, "register"), json={"username": "walkin", "password": "x" * 16}
        ) as resp,
    ):
        flows = (await resp.json())["flows"]
    assert flows
    assert all("m.login.registration_token" in f["stages"] for f in flows)
    with pytest.raises(Forbidden):
        await anon.post(
            path(*CS, "login"),
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "walkin"},
                "password": "long-enough-pass",
            },
            auth=False,
        )


async def test_room_created_without_encryption_is_encrypted(synapse: SynapseHarness) -> None:
    alice = await synapse.new_user("alice")
    created = await alice.http.post(path(*CS, "createRoom"), {"preset": "public_chat"})
    encryption = await room_state(alice, created["room_id"], "m.room.encryption")
    assert encryption["algorithm"] == "m.megolm.v1.aes-sha2"


async def test_url_previews_are_refused(synapse: SynapseHarness) -> None:
    alice = await synapse.new_user("alice")
    for prefix in (("_matrix", "client", "v1", "media"), ("_matrix", "media", "v3")):
        with pytest.raises(MatrixError) as refused:
            await alice.http.get(
                path(*prefix, "preview_url"), query={"url": "http://127.0.0.1:1/x"}
            )
        assert refused.value.status in (403, 404)


async def test_presence_is_disabled(synapse: SynapseHarness) -> None:
    alice = await synapse.new_user("alice")
    bob = await synapse.new_user("bob")
    room = await alice.http.post(path(*CS, "createRoom"), {"invite": [bob.user_id]})
    await bob.http.post(path(*CS, "join", room["room_id"]), {})
    await alice.http.put(path(*CS, "presence", alice.user_id, "status"), {"presence": "online"})
    seen = await bob.http.get(path(*CS, "presence", alice.user_id, "status"))
    # Synapse with presence off answers every query with "offline" and never tracks activity.
    assert seen["presence"] == "offline"
    assert "last_active_ago" not in seen
    sync = await bob.http.get(path(*CS, "sync"), query={"timeout": "0"})
    assert sync.get("presence", {}).get("events", []) == []


async def test_federation_endpoints_are_not_served(synapse: SynapseHarness) -> None:
    async with aiohttp.ClientSession() as s:
        for p in ("/_matrix/federation/v1/version", "/_matrix/key/v2/server"):
            async with s.get(synapse.url + p) as resp:
                assert resp.status == 404, p


async def test_profiles_only_for_people_sharing_a_room(synapse: SynapseHarness) -> None:
    alice = await synapse.new_user("alice")
    stranger = await synapse.new_user("stranger")
    with pytest.raises(Forbidden):
        await stranger.http.get(path(*CS, "profile", alice.user_id))
    with pytest.raises(Forbidden):
        await synapse.client().get(path(*CS, "profile", alice.user_id), auth=False)


async def test_nothing_is_in_the_room_directory(synapse: SynapseHarness) -> None:
    alice = await synapse.new_user("alice")
    room = await alice.http.post(path(*CS, "createRoom"), {"preset": "public_chat"})
    with pytest.raises(MatrixError) as refused:
        await alice.http.put(
            path(*CS, "directory", "list", "room", room["room_id"]), {"visibility": "public"}
        )
    assert refused.value.status == 403
    listed = await alice.http.get(path(*CS, "publicRooms"))
    assert listed["chunk"] == []
    with pytest.raises(Forbidden):
        await synapse.client().get(path(*CS, "publicRooms"), auth=False)


async def test_members_cannot_create_aliases(synapse: SynapseHarness) -> None:
    alice = await synapse.new_user("alice")
    room = await alice.http.post(path(*CS, "createRoom"), {})
    alias = f"#berlin-club:{synapse.server_name}"
    with pytest.raises(Forbidden):
        await alice.http.put(path(*CS, "directory", "room", alias), {"room_id": room["room_id"]})


async def test_service_accounts_never_get_push_notifications(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """Bots read every message: the master push rule spares Synapse a notification row per
    bot per message; an account made before this is silenced on its next start."""
    vault = Vault(tmp_path / "vault", key=Fernet.generate_key())
    name = f"quiet-{secrets.token_hex(4)}"
    secret = synapse.hs.registration_shared_secret()
    session, created = await ensure_service_account(
        synapse.client(), vault, secret, name, server_name=synapse.server_name
    )
    assert created
    http = synapse.client(session.access_token)
    assert (await http.get(MASTER_PUSH_RULE))["enabled"] is True
    await http.put(MASTER_PUSH_RULE, {"enabled": False})
    again, created = await ensure_service_account(
        synapse.client(), vault, secret, name, server_name=synapse.server_name
    )
    assert not created
    assert again.device_id == session.device_id
    assert (await http.get(MASTER_PUSH_RULE))["enabled"] is True
