"""Clubs' own exercises: from the network file (located errors) through the club settings to
what the bot reads; and the pure rules of breakout groups and the auto-end."""

from __future__ import annotations

import pytest

from clubs.bots.facilitation.clubconf import club_methods
from clubs.bots.facilitation.methods import agenda_method, named
from clubs.bots.facilitation.session import Item, Refused, Session, split_groups
from clubs.core.namespace import CLUB_SETTINGS
from clubs.core.yamlconf import ConfigError
from clubs.provisioning.compile import compile_network
from clubs.provisioning.load import parse_network
from tests.unit.provisioning.test_sessions import NETWORK_WITH_WIDGET

GRATITUDE = (
    "{name: gratitude, aliases: [благодарность], "
    "title: {ru: Благодарность, en: Gratitude}, text: {ru: Назовите три вещи., en: Name three.}}"
)
PAUSE = "{name: pause, title: {ru: Пауза}, text: {ru: Помолчите минуту.}}"


def settings(text: str, club: str) -> dict[str, object]:
    net = compile_network(parse_network(text, "n.yaml"), "hs.test")
    return dict(net.room(f"club:{club}/sessions").state[(CLUB_SETTINGS, "")])


def test_the_networks_methods_reach_every_club_and_a_club_adds_its_own() -> None:
    text = NETWORK_WITH_WIDGET.replace(
        "club_template:", f"defaults: {{methods: [{PAUSE}]}}\nclub_template:"
    ).replace("        call_widget: true\n", f"        methods: [{GRATITUDE}]\n")
    almaty = club_methods(settings(text, "almaty"))
    astana = club_methods(settings(text, "astana"))
    assert [m.name for m in almaty] == ["pause", "gratitude"]
    assert [m.name for m in astana] == ["pause"]
    assert almaty[1].title_in("en") == "Gratitude"
    assert almaty[0].title_in("en") == "Пауза"  # no English: the Russian one
    assert named("благодарность", almaty) == "gratitude"
    assert agenda_method("метод благодарность", almaty) == "gratitude"
    assert agenda_method("method listening", almaty) == "listening"
    assert "methods" not in settings(NETWORK_WITH_WIDGET, "astana")


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        ("[{name: listening, title: {ru: x}, text: {ru: y}}]", "already names one of the bot"),
        ("[{name: Big, title: {ru: x}, text: {ru: y}}]", "expected one lowercase word"),
        ("[{name: ok, title: {en: x}, text: {ru: y}}]", "missing required key"),
        ("[{name: ok, title: {ru: x}, text: {ru: y}, color: red}]", "unknown key"),
        (f"[{PAUSE}, {PAUSE}]", "duplicate method key"),
        ("[{name: ok, title: {ru: '" + "x" * 81 + "'}, text: {ru: y}}]", "expected 1 to 80"),
    ],
)
def test_a_wrong_method_is_a_located_error(methods: str, message: str) -> None:
    text = NETWORK_WITH_WIDGET.replace(
        "        call_widget: true\n", f"        methods: {methods}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_network(text, "n.yaml")
    problem = str(caught.value)
    assert message in problem
    assert "n.yaml:13:" in problem
    assert "methods" in problem


def test_drifted_settings_keep_only_the_methods_that_fit() -> None:
    good = {"name": "pause", "title": {"ru": "Пауза"}, "text": {"ru": "Тишина."}}
    bad = [
        {"name": "story", "title": {"ru": "x"}, "text": {"ru": "y"}},  # a built-in name
        {"name": "x y", "title": {"ru": "x"}, "text": {"ru": "y"}},
        {"name": "long", "title": {"ru": "x" * 81}, "text": {"ru": "y"}},
        {"name": "notext", "title": {"ru": "x"}},
        "nonsense",
        dict(good),  # a second "pause"
    ]
    assert [m.name for m in club_methods({"methods": [good, *bad]})] == ["pause"]
    assert club_methods({"methods": "nope"}) == ()


def test_groups_are_even_shuffled_by_the_seed_and_the_same_on_replay() -> None:
    people = [f"@p{i}:x" for i in range(7)]
    groups = split_groups(people, 3, "$event")
    assert sorted(len(g) for g in groups) == [2, 2, 3]
    assert sorted(u for g in groups for u in g) == sorted(people)
    assert split_groups(reversed(people), 3, "$event") == groups
    assert any(split_groups(people, 3, f"$e{i}") != groups for i in range(5))
    for count in (1, 8, 11):
        with pytest.raises(Refused):
            split_groups(people, count, "$event")


def test_a_session_ends_by_itself_an_hour_past_its_agenda() -> None:
    session = Session("$s", "t", 1000.0, "@a:x")
    assert session.auto_end_at() == 1000.0 + 6 * 3600
    session.agenda = [Item("a", 600), Item("b", 1200)]
    session.extra_s = 300
    assert session.auto_end_at() == 1000.0 + 2100 + 3600


def test_only_a_group_member_sets_its_summary_and_the_latest_counts() -> None:
    session = Session("$s", "t", 0.0, "@a:x")
    with pytest.raises(Refused):
        session.summarise("@a:x", "no groups yet")
    from clubs.bots.facilitation.session import Breakout, Group

    session.breakout = Breakout("$b", False, [Group(["@a:x"], "m1"), Group(["@b:x"], "m2")])
    session.summarise("@b:x", "first")
    session.summarise("@b:x", "  second   line ")
    assert session.breakout.groups[1].summary == "second line"
    with pytest.raises(Refused):
        session.summarise("@c:x", "not in a group")
    with pytest.raises(Refused):
        session.summarise("@a:x", "x" * 301)
    again = Session.from_json(session.to_json())
    assert again.breakout == session.breakout
