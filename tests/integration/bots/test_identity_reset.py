"""A member who resets their identity (lost devices or recovery key; Element's "reset") is not
locked out: the policy decides (docs/runtime.md, "Identity changes").

The member's independent client (mautrix, cross-signed-only like Element) replaces its
cross-signing keys and signs its device with the new ones. Under the default `accept` policy
the bot trusts the new identity at once — the member decrypts its next reply — and tells the
club's staff room and the member (in a DM). Under `hold` the bot withholds room keys from the
new identity until a moderator sends `!trust @member`.
"""

from __future__ import annotations

from pathlib import Path

from clubs.bots.host import BotAccount
from clubs.bots.runtime import RuntimeSettings
from clubs.core.http import path
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    bot_host,
    create_bot_account,
    managed_room,
    new_network,
    send_text,
    simple_factory,
)
from tests.integration.bots.test_runtime import Echo
from tests.mautrix_client import MautrixPeer, mautrix_peer


async def setup(
    synapse: SynapseHarness, tmp_path: Path
) -> tuple[str, Account, Account, str, str, BotAccount]:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "echo")
    member = await synapse.new_user("member")
    moderator = await synapse.new_user("moderator")
    room = await managed_room(
        synapse,
        network,
        invite=[account.user_id, member.user_id, moderator.user_id],
        powers={moderator.user_id: 50},
    )
    staff = await managed_room(
        synapse,
        network,
        invite=[account.user_id, moderator.user_id],
        powers={moderator.user_id: 50},
        audience="staff",
        key="moderators",
    )
    await member.http.post(path(*CS, "join", room), {})
    for r in (room, staff):
        await moderator.http.post(path(*CS, "join", r), {})
    return network, member, moderator, room, staff, account


def bodies(peer: MautrixPeer, bot: str, room: str) -> list[str]:
    return [r.body for r in peer.received if r.sender == bot and r.room_id == room]


async def answered(peer: MautrixPeer, bot: str, room: str, body: str) -> None:
    before = len(bodies(peer, bot, room))
    await send_text(peer, room, body)

    async def got() -> bool:
        return len(bodies(peer, bot, room)) > before

    await eventually(got, within=30)


async def invites(member: Account) -> list[str]:
    sync = await member.http.get(
        path(*CS, "sync"), query={"timeout": "0", "filter": '{"room":{"timeline":{"limit":1}}}'}
    )
    return sorted(sync.get("rooms", {}).get("invite", {}))


async def test_a_new_identity_is_accepted_and_the_staff_and_member_are_told(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network, member, moderator, room, staff, account = await setup(synapse, tmp_path)
    bot = account.user_id
    async with (
        bot_host(synapse, tmp_path, [account], {"echo": simple_factory(Echo())}, network=network),
        mautrix_peer(member, synapse.url) as peer,
        mautrix_peer(moderator, synapse.url) as mod,
    ):
        await answered(peer, bot, room, "!echo before")
        await peer.reset_identity()
        await answered(peer, bot, room, "!echo after")  # decrypted under the new identity

        async def staff_told() -> bool:
            return any("new identity" in b for b in bodies(mod, bot, staff))

        await eventually(staff_told, within=30)

        async def member_told() -> list[str]:
            return await invites(member)

        dm = (await eventually(member_told, within=30))[0]
        await member.http.post(path(*CS, "join", dm), {})

        async def dm_read() -> bool:
            return bool(bodies(peer, bot, dm))

        await eventually(dm_read, within=30)
    told = [b for b in bodies(mod, bot, staff) if "set up a new identity" in b]
    assert len(told) == 1
    assert member.user_id in told[0]
    (dm_text,) = bodies(peer, bot, dm)  # in the network's language (a DM has no club)
    assert "new identity" in dm_text or "заново настроили шифрование" in dm_text
    assert peer.undecryptable == []


async def test_under_the_hold_policy_keys_wait_for_trust(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network, member, moderator, room, staff, account = await setup(synapse, tmp_path)
    bot = account.user_id
    settings = RuntimeSettings(sync_timeout_ms=1000, identity_policy="hold")
    async with (
        bot_host(
            synapse,
            tmp_path,
            [account],
            {"echo": simple_factory(Echo())},
            network=network,
            settings=settings,
        ),
        mautrix_peer(member, synapse.url, key_wait_s=3) as peer,
        mautrix_peer(moderator, synapse.url) as mod,
    ):
        await answered(peer, bot, room, "!echo before")
        await peer.reset_identity()
        await send_text(peer, room, "!echo held")

        async def withheld() -> bool:
            return len(peer.undecryptable) > 0

        await eventually(withheld, within=30)
        await answered(mod, bot, staff, f"!trust {member.user_id}")
        assert any("trusted from now on" in b for b in bodies(mod, bot, staff))
        held = len(peer.undecryptable)
        await answered(peer, bot, room, "!echo trusted")  # decrypted again
    assert len(peer.undecryptable) == held
    told = [b for b in bodies(mod, bot, staff) if "set up a new identity" in b]
    assert len(told) == 1
    assert f"!trust {member.user_id}" in told[0]
