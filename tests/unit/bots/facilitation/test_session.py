"""The session's rules: queue order (with direct responses), agenda timing, rounds with a pass,
which lines become notes, and the limits a hostile room runs into."""

from __future__ import annotations

import pytest

from clubs.bots.facilitation.session import (
    MAX_ITEMS,
    MAX_QUEUE,
    MAX_TITLE_CHARS,
    Refused,
    Session,
    minutes_sections,
    tagged_lines,
)

A, B, C, D = "@a:t", "@b:t", "@c:t", "@d:t"


def new() -> Session:
    return Session("$start", "Встреча", 1000.0, A)


def test_the_queue_is_first_come_first_served_and_raising_twice_changes_nothing() -> None:
    s = new()
    assert [s.raise_hand(u) for u in (A, B, C)] == [1, 2, 3]
    assert s.raise_hand(B) == 2
    assert [e.user for e in s.queue] == [A, B, C]


def test_a_direct_response_goes_after_earlier_ones_and_before_everyone_else() -> None:
    s = new()
    s.raise_hand(A)
    s.raise_hand(B)
    assert s.raise_hand(C, direct=True) == 1
    assert s.raise_hand(D, direct=True) == 2
    assert [(e.user, e.direct) for e in s.queue] == [(C, True), (D, True), (A, False), (B, False)]
    assert s.next_speaker(1010.0) == C
    assert s.next_speaker(1020.0) == D
    assert s.next_speaker(1030.0) == A


def test_a_queued_hand_turned_into_a_direct_response_moves_forward() -> None:
    s = new()
    s.raise_hand(A)
    s.raise_hand(B)
    assert s.raise_hand(B, direct=True) == 1
    assert [e.user for e in s.queue] == [B, A]


def test_lowering_a_hand_and_an_empty_queue() -> None:
    s = new()
    s.raise_hand(A)
    assert s.lower_hand(A)
    assert not s.lower_hand(A)
    assert s.next_speaker(1000.0) is None
    assert s.speaker is None


def test_the_speaker_gets_one_gentle_notice() -> None:
    s = new()
    s.raise_hand(A)
    s.next_speaker(1000.0)
    assert not s.speaker_over(1100.0)
    assert s.speaker_over(1180.0)
    assert not s.speaker_over(1500.0)


def test_agenda_timing_overrun_warned_once_and_again_after_an_extension() -> None:
    s = new()
    s.add_item("Знакомство", 600, 1000.0)
    s.add_item("Разбор", 1200, 1000.0)
    assert s.item is not None
    assert s.item.title == "Знакомство"
    assert s.time_left(1000.0) == 600
    assert not s.overrun_due(1500.0)
    assert s.overrun_due(1600.0)
    assert not s.overrun_due(1700.0)
    s.extend(300)
    assert s.time_left(1700.0) == 200
    assert s.overrun_due(1900.0)
    nxt = s.next_item(1900.0)
    assert nxt is not None
    assert nxt.title == "Разбор"
    assert s.time_left(1900.0) == 1200
    assert s.next_item(4000.0) is None
    assert s.time_left(4000.0) is None


def test_only_items_not_started_move_or_go() -> None:
    s = new()
    for title in ("one", "two", "three"):
        s.add_item(title, 60, 0.0)
    s.move_item(3, 2)
    assert [i.title for i in s.agenda] == ["one", "three", "two"]
    with pytest.raises(Refused):
        s.move_item(1, 3)
    with pytest.raises(Refused):
        s.remove_item(1)
    s.remove_item(3)
    assert [i.title for i in s.agenda] == ["one", "three"]


def test_a_round_in_order_with_a_pass_now_and_a_pass_ahead() -> None:
    s = new()
    order = s.start_round([C, A, D, B], shuffle=False, seed="$e", per_person_s=60, now=0.0)
    assert order == [A, B, C, D]
    assert s.round is not None
    assert s.round.current == A
    assert s.pass_turn(C, 5.0)  # a later turn is skipped
    assert s.round.current == A
    assert s.next_turn(10.0) == B
    assert s.pass_turn(B, 20.0)  # passing one's own turn ends it
    assert s.round is not None
    assert s.round.current == D
    assert not s.pass_turn(A, 21.0)  # A already spoke
    assert s.next_turn(30.0) is None
    assert s.round is None


def test_a_shuffled_round_is_the_same_order_when_replayed() -> None:
    people = [f"@p{i}:t" for i in range(20)]
    first = new().start_round(people, shuffle=True, seed="$x", per_person_s=60, now=0)
    again = new().start_round(people, shuffle=True, seed="$x", per_person_s=60, now=0)
    assert first == again
    assert sorted(first) == sorted(people)


def test_a_turn_gets_one_notice() -> None:
    s = new()
    s.start_round([A, B], shuffle=False, seed="$e", per_person_s=60, now=0.0)
    assert not s.turn_over(30.0)
    assert s.turn_over(60.0)
    assert not s.turn_over(90.0)
    s.next_turn(90.0)
    assert s.turn_over(150.0)


def test_only_tagged_lines_are_kept_in_either_language() -> None:
    body = (
        "Сегодня я поговорила с мамой\n"
        "#info Мама слушала дольше обычного\n"
        "#идея  собрать вопросы заранее\n"
        "#ACTION: Аня пишет памятку\n"
        "#решено встречаемся через неделю\n"
        "#later вернуться к теме ТВ\n"
        "#потом безопасность звонков\n"
        "#unknown не заметка\n"
        "тоже не заметка #info в середине\n"
        "#info\n"
    )
    notes = tagged_lines(body)
    assert [(n.kind, n.text) for n in notes] == [
        ("info", "Мама слушала дольше обычного"),
        ("idea", "собрать вопросы заранее"),
        ("action", "Аня пишет памятку"),
        ("agreed", "встречаемся через неделю"),
        ("later", "вернуться к теме ТВ"),
        ("later", "безопасность звонков"),
    ]


def test_the_minutes_hold_every_tagged_line_no_untagged_one_and_no_author() -> None:
    s = new()
    s.take_notes("привет всем\n#info первое")
    s.take_notes("#agreed второе")
    s.take_notes("просто разговор")
    sections = minutes_sections(s.notes)
    flat = [t for texts in sections.values() for t in texts]
    assert flat == ["первое", "второе"]
    assert sections["info"] == ["первое"]
    assert sections["agreed"] == ["второе"]
    assert A not in repr(s.notes)


def test_a_session_survives_serialisation() -> None:
    s = new()
    s.add_item("x", 60, 0.0)
    s.raise_hand(B, direct=True)
    s.start_round([A, B], shuffle=False, seed="$e", per_person_s=60, now=0.0)
    s.take_notes("#info y")
    s.mark_applied("$cmd")
    assert Session.from_json(s.to_json()) == s


# --- hostile input ---------------------------------------------------------------------------


def test_500_agenda_items_stop_at_the_limit_and_the_agenda_still_works() -> None:
    s = new()
    refused = 0
    for i in range(500):
        try:
            s.add_item(f"item {i}", 60, 0.0)
        except Refused:
            refused += 1
    assert len(s.agenda) == MAX_ITEMS
    assert refused == 500 - MAX_ITEMS
    assert s.next_item(60.0) is not None


def test_a_10_kib_title_is_refused_and_nothing_is_stored() -> None:
    s = new()
    with pytest.raises(Refused):
        s.add_item("я" * 10240, 600, 0.0)
    assert s.agenda == []
    s.add_item("я" * MAX_TITLE_CHARS, 600, 0.0)
    assert len(s.agenda) == 1


@pytest.mark.parametrize("seconds", [0, 59, 4 * 3600 + 1])
def test_timeboxes_out_of_range_are_refused(seconds: int) -> None:
    s = new()
    with pytest.raises(Refused):
        s.add_item("x", seconds, 0.0)
    assert s.agenda == []


def test_a_queue_of_300_stops_at_the_limit_in_order() -> None:
    s = new()
    people = [f"@p{i}:t" for i in range(300)]
    taken = 0
    for p in people:
        try:
            s.raise_hand(p)
            taken += 1
        except Refused:
            pass
    assert taken == MAX_QUEUE
    assert [e.user for e in s.queue] == people[:MAX_QUEUE]
    assert s.next_speaker(0.0) == people[0]


def test_the_applied_events_are_bounded() -> None:
    s = new()
    for i in range(1000):
        s.mark_applied(f"${i}")
    assert len(s.applied) == 64
    assert s.applied[-1] == "$999"


def test_waiting_questions_are_numbered_and_taken_once() -> None:
    s = new()
    assert s.hold_question("first?") == 1
    assert s.hold_question("second?") == 2
    assert s.take_question(2) == "second?"
    assert s.take_question(2) is None
    assert Session.from_json(s.to_json()).pending == s.pending
    assert s.hold_question("third?") == 3


def test_waiting_questions_are_bounded() -> None:
    s = new()
    for i in range(50):
        s.hold_question(f"q{i}")
    with pytest.raises(Refused):
        s.hold_question("one too many")
    assert len(s.pending) == 50


def test_a_quick_poll_is_read_with_its_options_in_either_language() -> None:
    from clubs.bots.facilitation.parse import duration as _duration
    from clubs.bots.facilitation.session import parse_poll

    poll = parse_poll("open multi 2m Когда? | пн | вт | ср", _duration)
    assert poll.question == "Когда?"
    assert poll.answers == ("пн", "вт", "ср")
    assert poll.disclosed
    assert poll.multiple
    assert poll.seconds == 120
    plain = parse_poll("Темп нормальный? | да | нет", _duration)
    assert not plain.disclosed
    assert not plain.multiple
    assert plain.seconds == 300
    assert parse_poll("открытый несколько 1м Да? | да | нет", _duration).disclosed


@pytest.mark.parametrize(
    "spec",
    [
        "no answers",
        "Q? | only one",
        "| a | b",
        "Q? | a | a",
        "Q? | a | ",
        "90m Q? | a | b",
        "Q? | " + " | ".join(str(i) for i in range(21)),
        "Q? | " + "x" * 301 + " | b",
    ],
)
def test_a_bad_quick_poll_is_refused(spec: str) -> None:
    from clubs.bots.facilitation.parse import duration as _duration
    from clubs.bots.facilitation.session import parse_poll

    with pytest.raises(Refused):
        parse_poll(spec, _duration)


def test_questions_to_post_are_bounded_and_survive_serialisation() -> None:
    s = new()
    for i in range(50):
        s.queue_question(f"q{i}")
    with pytest.raises(Refused):
        s.queue_question("one too many")
    assert Session.from_json(s.to_json()).outgoing == [f"q{i}" for i in range(50)]


def test_a_case_number_as_an_agenda_title() -> None:
    from clubs.bots.facilitation.agenda import case_of

    assert case_of("case 42") == 42
    assert case_of("Случай #7") == 7
    for title in ("case", "case 4 2", "case forty", "casework 42", "Intro", "случай -3"):
        assert case_of(title) is None, title
    session = Session(sid="$start", title="Evening", started_at=0.0, starter="@chair:test")
    session.add_item("Case 42: TV", 1200, 0.0, case=42)
    again = Session.from_json(session.to_json())  # a case item survives the store
    assert again.agenda[0].case == 42
    assert again.agenda[0].method is None
