"""The hand-checked `m.room.member` parser agrees with nio's schema-validated one: the same
event for well-formed input, and nothing nio would reject is ever accepted."""

from __future__ import annotations

from typing import Any

import nio
from hypothesis import given
from hypothesis import strategies as st

from clubs.core.e2ee import _member_event

WELL_FORMED: dict[str, Any] = {
    "type": "m.room.member",
    "event_id": "$e1",
    "sender": "@anna:clubs.example",
    "state_key": "@anna:clubs.example",
    "origin_server_ts": 1_700_000_000_000,
    "content": {"membership": "join", "displayname": "Anna", "avatar_url": None},
    "unsigned": {"prev_content": {"membership": "invite"}},
}


def test_a_well_formed_member_event_is_what_nio_makes_of_it() -> None:
    ours = _member_event(WELL_FORMED)
    theirs = nio.Event.parse_event(WELL_FORMED)
    assert isinstance(ours, nio.RoomMemberEvent)
    assert isinstance(theirs, nio.RoomMemberEvent)
    assert ours == theirs
    assert (ours.membership, ours.prev_membership, ours.content["displayname"]) == (
        "join",
        "invite",
        "Anna",
    )


def test_without_prev_content() -> None:
    raw = {k: v for k, v in WELL_FORMED.items() if k != "unsigned"}
    ours = _member_event(raw)
    assert ours is not None
    assert ours == nio.Event.parse_event(raw)
    assert ours.prev_membership is None


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.sampled_from(["join", "ban", "@x:y", "@nodomain", "m.room.member", -1]),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=4,
)


@given(
    field=st.sampled_from(
        [
            ("type",),
            ("event_id",),
            ("sender",),
            ("state_key",),
            ("origin_server_ts",),
            ("content",),
            ("content", "membership"),
            ("content", "displayname"),
            ("content", "avatar_url"),
            ("content", "reason"),
            ("unsigned",),
            ("unsigned", "prev_content"),
            ("unsigned", "transaction_id"),
        ]
    ),
    value=JSONISH,
)
def test_never_accepts_what_nio_rejects(field: tuple[str, ...], value: Any) -> None:
    """One field replaced by anything: either both parsers take it as the same member event,
    or ours declines (and nio's, which the caller falls back to, decides)."""
    raw: dict[str, Any] = {
        **WELL_FORMED,
        "content": dict(WELL_FORMED["content"]),
        "unsigned": {"prev_content": {"membership": "invite"}},
    }
    target = raw
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    ours = _member_event(raw)
    if ours is None:
        return
    theirs = nio.Event.parse_event(raw)
    assert isinstance(theirs, nio.RoomMemberEvent), f"nio rejects what we took: {raw}"
    assert ours == theirs
