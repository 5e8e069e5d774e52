"""Which rooms the bridge's bot stays in: decided from the room's locator and the portals."""

from __future__ import annotations

from typing import Any

import pytest

from clubs.bridge.config import Portal
from clubs.bridge.relay import Relay
from clubs.core.ids import UserId

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
