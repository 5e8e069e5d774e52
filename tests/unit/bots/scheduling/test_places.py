"""Places at an offline session with a capacity: first come, first served; a waitlist that moves."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clubs.bots.scheduling.places import (
    CONFIRMED,
    GOING,
    MAYBE,
    NOT_GOING,
    WAITLISTED,
    Ballot,
    allocate,
    changes,
    waitlist_position,
)
from clubs.core.ids import UserId

PEOPLE = [UserId(f"@p{i}:hs.test") for i in range(6)]


def going(i: int, ts: int, answer: str = GOING) -> Ballot:
    return Ballot(PEOPLE[i], f"$v{i}-{ts}", ts, answer)


def test_capacity_three_with_five_going_confirms_the_first_three_and_waitlists_two() -> None:
    after = allocate([going(i, 100 + i) for i in range(5)], 3, {})
    assert {u: s for u, (s, _) in after.items()} == {
        PEOPLE[0]: CONFIRMED,
        PEOPLE[1]: CONFIRMED,
        PEOPLE[2]: CONFIRMED,
        PEOPLE[3]: WAITLISTED,
        PEOPLE[4]: WAITLISTED,
    }
    change = changes({}, after)
    assert change.confirmed == PEOPLE[:3]
    assert change.promoted == []
    assert change.waitlisted == PEOPLE[3:5]
    assert [waitlist_position(after, p) for p in PEOPLE[:5]] == [0, 0, 0, 1, 2]


def test_a_cancellation_promotes_the_first_waiting_once() -> None:
    first = allocate([going(i, 100 + i) for i in range(5)], 3, {})
    votes = [going(i, 100 + i) for i in range(5)]
    votes[1] = going(1, 200, NOT_GOING)
    second = allocate(votes, 3, first)
    change = changes(first, second)
    assert change.confirmed == [PEOPLE[3]]
    assert change.promoted == [PEOPLE[3]]
    assert change.waitlisted == []
    assert PEOPLE[1] not in second
    # The same ballots again (a replayed vote): nothing changes, nobody is told twice.
    assert changes(second, allocate(votes, 3, second)) == changes(second, second)
    assert changes(second, second).confirmed == []


def test_saying_going_again_keeps_the_place() -> None:
    first = allocate([going(i, 100 + i) for i in range(4)], 2, {})
    votes = [going(0, 500), going(1, 101), going(2, 102), going(3, 103)]  # p0 votes again
    second = allocate(votes, 2, first)
    assert second[PEOPLE[0]][0] == CONFIRMED
    assert changes(first, second).confirmed == []


def test_maybe_and_not_going_hold_no_place_and_no_capacity_confirms_everyone_going() -> None:
    votes = [going(0, 1), going(1, 2, MAYBE), going(2, 3, NOT_GOING), going(3, 4)]
    after = allocate(votes, None, {})
    assert set(after) == {PEOPLE[0], PEOPLE[3]}
    assert all(status == CONFIRMED for status, _ in after.values())


@given(
    st.lists(
        st.tuples(
            st.integers(0, 5), st.integers(0, 10**6), st.sampled_from([GOING, MAYBE, NOT_GOING])
        )
    ),
    st.integers(1, 4),
)
def test_never_more_confirmed_than_places_and_confirmed_rank_before_waiting(
    raw: list[tuple[int, int, str]], capacity: int
) -> None:
    latest: dict[int, Ballot] = {}
    for who, ts, answer in raw:
        latest[who] = Ballot(PEOPLE[who], f"$e{who}-{ts}", ts, answer)
    after = allocate(latest.values(), capacity, {})
    confirmed = sorted(k for s, k in after.values() if s == CONFIRMED)
    waiting = sorted(k for s, k in after.values() if s == WAITLISTED)
    assert len(confirmed) <= capacity
    assert not waiting or len(confirmed) == capacity
    assert not waiting or confirmed[-1] < waiting[0]
    assert set(after) == {b.user for b in latest.values() if b.answer == GOING}
