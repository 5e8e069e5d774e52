"""Consent to bridge an encrypted room: who may write it, what it must say, what `plan` shows."""

from __future__ import annotations

from typing import Any

from clubs.bridge.consent import power_of, valid_consent
from clubs.core.ids import RoomId
from clubs.core.namespace import BRIDGE_CONSENT
from clubs.provisioning.actual import Actual, ActualRoom
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.plan import plan

ADMIN = "@admin:clubs.local"
MOD = "@mod:clubs.local"
CHAT = -1001234567890


def _state(
    *, consent_by: str = ADMIN, chat: Any = CHAT, version: str = "11", ts: Any = 5000
) -> list[dict[str, Any]]:
    return [
        {
            "type": "m.room.create",
            "state_key": "",
            "sender": "@creator:clubs.local",
            "content": {"room_version": version},
        },
        {
            "type": "m.room.power_levels",
            "state_key": "",
            "sender": ADMIN,
            "content": {"users": {ADMIN: 100, MOD: 50}, "users_default": 0},
        },
        {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm"}},
        {
            "type": BRIDGE_CONSENT,
            "state_key": "",
            "sender": consent_by,
            "origin_server_ts": ts,
            "content": {"telegram_chat": chat, "by": consent_by, "at": 1},
        },
    ]


def test_an_admins_consent_for_the_chat_counts_from_its_server_time() -> None:
    consent = valid_consent(_state(), CHAT)
    assert consent is not None
    assert (consent.by, consent.since_ms, consent.chat) == (ADMIN, 5000, CHAT)


def test_a_moderators_consent_does_not_count() -> None:
    assert valid_consent(_state(consent_by=MOD), CHAT) is None
    assert valid_consent(_state(consent_by="@nobody:clubs.local"), CHAT) is None


def test_a_consent_for_another_chat_or_withdrawn_or_malformed_does_not_count() -> None:
    assert valid_consent(_state(chat=-100999), CHAT) is None
    assert valid_consent(_state(chat=True), CHAT) is None
    assert valid_consent(_state(chat=str(CHAT)), CHAT) is None
    assert valid_consent(_state(ts="5000"), CHAT) is None
    withdrawn = _state()
    withdrawn[-1]["content"] = {}
    assert valid_consent(withdrawn, CHAT) is None
    assert valid_consent(_state()[:-1], CHAT) is None
    assert valid_consent([None, "x", {"type": BRIDGE_CONSENT}], CHAT) is None


def test_a_v12_creator_is_an_admin_without_a_power_level_entry() -> None:
    assert power_of(_state(version="12"), "@creator:clubs.local") == float("inf")
    assert power_of(_state(version="11"), "@creator:clubs.local") == 0
    assert valid_consent(_state(consent_by="@creator:clubs.local", version="12"), CHAT)


def _actual(state: dict[tuple[str, str], Any]) -> Actual:
    room = ActualRoom(RoomId("!r:clubs.local"), "club:almaty/relatives", {}, state)
    return Actual("net", "@provisioner:clubs.local", {room.ref: room})


def test_plan_shows_an_encrypted_bridged_room_without_consent() -> None:
    desired = DesiredNetwork("net", "clubs.local", (), ())
    state: dict[tuple[str, str], Any] = {("m.room.encryption", ""): {"algorithm": "m.megolm"}}
    notes = plan(desired, _actual(state), bridged={"club:almaty/relatives": CHAT}).notes
    [note] = [n for n in notes if n.kind == "bridge"]
    assert "WITHOUT the admins' consent" in note.detail
    assert "clubs bridge consent --room almaty/relatives" in note.detail

    state[(BRIDGE_CONSENT, "")] = {"telegram_chat": CHAT, "by": ADMIN, "at": 1}
    notes = plan(desired, _actual(state), bridged={"club:almaty/relatives": CHAT}).notes
    [note] = [n for n in notes if n.kind == "bridge"]
    assert "consent to relay new messages" in note.detail
    assert ADMIN in note.detail

    state[(BRIDGE_CONSENT, "")] = {"telegram_chat": -100999, "by": ADMIN}
    notes = plan(desired, _actual(state), bridged={"club:almaty/relatives": CHAT}).notes
    assert any("WITHOUT" in n.detail for n in notes if n.kind == "bridge")


def test_plan_says_nothing_of_unencrypted_or_unbridged_rooms() -> None:
    desired = DesiredNetwork("net", "clubs.local", (), ())
    assert not [n for n in plan(desired, _actual({}), bridged={}).notes if n.kind == "bridge"]
    bridged = {"club:almaty/relatives": CHAT}
    assert not [n for n in plan(desired, _actual({}), bridged=bridged).notes if n.kind == "bridge"]
