"""Who is paired with whom: the longest waiting first, not the previous partner again while
someone else waits."""

from __future__ import annotations

from clubs.bots.checkins.buddies import Waiting, pick_partner

ME = Waiting("@me", 50.0, "@old")


def test_nobody_else_waiting_means_no_partner() -> None:
    assert pick_partner(ME, [ME]) is None
    assert pick_partner(ME, []) is None


def test_the_one_waiting_longest() -> None:
    a, b = Waiting("@a", 10.0, None), Waiting("@b", 5.0, None)
    assert pick_partner(ME, [ME, a, b]) == b


def test_not_the_previous_partner_while_someone_else_waits() -> None:
    old, other = Waiting("@old", 1.0, "@me"), Waiting("@c", 30.0, None)
    assert pick_partner(ME, [old, ME, other]) == other
    assert pick_partner(ME, [old, ME]) == old
