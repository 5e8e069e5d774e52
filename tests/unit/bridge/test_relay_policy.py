"""Which rooms the bridge's bot stays in: decided from the room's locator and the portals."""

from __future__ import annotations

from typing import Any

import pytest

from clubs.bridge.config import Portal
from clubs.bridge.crypto import KeyPending
from clubs.bridge.relay import Relay
from clubs.bridge.store import PortalRow
from clubs.core.ids import RoomId, UserId

PORTALS = (
    Portal("demo", "almaty", "news", -100, "mirror"),
    Portal("demo", "almaty", "general", -200, "relay"),
)


def relay() -> Relay:
    return Relay(
        matrix=None,  # type: ignore[arg-type]
        telegram=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        portals=PORTALS,
        network="demo",
        server_name="test.local",
        bot=UserId("@tg_bridge:test.local"),
    )


def locator(**over: Any) -> dict[str, Any]:
    return {"network": "demo", "kind": "club_room", "club": "almaty", "key": "news", **over}


def test_a_designated_club_room_is_bridged() -> None:
    assert relay()._designated(locator()) == PORTALS[0]
    assert relay()._designated(locator(key="general")) == PORTALS[1]


@pytest.mark.parametrize(
    "changed",
    [
        {"network": "other"},
        {"club": "astana"},
        {"key": "support"},
        {"kind": "cohort_room"},
        {"kind": "club_space"},
        {"audience": "staff"},
        {"network": None},
    ],
)
def test_anything_else_is_not(changed: dict[str, Any]) -> None:
    assert relay()._designated(locator(**changed)) is None


def test_a_room_without_a_locator_is_not() -> None:
    assert relay()._designated({}) is None


class _Device:
    """Stands in for the E2EE device: records which events the relay asked it to decrypt."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def decrypt(self, event: dict[str, Any]) -> dict[str, Any]:
        self.asked.append(str(event["event_id"]))
        raise KeyPending("no key in this test")


def _encrypted(event_id: str, ts: Any) -> dict[str, Any]:
    return {
        "type": "m.room.encrypted",
        "room_id": "!enc:test.local",
        "event_id": event_id,
        "sender": "@anna:test.local",
        "origin_server_ts": ts,
        "content": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"},
    }


async def test_only_events_after_the_consent_are_read_in_an_encrypted_room() -> None:
    r = relay()
    device = _Device()
    r.device = device  # type: ignore[assignment]
    room = RoomId("!enc:test.local")
    r._rooms[room] = PortalRow(room, -200, "relay", "almaty", "general", "active", 1000)
    for event_id, ts in [("$old", 999), ("$zero", 0), ("$bad", "1001"), ("$bool", True)]:
        assert await r.handle_event(_encrypted(event_id, ts)) == []
    assert device.asked == []  # never even decrypted
    with pytest.raises(KeyPending):
        await r.handle_event(_encrypted("$new", 1000))
    assert device.asked == ["$new"]


async def test_an_unencrypted_portal_never_reads_encrypted_events() -> None:
    r = relay()
    device = _Device()
    r.device = device  # type: ignore[assignment]
    room = RoomId("!enc:test.local")
    r._rooms[room] = PortalRow(room, -200, "relay", "almaty", "general", "active")
    assert await r.handle_event(_encrypted("$e", 5000)) == []
    assert device.asked == []
