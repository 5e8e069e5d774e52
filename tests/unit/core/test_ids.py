from __future__ import annotations

import pytest

from clubs.core.ids import as_event_id, as_room_alias, as_room_id, as_user_id, is_server_name


@pytest.mark.parametrize(
    "value",
    [
        "@alice:example.org",
        "@a.b_c=d-e/f+g:example.org",
        "@Legacy!Name:example.org",  # historical localparts are printable ASCII
        "@a:127.0.0.1:8448",
        "@a:[::1]:8448",
        "@a:[2001:db8::1]",
        "@a:localhost",
        "@" + "a" * 240 + ":example.org",
    ],
)
def test_valid_user_ids_are_accepted(value: str) -> None:
    assert as_user_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "alice:example.org",
        "@alice",
        "@:example.org",
        "@alice:",
        "@al ice:example.org",
        "@alice:exa mple.org",
        "@alice:example.org:",
        "@alice:example.org:123456",
        "@alice:example.org:8a",
        "@alice:[::1",
        "@alice:[zz]",
        "@алиса:example.org",
        "@alice:пример.рф",
        "@alice:example.org\n",
        "@a\ud800:example.org",
        "@" + "a" * 250 + ":example.org",
        "@room",
        None,
        5,
        ["@a:b"],
    ],
)
def test_invalid_user_ids_are_refused(value: object) -> None:
    assert as_user_id(value) is None


def test_room_aliases_allow_unicode_but_no_controls() -> None:
    assert as_room_alias("#клуб:example.org") == "#клуб:example.org"
    assert as_room_alias("#club:example.org:8448") == "#club:example.org:8448"
    for bad in ("#:example.org", "#club", "#cl\x00ub:example.org", "#a\ud800:b", "club:x", 1):
        assert as_room_alias(bad) is None
    assert as_room_alias("#" + "к" * 130 + ":x.org") is None  # over 255 bytes


def test_room_and_event_ids_are_opaque_printable_ascii() -> None:
    assert as_room_id("!6J3m0UXTRKR5aLxhWPlh_iMMq8Wn8W1Q7R3jbxWzcWs") is not None  # v12
    assert as_room_id("!abc:example.org") == "!abc:example.org"
    assert as_event_id("$abc/def+ghi") == "$abc/def+ghi"
    for bad in ("!", "!a b", "!ä", "$abc", "", None):
        assert as_room_id(bad) is None
    for bad in ("$", "$a b", "!abc", "$" + "a" * 255, 3):
        assert as_event_id(bad) is None


def test_server_names_follow_the_grammar() -> None:
    assert is_server_name("matrix.org")
    assert is_server_name("1.2.3.4:80")
    assert not is_server_name("")
    assert not is_server_name("[]")
    assert not is_server_name("host:")
    assert not is_server_name("host:1:2")
