"""`clubs bots run --clubs`: which rooms a shard serves, and its keys checked against the file."""

from __future__ import annotations

from typing import Any

import pytest

from clubs.bots.rooms import room_info
from clubs.botsrun import shard_keys
from clubs.core.errors import ClubsError
from clubs.core.http import RoomId
from clubs.core.namespace import LOCATOR
from clubs.provisioning.source import check
from clubs.up import example_network


def state(**locator: Any) -> list[dict[str, Any]]:
    return [{"type": LOCATOR, "state_key": "", "content": {"network": "n", **locator}}]


ROOM = RoomId("!r:x")


@pytest.mark.parametrize(
    ("locator", "served"),
    [
        ({"kind": "club_room", "country": "kz", "club": "astana"}, True),  # by its country
        ({"kind": "club_room", "country": "ge", "club": "almaty"}, True),  # by its club
        ({"kind": "club_space", "country": "ge", "club": "tbilisi"}, False),
        ({"kind": "network_space"}, False),  # no shard's: an unsharded process serves it
    ],
)
def test_a_shard_serves_the_rooms_of_its_countries_and_clubs(
    locator: dict[str, Any], served: bool
) -> None:
    info = room_info(ROOM, state(**locator), "n", frozenset({"kz", "almaty"}))
    assert (info.managed, info.elsewhere) == (served, not served)


def test_without_a_shard_every_room_of_the_network_is_served() -> None:
    info = room_info(ROOM, state(kind="network_space"), "n")
    assert (info.managed, info.elsewhere) == (True, False)
    other = room_info(ROOM, [], "n", frozenset({"kz"}))  # no locator at all
    assert (other.managed, other.elsewhere) == (False, False)  # unmanaged: not a shard matter


def test_shard_keys_are_the_files_countries_and_clubs() -> None:
    path = example_network()
    network = check(path).network
    assert shard_keys(path, "kz, almaty", network) == frozenset({"kz", "almaty"})
    with pytest.raises(ClubsError) as err:
        shard_keys(path, "kz,atlantis", network)
    assert str(err.value).startswith(f"--clubs: {path} has no country or club atlantis (its keys: ")
    with pytest.raises(ClubsError, match="has no country or club nothing"):
        shard_keys(path, " , ", network)
