"""The network's policy room: created once, rules from any client apply, removal unbans."""

from __future__ import annotations

from pathlib import Path

from clubs.bots.moderation.policy import PolicyWatcher, entity_hash
from clubs.core.http import RoomId, UserId, path
from clubs.core.namespace import LOCATOR
from tests.harness import SynapseHarness
from tests.integration.moderation.helpers import (
    CS,
    join,
    make_room,
    membership,
    moderator_for,
    new_club,
)


async def test_policy_room_is_private_typed_and_found_again(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    network = f"net-{club.bot_id[1:9]}"
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        room, created = await mod.ensure_policy_room(
            network, moderators={club.moderator.user_id: 50}
        )
        assert created
        assert await mod.ensure_policy_room(network) == (room, False)
    # A fresh store (lost disk): found again by its locator, not created twice.
    async with moderator_for(club, tmp_path / "other.db") as mod:
        assert await mod.ensure_policy_room(network) == (room, False)

    await join(club.moderator, room)
    state = {
        (e["type"], e["state_key"]): e
        for e in await club.moderator.http.get_list(path(*CS, "rooms", room, "state"))
    }
    assert state[("m.room.create", "")]["content"]["type"] == "m.policy"
    assert state[("m.room.create", "")]["content"]["m.federate"] is False
    assert state[("m.room.join_rules", "")]["content"] == {"join_rule": "invite"}
    assert state[("m.room.encryption", "")]["content"]["algorithm"] == "m.megolm.v1.aes-sha2"
    assert state[("m.room.guest_access", "")]["content"] == {"guest_access": "forbidden"}
    power = state[("m.room.power_levels", "")]["content"]
    assert (power["events_default"], power["state_default"]) == (50, 50)
    assert power["users"] == {club.moderator.user_id: 50}
    assert state[(LOCATOR, "")]["content"]["kind"] == "policy_room"
    directory = await club.moderator.http.get(path(*CS, "directory", "list", "room", room))
    assert directory["visibility"] == "private"


async def test_rule_written_by_another_client_bans_and_its_removal_unbans(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    network = f"net-{club.bot_id[1:9]}"
    rooms = [await make_room(club, joined=[club.member]) for _ in range(3)]
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        policy, _ = await mod.ensure_policy_room(network, moderators={club.moderator.user_id: 50})
        await join(club.moderator, policy)
        watcher = PolicyWatcher([policy], protected_servers=[synapse.server_name])
        assert watcher.feed(policy, await mod.policy_state(policy)) == []

        # A moderator writes a rule with Element (any client): its own state key, a glob.
        glob = f"@m*:{synapse.server_name}"  # @member-… and @mod-…
        await club.moderator.http.put(
            path(*CS, "rooms", policy, "state", "m.policy.rule.user", "element-rule-1"),
            {"entity": glob, "recommendation": "m.ban", "reason": "provocateur"},
        )
        watcher.note_users([club.member.user_id, club.moderator.user_id])
        actions = watcher.feed(policy, await mod.policy_state(policy))
        assert sorted((a.kind, a.user_id) for a in actions) == sorted(
            [("ban", club.member.user_id), ("ban", club.moderator.user_id)]
        )
        reports = {r.user_id: r for r in await mod.enforce(actions, rooms)}
        assert sorted(reports[club.member_id].done) == sorted(rooms)
        assert reports[club.moderator_id].refused == dict.fromkeys(rooms, "moderator")
        for room in rooms:
            assert await membership(club.owner.http, room, club.member.user_id) == "ban"
        # The glob also matches the moderator, who is never banned.
        for room in rooms:
            assert await membership(club.owner.http, room, club.moderator.user_id) == "join"

        # The moderator removes the rule the spec's way: empty content, same state key.
        await club.moderator.http.put(
            path(*CS, "rooms", policy, "state", "m.policy.rule.user", "element-rule-1"), {}
        )
        actions = watcher.feed(policy, await mod.policy_state(policy))
        assert sorted((a.kind, a.user_id) for a in actions) == sorted(
            [("unban", club.member.user_id), ("unban", club.moderator.user_id)]
        )
        await mod.enforce(actions, rooms)
    for room in rooms:
        assert await membership(club.owner.http, room, club.member.user_id) == "leave"


async def test_hashed_rule_bans_without_publishing_the_id_and_remove_rule_lifts_it(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    network = f"net-{club.bot_id[1:9]}"
    room = await make_room(club, joined=[club.member])
    target = UserId(club.member.user_id)
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        policy, _ = await mod.ensure_policy_room(network)
        watcher = PolicyWatcher([policy], users=[target])
        await mod.add_rule(policy, "user", target, "spam", hashed=True)
        events = await mod.policy_state(policy)
        assert target not in str(events)
        assert events[0]["content"]["hashes"]["sha256"] == entity_hash(target)
        actions = watcher.feed(policy, events)
        assert [(a.kind, a.user_id) for a in actions] == [("ban", target)]
        await mod.enforce(actions, [room])
        assert await membership(club.owner.http, room, target) == "ban"

        assert await mod.remove_rule(policy, "user", target) == 1
        actions = watcher.feed(policy, await mod.policy_state(policy))
        assert [(a.kind, a.user_id) for a in actions] == [("unban", target)]
        await mod.enforce(actions, [RoomId(room)])
    assert await membership(club.owner.http, room, target) == "leave"
