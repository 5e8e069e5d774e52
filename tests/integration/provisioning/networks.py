"""Generated networks for tests and the benchmark: `DesiredNetwork`s built directly.

They follow what the YAML compiler produces (refs, locators, power levels, state), so the back
half of provisioning is tested without depending on the YAML front half.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from clubs.core.namespace import LOCATOR
from clubs.provisioning.desired import DesiredNetwork, DesiredPerson, DesiredRoom, Locator

ROOM_VERSION = "12"
ENCRYPTION = {
    "algorithm": "m.megolm.v1.aes-sha2",
    "rotation_period_ms": 604800000,
    "rotation_period_msgs": 100,
}


def power_levels(users: Mapping[str, int], *, space: bool) -> dict[str, Any]:
    return {
        "users": {u: level for u, level in sorted(users.items()) if level},
        "users_default": 0,
        "events_default": 100 if space else 0,
        "state_default": 50,
        "invite": 50,
        "kick": 50,
        "ban": 50,
        "redact": 50,
        "notifications": {"room": 50},
        "events": {
            "m.room.power_levels": 100,
            "m.room.encryption": 100,
            "m.room.history_visibility": 100,
            "m.room.join_rules": 100,
            "m.room.guest_access": 100,
            "m.room.server_acl": 100,
            "m.room.tombstone": 150,
            "m.space.child": 50,
            "m.space.parent": 100,
            "m.room.retention": 100,
            LOCATOR: 100,
        },
    }


def _room(
    ref: str,
    locator: Locator,
    name: str,
    *,
    space: bool,
    parent: str | None,
    join_rule: str = "invite",
    allow: Sequence[str] = (),
    members: Mapping[str, int] | None = None,
    order: str | None = None,
    suggested: bool = False,
    history: str = "joined",
) -> DesiredRoom:
    members = dict(members or {})
    state: dict[tuple[str, str], Mapping[str, Any]] = {
        ("m.room.encryption", ""): ENCRYPTION,
        ("m.room.history_visibility", ""): {"history_visibility": history},
        ("m.room.guest_access", ""): {"guest_access": "forbidden"},
        ("m.room.name", ""): {"name": name},
    }
    return DesiredRoom(
        ref=ref,
        locator=locator,
        name=name,
        topic=None,
        is_space=space,
        parent_ref=parent,
        room_version=ROOM_VERSION,
        join_rule=join_rule,  # type: ignore[arg-type]
        join_allow_refs=tuple(allow),
        state=state,
        power_levels=power_levels(members, space=space),
        members=members,
        order=order,
        suggested=suggested,
    )


def make_network(
    server_name: str,
    *,
    n_countries: int = 1,
    n_clubs: int = 3,
    rooms_per_club: int = 5,
    members: Mapping[str, Mapping[str, int]] | None = None,
    network: str | None = None,
    archived_clubs: Sequence[str] = (),
    people: Sequence[DesiredPerson] = (),
) -> DesiredNetwork:
    """network space → countries → clubs (space + rooms). `members` maps a club key to
    mxid → power level for everyone in that club (the space and all its rooms).
    Club keys are c0, c1, …; room keys r0, r1, …; country keys k0, k1, …"""
    network = network or f"net-{secrets.token_hex(4)}"
    members = members or {}
    rooms: list[DesiredRoom] = [
        _room(
            "network",
            Locator(network, "network_space", network),
            "Сеть",
            space=True,
            parent=None,
            history="invited",
        )
    ]
    for k in range(n_countries):
        country = f"k{k}"
        rooms.append(
            _room(
                f"country:{country}",
                Locator(network, "country_space", country, country=country),
                f"Страна {k}",
                space=True,
                parent="network",
                history="invited",
                order=f"{k:03d}",
            )
        )
    for c in range(n_clubs):
        club = f"c{c}"
        country = f"k{c % n_countries}"
        life = "archived" if club in archived_clubs else "active"
        club_members = dict(members.get(club, {}))
        space_ref = f"club:{club}"
        rooms.append(
            _room(
                space_ref,
                Locator(network, "club_space", club, country=country, club=club, state=life),  # type: ignore[arg-type]
                f"Клуб {c}",
                space=True,
                parent=f"country:{country}",
                history="invited",
                members=club_members,
                order=f"{c:03d}",
            )
        )
        for r in range(rooms_per_club):
            rooms.append(
                _room(
                    f"club:{club}/r{r}",
                    Locator(network, "club_room", f"r{r}", country=country, club=club, state=life),  # type: ignore[arg-type]
                    f"Комната {r}",
                    space=False,
                    parent=space_ref,
                    join_rule="restricted" if r % 2 == 0 else "invite",
                    allow=(space_ref,) if r % 2 == 0 else (),
                    members=club_members,
                    order=f"{r:03d}",
                    suggested=r == 0,
                )
            )
    return DesiredNetwork(network, server_name, tuple(rooms), tuple(people))


def with_members(net: DesiredNetwork, club: str, members: Mapping[str, int]) -> DesiredNetwork:
    """The same network with the members (and their power levels) of one club replaced."""
    rooms = []
    for room in net.rooms:
        if room.ref == f"club:{club}" or room.ref.startswith(f"club:{club}/"):
            room = replace(
                room,
                members=dict(members),
                power_levels=power_levels(members, space=room.is_space),
            )
        rooms.append(room)
    return replace(net, rooms=tuple(rooms))


def without_club(net: DesiredNetwork, club: str) -> DesiredNetwork:
    rooms = tuple(
        r for r in net.rooms if r.ref != f"club:{club}" and not r.ref.startswith(f"club:{club}/")
    )
    return replace(net, rooms=rooms)
