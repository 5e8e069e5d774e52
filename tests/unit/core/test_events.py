from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clubs.core.events import Message, is_state, parse_message
from clubs.core.html import sanitize

ROOM = "!room:test.local"


def event(**content: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "event_id": "$ev",
        "sender": "@alice:test.local",
        "origin_server_ts": 1_700_000_000_000,
        "content": {"msgtype": "m.text", "body": "hello", **content},
    }


def test_a_message_is_parsed_with_its_ids_and_bodies() -> None:
    raw = event(format="org.matrix.custom.html", formatted_body="<b>hello</b>")
    assert parse_message(raw, ROOM) == Message(
        event_id="$ev",  # type: ignore[arg-type]
        room_id=ROOM,  # type: ignore[arg-type]
        sender="@alice:test.local",  # type: ignore[arg-type]
        origin_server_ts=1_700_000_000_000,
        msgtype="m.text",
        body="hello",
        formatted_body="<b>hello</b>",
        relation=None,
        relates_to=None,
        reply_to=None,
    )


def test_the_room_comes_from_the_event_when_not_given() -> None:
    message = parse_message({**event(), "room_id": ROOM})
    assert message is not None
    assert message.room_id == ROOM


def test_an_event_claiming_another_room_is_refused() -> None:
    assert parse_message({**event(), "room_id": "!other:test.local"}, ROOM) is None
    assert parse_message(event()) is None  # no room at all


def test_an_edit_is_marked() -> None:
    raw = event(
        body="* !ban @x:y",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "!ban @x:y"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"},
        },
    )
    message = parse_message(raw, ROOM)
    assert message is not None
    assert message.is_edit
    assert message.relates_to == "$orig"
    assert not message.is_reply


def test_a_reply_and_a_thread_message_are_told_apart() -> None:
    reply = parse_message(event(**{"m.relates_to": {"m.in_reply_to": {"event_id": "$a"}}}), ROOM)
    assert reply is not None
    assert reply.is_reply
    assert reply.reply_to == "$a"
    in_thread = parse_message(
        event(
            **{
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": "$root",
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": "$last"},
                }
            }
        ),
        ROOM,
    )
    assert in_thread is not None
    assert not in_thread.is_reply
    assert in_thread.thread_root == "$root"


def test_a_relation_to_an_unknown_or_malformed_event_is_kept_harmless() -> None:
    message = parse_message(
        event(**{"m.relates_to": {"rel_type": "m.annotation", "event_id": "not an id"}}), ROOM
    )
    assert message is not None
    assert (message.relation, message.relates_to) == ("m.annotation", None)
    odd = parse_message(event(**{"m.relates_to": ["$x"]}), ROOM)
    assert odd is not None
    assert odd.relation is None


@pytest.mark.parametrize(
    "change",
    [
        {"content": {"msgtype": "m.text", "body": 5}},
        {"content": {"msgtype": "m.text", "body": None}},
        {"content": {"msgtype": "m.text", "body": ["x"]}},
        {"content": {"body": "no msgtype"}},
        {"content": {"msgtype": 7, "body": "x"}},
        {"content": "text"},
        {"content": {}},  # redacted
        {"type": "m.room.encrypted"},
        {"type": "m.room.power_levels"},
        {"state_key": ""},
        {"sender": "alice"},
        {"sender": None},
        {"event_id": 5},
        {"origin_server_ts": "now"},
        {"origin_server_ts": True},
        {"origin_server_ts": -1},
        {"content": {"msgtype": "m.text", "body": "x" * 65_537}},
    ],
)
def test_malformed_events_give_none(change: dict[str, Any]) -> None:
    assert parse_message({**event(), **change}, ROOM) is None


def test_a_lone_surrogate_is_replaced_so_the_text_encodes() -> None:
    raw = json.loads('{"msgtype": "m.text", "body": "a\\ud800b"}')
    message = parse_message({**event(), "content": raw}, ROOM)
    assert message is not None
    assert message.body == "a?b"
    message.body.encode("utf-8")


def test_a_64_kib_body_and_150_nested_tags_are_handled_quickly() -> None:
    deep = "<b>" * 150 + "x" + "</b>" * 150
    raw = event(body="a" * 65_000, format="org.matrix.custom.html", formatted_body=deep)
    start = time.perf_counter()
    message = parse_message(raw, ROOM)
    assert message is not None
    assert message.formatted_body is not None
    assert sanitize(message.formatted_body).count("<b>") == 100
    assert time.perf_counter() - start < 0.1


def test_state_typed_timeline_events_without_state_key_are_not_state() -> None:
    assert is_state({"type": "m.room.power_levels", "state_key": "", "content": {}})
    assert not is_state({"type": "m.room.power_levels", "content": {"users": {"@x:y": 100}}})
    assert not is_state({"type": "m.room.tombstone", "content": {"replacement_room": "!x:y"}})
    assert not is_state({"type": "m.room.member", "state_key": None})
    assert not is_state(["state_key"])
    assert parse_message({**event(), "type": "m.room.tombstone"}, ROOM) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def shaped(value: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Event-like dicts: the real keys with plausible or hostile values."""
    return st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["m.room.message", "m.room.power_levels"]) | value,
            "event_id": st.just("$e") | value,
            "sender": st.just("@a:b") | value,
            "room_id": st.just(ROOM) | value,
            "state_key": value,
            "origin_server_ts": st.integers() | value,
            "content": st.fixed_dictionaries(
                {},
                optional={
                    "msgtype": st.just("m.text") | value,
                    "body": st.text() | value,
                    "format": st.just("org.matrix.custom.html") | value,
                    "formatted_body": st.text() | value,
                    "m.relates_to": st.fixed_dictionaries(
                        {},
                        optional={
                            "rel_type": st.sampled_from(["m.replace", "m.thread"]) | value,
                            "event_id": st.just("$x") | value,
                            "is_falling_back": value,
                            "m.in_reply_to": st.fixed_dictionaries({"event_id": value}) | value,
                        },
                    )
                    | value,
                },
            )
            | value,
        },
    )


@settings(max_examples=300)
@given(JSON)
def test_any_json_value_gives_a_message_or_none(value: Any) -> None:
    assert parse_message(value, ROOM) is None or isinstance(parse_message(value, ROOM), Message)
    is_state(value)


@settings(max_examples=500)
@given(shaped(JSON))
def test_any_event_shape_gives_a_message_or_none_with_encodable_text(raw: dict[str, Any]) -> None:
    for room in (ROOM, None):
        message = parse_message(raw, room)
        if message is not None:
            message.body.encode("utf-8")
            (message.formatted_body or "").encode("utf-8")
            message.msgtype.encode("utf-8")
