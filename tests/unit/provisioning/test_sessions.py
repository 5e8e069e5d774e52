"""Sessions declared in the network file: read with located errors, published as the club's
`org.commclubs.sessions` state in its `sessions` room, planned as ordinary updates."""

from __future__ import annotations

import textwrap
from datetime import datetime
from typing import Any

import pytest

from clubs.bots.scheduling.declared import declared_sessions
from clubs.bots.scheduling.when import When
from clubs.core.namespace import CLUB_SESSIONS, CLUB_SETTINGS
from clubs.core.yamlconf import ConfigError
from clubs.provisioning import load
from clubs.provisioning.compile import compile_network
from clubs.provisioning.desired import DesiredNetwork, DesiredRoom
from clubs.provisioning.lint import lint_network, load_sensitive_words
from clubs.provisioning.load import parse_network
from clubs.provisioning.plan import plan, render_text
from tests.unit.provisioning.test_plan import applied

SERVER = "hs.test"
SESSIONS_REF = "club:almaty/sessions"

HEAD = """\
version: 1
network: demo
name: "Сеть"
club_template:
  rooms:
    - {key: general, name: "Общий"}
    - {key: sessions, name: "Встречи"}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "Алматы"
        time_zone: Asia/Almaty
"""
"""A network with one club; `sessions:` is written at line 15, its first entry at line 16."""


def network_text(sessions: str | None) -> str:
    if sessions is None:
        return HEAD
    return HEAD + "        sessions:\n" + textwrap.indent(textwrap.dedent(sessions), " " * 10)


def compiled(sessions: str | None) -> DesiredNetwork:
    return compile_network(parse_network(network_text(sessions), "n.yaml"), SERVER)


def room(net: DesiredNetwork, ref: str) -> DesiredRoom:
    return next(r for r in net.rooms if r.ref == ref)


def published(sessions: str | None) -> Any:
    return room(compiled(sessions), SESSIONS_REF).state[(CLUB_SESSIONS, "")]


def errors(sessions: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_network(network_text(sessions), "n.yaml")
    return str(caught.value).splitlines()


WEEKLY = """\
- key: weekly
  title: "Встреча клуба"
  when: "каждый четверг в 19:00"
  from: 2026-12-01
  duration: 2h
  kind: meeting
  format: offline
  capacity: 20
  materials: https://example.org/club
"""

GOOD: list[tuple[str, dict[str, Any]]] = [
    (
        WEEKLY,
        {
            "key": "weekly",
            "title": "Встреча клуба",
            "kind": "meeting",
            "start": "2026-12-03T19:00",
            "rrule": "FREQ=WEEKLY;BYDAY=TH",
            "duration_s": 7200,
            "online": False,
            "capacity": 20,
            "materials": "https://example.org/club",
        },
    ),
    (  # only what is required: the defaults (2 hours, a meeting, offline, no limit)
        '- {key: walk, title: "Прогулка", when: "every Saturday 11:00", from: 2026-12-05}',
        {
            "key": "walk",
            "title": "Прогулка",
            "kind": "meeting",
            "start": "2026-12-05T11:00",  # `from` itself is a match: the first one is on it
            "rrule": "FREQ=WEEKLY;BYDAY=SA",
            "duration_s": 7200,
            "online": False,
            "capacity": None,
            "materials": None,
        },
    ),
    (
        "- key: talk\n"
        '  title: "Лекция о визах"\n'
        '  when: "каждый первый вторник месяца в 18:30"\n'
        '  from: "2027-01-01"\n'
        "  duration: 90m\n"
        "  kind: lecture\n"
        "  format: online\n",
        {
            "key": "talk",
            "title": "Лекция о визах",
            "kind": "lecture",
            "start": "2027-01-05T18:30",
            "rrule": "FREQ=MONTHLY;BYDAY=1TU",
            "duration_s": 5400,
            "online": True,
            "capacity": None,
            "materials": None,
        },
    ),
    (  # a one-off with its year needs no `from`
        '- {key: party, title: "Новый год", when: "30.12.2026 в 18:00", duration: "3 ч", '
        "kind: seminar}",
        {
            "key": "party",
            "title": "Новый год",
            "kind": "seminar",
            "start": "2026-12-30T18:00",
            "rrule": None,
            "duration_s": 10800,
            "online": False,
            "capacity": None,
            "materials": None,
        },
    ),
    (  # a one-off without its year is counted from `from`
        '- {key: intro, title: "Знакомство", when: "10 января в 19:00", from: 2026-12-01, '
        "kind: training, capacity: 1}",
        {
            "key": "intro",
            "title": "Знакомство",
            "kind": "training",
            "start": "2027-01-10T19:00",
            "rrule": None,
            "duration_s": 7200,
            "online": False,
            "capacity": 1,
            "materials": None,
        },
    ),
    (
        '- {key: fortnight, title: "Клуб", when: "every other Wednesday 19:00", from: 2026-12-01}',
        {
            "key": "fortnight",
            "title": "Клуб",
            "kind": "meeting",
            "start": "2026-12-02T19:00",
            "rrule": "FREQ=WEEKLY;INTERVAL=2;BYDAY=WE",
            "duration_s": 7200,
            "online": False,
            "capacity": None,
            "materials": None,
        },
    ),
]


@pytest.mark.parametrize(("declared", "expected"), GOOD, ids=[e["key"] for _, e in GOOD])
def test_a_declaration_is_published_as_exactly_this_content(
    declared: str, expected: dict[str, Any]
) -> None:
    assert published(declared) == {"sessions": [expected]}


def test_the_scheduling_bot_takes_every_published_entry() -> None:
    """The contract with `declared.py`: nothing the provisioner publishes is skipped."""
    content = published("\n".join(d.rstrip("\n") for d, _ in GOOD) + "\n")
    good, skipped = declared_sessions("almaty", content)
    assert skipped == 0
    assert [(d.title, d.start_local, d.rrule) for d in good] == [
        (e["title"], e["start"], e["rrule"]) for e in content["sessions"]
    ]


def test_sessions_are_sorted_by_key_and_only_in_the_sessions_room() -> None:
    two = WEEKLY + '- {key: alpha, title: "Лекция", when: "30.12.2026 в 18:00"}\n'
    net = compiled(two)
    assert [s["key"] for s in room(net, SESSIONS_REF).state[(CLUB_SESSIONS, "")]["sessions"]] == [
        "alpha",
        "weekly",
    ]
    assert [r.ref for r in net.rooms if (CLUB_SESSIONS, "") in r.state] == [SESSIONS_REF]


def test_compiling_twice_gives_the_same_content() -> None:
    declared = "\n".join(d.rstrip("\n") for d, _ in GOOD) + "\n"
    first, second = compiled(declared), compiled(declared)
    assert room(first, SESSIONS_REF).state == room(second, SESSIONS_REF).state
    assert len(published(declared)["sessions"]) == len(GOOD)


def test_a_club_without_sessions_publishes_an_empty_list_and_no_room_no_event() -> None:
    assert published(None) == {"sessions": []}
    assert published("[]") == {"sessions": []}
    no_room = HEAD.replace('    - {key: sessions, name: "Встречи"}\n', "")
    net = compile_network(parse_network(no_room, "n.yaml"), SERVER)
    assert not any((CLUB_SESSIONS, "") in r.state for r in net.rooms)


def test_only_the_provisioner_writes_the_declared_sessions() -> None:
    """Level 100 (the provisioner's): facilitators and the bots (50) cannot overwrite what the
    network file declares."""
    sessions_room = room(compiled(WEEKLY), SESSIONS_REF)
    power = sessions_room.power_levels
    assert power["events"][CLUB_SESSIONS] == 100
    assert power["state_default"] == 50


ERRORS: list[tuple[str, str, str]] = [
    (
        "unknown key",
        '- {key: weekly, title: "Встреча", when: "каждый четверг в 19:00", from: 2026-12-01, '
        'venue: "Абая 1"}',
        "n.yaml:16:95: countries[0].clubs[0].sessions[0].venue: unknown key; expected one of "
        "key, title, when, from, duration, kind, format, capacity, materials, agenda",
    ),
    (
        "bad slug",
        '- {key: Weekly, title: "Встреча", when: "30.12.2026 в 18:00"}',
        "n.yaml:16:19: countries[0].clubs[0].sessions[0].key: expected a key of lowercase "
        'letters, digits and dashes (at most 40); got "Weekly"',
    ),
    (
        "duplicate key",
        '- {key: a, title: "Встреча", when: "30.12.2026 в 18:00"}\n'
        '- {key: a, title: "Другая", when: "31.12.2026 в 18:00"}',
        "n.yaml:17:19: countries[0].clubs[0].sessions[1].key: duplicate session key "
        '"a" (first at line 16)',
    ),
    (
        "when refused by parse_when",
        '- {key: a, title: "Встреча", when: "каждый день недели", from: 2026-12-01}',
        "n.yaml:16:46: countries[0].clubs[0].sessions[0].when: not a time the scheduling bot "
        "reads: no time of day (like 19:00 or 7pm) (read from 2026-12-01, the date of from)",
    ),
    (
        "repeating without from",
        '- {key: a, title: "Встреча", when: "каждый четверг в 19:00"}',
        "n.yaml:16:46: countries[0].clubs[0].sessions[0].when: a repeating time needs from: the "
        "date its first occurrence is counted from (like from: 2026-12-01)",
    ),
    (
        "one-off without year or from",
        '- {key: a, title: "Встреча", when: "10 декабря в 19:00"}',
        "n.yaml:16:46: countries[0].clubs[0].sessions[0].when: a one-off time without its year "
        "depends on the day it is read: write the year («10.12.2026 в 19:00») or from: the "
        "date it is counted from",
    ),
    (
        "one-off before from",
        '- {key: a, title: "Встреча", when: "10.12.2026 в 19:00", from: 2026-12-20}',
        "n.yaml:16:46: countries[0].clubs[0].sessions[0].when: not a time the scheduling bot "
        "reads: the date and time are in the past (read from 2026-12-20, the date of from)",
    ),
    (
        "bad from",
        '- {key: a, title: "Встреча", when: "каждый четверг в 19:00", from: 1.12.2026}',
        "n.yaml:16:78: countries[0].clubs[0].sessions[0].from: expected a date like "
        '2026-12-01; got "1.12.2026"',
    ),
    (
        "bad duration",
        '- {key: a, title: "Встреча", when: "30.12.2026 в 18:00", duration: 13h}',
        "n.yaml:16:78: countries[0].clubs[0].sessions[0].duration: expected a duration like 2h, "
        '90m or 1h30: a session lasts 5 minutes to 12 hours; got "13h"',
    ),
    (
        "bad kind",
        '- {key: a, title: "Встреча", when: "30.12.2026 в 18:00", kind: party}',
        "n.yaml:16:74: countries[0].clubs[0].sessions[0].kind: expected one of meeting, "
        'lecture, seminar, training; got "party"',
    ),
    (
        "bad format",
        '- {key: a, title: "Встреча", when: "30.12.2026 в 18:00", format: hybrid}',
        "n.yaml:16:76: countries[0].clubs[0].sessions[0].format: expected one of offline, "
        'online; got "hybrid"',
    ),
    (
        "capacity out of range",
        '- {key: a, title: "Встреча", when: "30.12.2026 в 18:00", capacity: 1001}',
        "n.yaml:16:78: countries[0].clubs[0].sessions[0].capacity: expected an integer from 1 "
        "to 1000; got 1001",
    ),
    (
        "capacity online",
        '- {key: a, title: "Встреча", when: "30.12.2026 в 18:00", format: online, capacity: 5}',
        "n.yaml:16:94: countries[0].clubs[0].sessions[0].capacity: an online session has no "
        "capacity (places are counted for a venue); remove capacity or write format: offline",
    ),
    (
        "materials not https",
        '- {key: a, title: "Встреча", when: "30.12.2026 в 18:00", materials: http://x.org/a}',
        "n.yaml:16:79: countries[0].clubs[0].sessions[0].materials: expected an https:// link "
        '(no spaces, at most 500 characters); got "http://x.org/a"',
    ),
    (
        "agenda item without a duration",
        '- {key: a, title: "Встреча", when: "30.12.2026 в 18:00", agenda: ["Знакомство"]}',
        "n.yaml:16:77: countries[0].clubs[0].sessions[0].agenda[0]: expected a duration, then "
        'a title, like "10m Introductions"; got "Знакомство"',
    ),
    (
        "agenda item too long a timebox",
        '- {key: a, title: "Встреча", when: "30.12.2026 в 18:00", agenda: ["5h Всё"]}',
        "n.yaml:16:77: countries[0].clubs[0].sessions[0].agenda[0]: expected whole minutes "
        'from 1 to 240; got "5h"',
    ),
    (
        "title too long",
        '- {key: a, title: "' + "я" * 121 + '", when: "30.12.2026 в 18:00"}',
        "n.yaml:16:29: countries[0].clubs[0].sessions[0].title: expected at most 120 "
        "characters; got 121 characters",
    ),
]


@pytest.mark.parametrize(
    ("declared", "expected"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_each_problem_is_reported_at_its_place(declared: str, expected: str) -> None:
    assert errors(declared) == [expected]


def test_a_rule_check_rule_refuses_is_reported_at_when(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every rule parse_when reads passes check_rule (tests/unit/bots/scheduling), so a refused
    # one is made by standing in for parse_when.
    def too_many(text: str, now_local: datetime) -> When:
        return When(datetime(2026, 12, 3, 19), "FREQ=WEEKLY;COUNT=9999")

    monkeypatch.setattr(load, "parse_when", too_many)
    (problem,) = errors(
        '- {key: a, title: "Встреча", when: "30.12.2026 в 18:00", from: 2026-12-01}'
    )
    assert problem.startswith(
        "n.yaml:16:46: countries[0].clubs[0].sessions[0].when: a rule the scheduling bot does "
        "not run: "
    )


def test_sessions_without_a_sessions_room_are_reported_at_the_sessions_key() -> None:
    # The template's sessions room removed: `sessions:` moves up to line 14.
    text = network_text(WEEKLY).replace('    - {key: sessions, name: "Встречи"}\n', "")
    with pytest.raises(ConfigError) as caught:
        parse_network(text, "n.yaml")
    assert str(caught.value).splitlines() == [
        "n.yaml:14:9: countries[0].clubs[0].sessions: sessions are published in the club's "
        'room with key "sessions", and this club has none: add one to its rooms (or to '
        "club_template)"
    ]


def test_a_title_is_linted_like_room_names() -> None:
    text = network_text('- {key: a, title: "Антивоенный клуб", when: "30.12.2026 в 18:00"}')
    problems = lint_network(parse_network(text, "n.yaml"), load_sensitive_words())
    assert [(p.line, p.path) for p in problems] == [(16, "countries[0].clubs[0].sessions[0].title")]


def test_changed_and_removed_sessions_are_ordinary_updates() -> None:
    with_sessions = compiled(WEEKLY)
    assert plan(with_sessions, applied(with_sessions)).empty

    changed = compiled(WEEKLY.replace("capacity: 20", "capacity: 25"))
    (update,) = plan(changed, applied(with_sessions)).actions
    assert (update.kind, update.ref, update.event_type) == (
        "put_state",
        SESSIONS_REF,
        CLUB_SESSIONS,
    )
    assert not update.security
    # The plan names the session that changed, not the whole list as escaped JSON.
    text = render_text(plan(changed, applied(with_sessions)))
    assert f"~ update {SESSIONS_REF}: {CLUB_SESSIONS}: sessions: changed weekly" in text
    assert "\\u04" not in text

    removed = compiled(None)
    p = plan(removed, applied(with_sessions))
    (update,) = p.actions
    assert (update.kind, update.ref, update.event_type, update.state_key) == (
        "put_state",
        SESSIONS_REF,
        CLUB_SESSIONS,
        "",
    )
    assert update.content == {"sessions": []}
    assert not update.security
    assert not p.security
    text = render_text(p)
    assert "SECURITY" not in text
    assert f"~ update {SESSIONS_REF}: {CLUB_SESSIONS}: sessions:" in text


def test_a_room_that_never_had_the_event_gets_it_as_an_update() -> None:
    """A network applied before sessions existed: the event is added, no security finding."""
    net = compiled(None)
    before = applied(net)
    del before.rooms[SESSIONS_REF].state[(CLUB_SESSIONS, "")]  # type: ignore[attr-defined]
    (update,) = plan(net, before).actions
    assert (update.event_type, update.content, update.security) == (
        CLUB_SESSIONS,
        {"sessions": []},
        False,
    )


def test_a_club_that_accepts_call_widgets_says_so_in_its_settings() -> None:

    text = NETWORK_WITH_WIDGET
    net = compile_network(parse_network(text, "n.yaml"), "hs.test")
    widget = net.room("club:almaty/sessions").state[(CLUB_SETTINGS, "")]
    plain = net.room("club:astana/sessions").state[(CLUB_SETTINGS, "")]
    assert widget["call_widget"] is True
    assert "call_widget" not in plain
    with pytest.raises(ConfigError) as caught:
        parse_network(text.replace("call_widget: true", "call_widget: sometimes"), "n.yaml")
    assert "call_widget" in str(caught.value)


NETWORK_WITH_WIDGET = """\
version: 1
network: demo
name: "Сеть"
club_template:
  rooms:
    - {key: sessions, name: "Встречи"}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "Алматы"
        call_widget: true
      - key: astana
        name: "Астана"
"""


NETWORK_WITH_REMINDERS = NETWORK_WITH_WIDGET.replace(
    "        call_widget: true\n",
    "        call_widget: true\n        reminders: {before: [15m, 2d], to: room}\n",
)


def test_a_clubs_reminder_times_and_place_are_in_its_settings_longest_first() -> None:
    net = compile_network(parse_network(NETWORK_WITH_REMINDERS, "n.yaml"), "hs.test")
    own = net.room("club:almaty/sessions").state[(CLUB_SETTINGS, "")]
    plain = net.room("club:astana/sessions").state[(CLUB_SETTINGS, "")]
    assert own["reminders"] == {"before_s": [2 * 86400, 900], "to": "room"}
    assert "reminders" not in plain  # the defaults (24 h and 15 min, by DM) are not written


@pytest.mark.parametrize(
    ("reminders", "message"),
    [
        ("{before: [1m]}", "from 5m to 14d"),
        ("{before: [30d]}", "from 5m to 14d"),
        ("{before: [1h, 60m]}", "listed twice"),
        ("{before: [1h, 2h, 3h, 4h, 5h]}", "1 to 4 lead times"),
        ("{before: []}", "1 to 4 lead times"),
        ("{before: [soon]}", "expected a duration"),
        ("{to: email}", "email"),
        ("{before: [1h], at: 5}", "at"),
    ],
)
def test_a_wrong_reminders_option_is_a_located_error(reminders: str, message: str) -> None:
    text = NETWORK_WITH_REMINDERS.replace("{before: [15m, 2d], to: room}", reminders)
    with pytest.raises(ConfigError) as caught:
        parse_network(text, "n.yaml")
    problem = str(caught.value)
    assert message in problem
    assert "n.yaml:14:" in problem  # the line of the club's `reminders:`


def test_the_networks_call_provider_reaches_every_club_unless_it_chooses_its_own() -> None:
    text = NETWORK_WITH_WIDGET.replace(
        "club_template:",
        "defaults: {calls: {provider: element_call}}\nclub_template:",
    ).replace(
        "        call_widget: true\n",
        "        call_widget: true\n        calls: {jitsi_url: 'https://meet.club.org/'}\n",
    )
    net = compile_network(parse_network(text, "n.yaml"), "hs.test")
    own = net.room("club:almaty/sessions").state[(CLUB_SETTINGS, "")]
    network_wide = net.room("club:astana/sessions").state[(CLUB_SETTINGS, "")]
    assert own["calls"] == {"provider": "element_call", "jitsi_url": "https://meet.club.org"}
    assert network_wide["calls"] == {"provider": "element_call", "jitsi_url": "https://meet.jit.si"}
    plain = compile_network(parse_network(NETWORK_WITH_WIDGET, "n.yaml"), "hs.test")
    assert "calls" not in plain.room("club:astana/sessions").state[(CLUB_SETTINGS, "")]


@pytest.mark.parametrize(
    ("calls", "message"),
    [
        ("{provider: zoom}", 'expected one of jitsi, element_call; got "zoom"'),
        ("{jitsi_url: 'http://meet.club.org'}", "expected an https URL of a Jitsi server"),
        ("{jitsi_url: 'https://x.org/a?b=c'}", "expected an https URL of a Jitsi server"),
        ("{url: 'https://x.org'}", "unknown key"),
    ],
)
def test_a_wrong_calls_option_is_a_located_error(calls: str, message: str) -> None:
    text = NETWORK_WITH_WIDGET.replace("        call_widget: true\n", f"        calls: {calls}\n")
    with pytest.raises(ConfigError) as caught:
        parse_network(text, "n.yaml")
    problem = str(caught.value)
    assert message in problem
    assert "n.yaml:13:" in problem  # the line of the club's `calls:`


def test_an_agenda_is_published_with_its_session_and_taken_by_the_scheduling_bot() -> None:
    declared = WEEKLY + (
        '  agenda: ["10m Круг: как прошла неделя", "30м method listening", "20 case 42"]\n'
    )
    (entry,) = published(declared)["sessions"]
    assert entry["agenda"] == [
        {"title": "Круг: как прошла неделя", "minutes": 10},
        {"title": "method listening", "minutes": 30},
        {"title": "case 42", "minutes": 20},  # a bare number is minutes, as `!agenda add` reads
    ]
    (without,) = published(WEEKLY)["sessions"]
    assert "agenda" not in without  # an entry without one keeps its digest (and its series)
    (good,), skipped = declared_sessions("almaty", {"sessions": [entry]})
    assert skipped == 0
    assert good.agenda == (
        ("Круг: как прошла неделя", 10),
        ("method listening", 30),
        ("case 42", 20),
    )
    hostile = {**entry, "agenda": [{"title": "x", "minutes": 10_000}]}
    assert declared_sessions("almaty", {"sessions": [hostile]}) == ([], 1)


def test_agenda_titles_are_linted_like_the_title() -> None:
    declared = WEEKLY + '  agenda: ["10m Знакомство", "20m Антивоенный клуб"]\n'
    problems = lint_network(parse_network(network_text(declared), "n.yaml"), load_sensitive_words())
    assert [(p.line, p.path) for p in problems] == [
        (25, "countries[0].clubs[0].sessions[0].agenda")
    ]
