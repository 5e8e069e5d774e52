"""The call widget: Jitsi links only, Element's content shape, the layout kept for others."""

from __future__ import annotations

from typing import Any

import pytest

from clubs.bots.scheduling.widget import (
    accepts_widgets,
    call_link,
    jitsi_widget,
    pinned_layout,
    widget_id,
)


def test_a_jitsi_link_becomes_the_widget_element_rebuilds_from_domain_and_conference() -> None:
    content = jitsi_widget("https://meet.example.org/club-lecture-7", "Лекция")
    assert content is not None
    assert content["type"] == "jitsi"
    assert content["url"].startswith("https://")
    assert content["data"]["domain"] == "meet.example.org"
    assert content["data"]["conferenceId"] == "club-lecture-7"
    assert content["data"]["roomName"] == "Лекция"


@pytest.mark.parametrize(
    "link",
    [
        "http://meet.example.org/abc",
        "https://meet.example.org/",
        "https://meet.example.org/a/b",
        "https://call.element.io/room/#/x",
        "javascript:alert(1)",
    ],
)
def test_anything_else_makes_no_widget(link: str) -> None:
    assert jitsi_widget(link, "x") is None


def test_the_layout_pins_ours_on_top_and_keeps_the_others() -> None:
    theirs = {"widgets": {"other": {"container": "right"}}}
    wid = widget_id(3, "2030-01-10T19:00")
    assert wid == "clubs_session_3_203001101900"
    on = pinned_layout(theirs, wid, on=True)
    assert on["widgets"]["other"] == {"container": "right"}
    assert on["widgets"][wid]["container"] == "top"
    off = pinned_layout(on, wid, on=False)
    assert off == theirs
    assert pinned_layout(None, wid, on=False) == {"widgets": {}}


def test_only_clubs_that_said_so_get_widgets() -> None:
    assert accepts_widgets({"call_widget": True})
    assert not accepts_widgets({})
    assert not accepts_widgets({"call_widget": "yes"})


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "https://meet.jit.si/clubs-tok"),
        (
            {"calls": {"provider": "jitsi", "jitsi_url": "https://meet.club.org/"}},
            "https://meet.club.org/clubs-tok",
        ),
        ({"calls": {"provider": "element_call"}}, "https://matrix.to/#/!room:hs"),
        ({"calls": {"jitsi_url": "javascript:alert(1)"}}, "https://meet.jit.si/clubs-tok"),
        (
            {"calls": {"jitsi_url": "https://evil.org/x?y=<script>"}},
            "https://meet.jit.si/clubs-tok",
        ),
        ({"calls": "jitsi"}, "https://meet.jit.si/clubs-tok"),
    ],
)
def test_a_new_online_sessions_call_follows_the_clubs_settings(
    settings: dict[str, Any], expected: str
) -> None:
    assert call_link(settings, "https://meet.jit.si", "!room:hs", "tok") == expected
