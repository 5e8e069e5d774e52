"""Poll parsing and counting follow the MSC and Element; hostile input never raises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st

from clubs.bots.polls import (
    End,
    Poll,
    Vote,
    first_end,
    parse_response,
    parse_start,
    tally,
)
from clubs.bots.pollstore import VOTES_KEEP_AFTER_END_S, PollStore
from clubs.core.db import Database
from clubs.core.ids import EventId, RoomId, UserId
from clubs.core.sealed import Sealer

ABC = Poll(("a", "b", "c"), max_selections=1)
REL = {"rel_type": "m.reference", "event_id": "$poll"}


def vote(sender: str, ts: int, *answers: str, event: str | None = None) -> Vote:
    return Vote(UserId(sender), EventId(event or f"${sender}{ts}"), ts, tuple(answers))


@pytest.mark.parametrize(
    ("poll", "votes", "end_ts", "counts", "voters"),
    [
        (ABC, [vote("@x", 1, "a")], None, {"a": 1, "b": 0, "c": 0}, 1),
        # the latest vote counts, by ts
        (ABC, [vote("@x", 2, "b"), vote("@x", 1, "a")], None, {"a": 0, "b": 1, "c": 0}, 1),
        # the latest even if spoiled: unknown id spoils the whole vote
        (ABC, [vote("@x", 1, "a"), vote("@x", 2, "a", "zzz")], None, {"a": 0, "b": 0, "c": 0}, 0),
        # empty list = unvote
        (ABC, [vote("@x", 1, "a"), vote("@x", 2)], None, {"a": 0, "b": 0, "c": 0}, 0),
        # truncated to max_selections
        (ABC, [vote("@x", 1, "b", "a")], None, {"a": 0, "b": 1, "c": 0}, 1),
        # duplicates after truncation count once
        (
            Poll(("a", "b", "c"), 2),
            [vote("@x", 1, "a", "a", "b")],
            None,
            {"a": 1, "b": 0, "c": 0},
            1,
        ),
        # votes after the end are ignored, the earlier one stands
        (
            ABC,
            [vote("@x", 1, "a"), vote("@x", 5, "b"), vote("@y", 6, "c")],
            3,
            {"a": 1, "b": 0, "c": 0},
            1,
        ),
        # on the end's ts still counts
        (ABC, [vote("@x", 3, "c")], 3, {"a": 0, "b": 0, "c": 1}, 1),
        # same ts: the event id decides, the same way every time
        (
            ABC,
            [vote("@x", 1, "a", event="$2"), vote("@x", 1, "b", event="$1")],
            None,
            {"a": 1, "b": 0, "c": 0},
            1,
        ),
    ],
)
def test_tally_follows_element(
    poll: Poll, votes: list[Vote], end_ts: int | None, counts: dict[str, int], voters: int
) -> None:
    results = tally(poll, votes, end_ts)
    assert dict(results.counts) == counts
    assert results.voters == voters
    assert tally(poll, list(reversed(votes)), end_ts) == results


def start(block: dict[str, Any], key: str = "org.matrix.msc3381.poll.start") -> dict[str, Any]:
    return {key: block, "org.matrix.msc1767.text": "q"}


def test_start_both_namespaces_kinds_and_limits() -> None:
    answers = [{"id": f"x{i}", "org.matrix.msc1767.text": f"t{i}"} for i in range(25)]
    poll = parse_start(
        "org.matrix.msc3381.poll.start",
        start(
            {
                "question": {"org.matrix.msc1767.text": "Q?"},
                "kind": "org.matrix.msc3381.poll.disclosed",
                "max_selections": 0,
                "answers": answers,
            }
        ),
    )
    assert poll is not None
    assert len(poll.answers) == 20
    assert (poll.max_selections, poll.disclosed, poll.question, poll.texts[0]) == (
        1,
        True,
        "Q?",
        "t0",
    )
    stable = parse_start(
        "m.poll.start",
        {
            "m.poll": {
                "kind": "m.disclosed",
                "max_selections": 2,
                "question": {"m.text": [{"body": "Q2"}]},
                "answers": [{"m.id": "p", "m.text": [{"body": "P"}]}, {"m.id": "q"}],
            }
        },
    )
    assert stable is not None
    assert (stable.answers, stable.max_selections, stable.disclosed, stable.question) == (
        ("p", "q"),
        2,
        True,
        "Q2",
    )
    odd = parse_start(
        "m.poll.start",
        {"m.poll": {"kind": "x.custom", "answers": [{"m.id": "p"}], "max_selections": True}},
    )
    assert odd is not None
    assert (odd.disclosed, odd.max_selections) == (False, 1)  # unknown kind: undisclosed


def test_responses_in_both_namespaces() -> None:
    unstable = {"m.relates_to": REL, "org.matrix.msc3381.poll.response": {"answers": ["a"]}}
    assert parse_response("org.matrix.msc3381.poll.response", unstable) == ("a",)
    assert parse_response("m.poll.response", {"m.relates_to": REL, "m.selections": ["b"]}) == ("b",)
    # not a reference, or not a response: not a vote at all
    assert parse_response("m.poll.response", {"m.selections": ["b"]}) is None
    assert parse_response("m.room.message", unstable) is None
    # unreadable answers: a spoiled vote (it still replaces the earlier one)
    bad = {"m.relates_to": REL, "org.matrix.msc3381.poll.response": {"answers": [1, "a"]}}
    assert parse_response("org.matrix.msc3381.poll.response", bad) == ()


def test_first_valid_end_counts() -> None:
    ends = [
        End(UserId("@troll"), EventId("$1"), 1),
        End(UserId("@bot"), EventId("$3"), 5),
        End(UserId("@mod"), EventId("$2"), 4),
    ]
    allowed = {"@bot", "@mod"}
    end = first_end(ends, lambda u: u in allowed)
    assert end is not None
    assert end.event_id == "$2"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=40), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.sampled_from(
        [
            "m.poll.start",
            "org.matrix.msc3381.poll.start",
            "m.poll.response",
            "org.matrix.msc3381.poll.response",
        ]
    ),
    json_values,
)
def test_hostile_content_never_raises(event_type: str, content: Any) -> None:
    parse_start(event_type, content)
    answers = parse_response(event_type, content)
    if answers is not None:
        tally(ABC, [Vote(UserId("@x"), EventId("$e"), 0, answers)])


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["@x", "@y"]),
            st.integers(0, 5),
            st.lists(st.sampled_from(["a", "b", "c", "z"]), max_size=3),
        )
    )
)
def test_counts_never_exceed_voters(raw: list[tuple[str, int, list[str]]]) -> None:
    votes = [Vote(UserId(s), EventId(f"${i}"), ts, tuple(a)) for i, (s, ts, a) in enumerate(raw)]
    results = tally(ABC, votes)
    assert results.voters <= 2
    assert sum(results.counts.values()) == results.voters  # max_selections 1


async def test_store_keeps_latest_vote_and_prunes_after_end(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "p.db")
    await PollStore.migrate(db)
    store = PollStore(db, "bot")
    poll_id = EventId("$poll")
    await store.add(RoomId("!r"), poll_id, ABC, now=1000)
    assert await store.put_vote(poll_id, vote("@x", 2, "b"))
    assert not await store.put_vote(poll_id, vote("@x", 1, "a"))  # older
    assert not await store.put_vote(poll_id, vote("@x", 2, "b"))  # the same again
    assert [v.answers for v in await store.votes(poll_id)] == [("b",)]
    results = tally(ABC, await store.votes(poll_id), 10)
    await store.replace_votes(poll_id, await store.votes(poll_id), 10, results, now=2000)
    stored = await store.find(poll_id)
    assert stored is not None
    assert stored.end_ts == 10
    assert stored.final == results
    assert await store.prune(2000 + VOTES_KEEP_AFTER_END_S - 1) == 0
    assert await store.prune(2000 + VOTES_KEEP_AFTER_END_S + 1) == 1
    assert await store.votes(poll_id) == []
    again = await store.find(poll_id)
    assert again is not None
    assert again.final == results  # the final counts outlive the votes
    await db.close()


async def test_with_a_sealer_a_persons_answer_is_not_in_the_database_file(tmp_path: Path) -> None:
    """A mood poll's answer is the mood: sealed at rest; a vote stored before sealing (plain
    JSON) still reads."""
    db = await Database.open(tmp_path / "p.db")
    await PollStore.migrate(db)
    plain = PollStore(db, "bot")
    sealed = PollStore(db, "bot", Sealer(Fernet.generate_key()))
    poll_id = EventId("$poll")
    await sealed.add(RoomId("!r"), poll_id, ABC, now=1000)
    await plain.put_vote(poll_id, vote("@old", 1, "a"))  # from before sealing
    await sealed.put_vote(poll_id, vote("@new", 2, "answer-c-secret"))
    votes = {v.sender: v.answers for v in await sealed.votes(poll_id)}
    assert votes == {"@old": ("a",), "@new": ("answer-c-secret",)}
    await db.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("p.db"))
    assert b"answer-c-secret" not in raw
