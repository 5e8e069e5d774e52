"""Who holds a place at a session with a capacity: pure, from the RSVP poll's ballots.

Places go to people answering "going" in the order they first said so; the rest wait in that
order and move up when someone ahead of them changes their answer (Meetup's waitlist). A person
who answers "going" again keeps their place: their rank is the moment they entered the list,
kept in `since` until they leave it. Without a capacity everyone going is confirmed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from clubs.core.ids import UserId

GOING, MAYBE, NOT_GOING = "a1", "a2", "a3"
"""The RSVP poll's answer ids, in the order the poll offers them."""
CONFIRMED, WAITLISTED = "confirmed", "waitlisted"

Places = Mapping[UserId, tuple[str, str]]
"""user → (status, rank key): the rank key orders entries, oldest first."""


@dataclass(frozen=True)
class Ballot:
    """A person's vote that counts now in the RSVP poll."""

    user: UserId
    event_id: str
    ts: int
    answer: str


def rank_key(ts: int, event_id: str) -> str:
    """Sortable as text: the vote's server time, then its id (ties broken as the poll does)."""
    return f"{max(ts, 0):015d}:{event_id}"


def allocate(
    ballots: Iterable[Ballot], capacity: int | None, before: Places
) -> dict[UserId, tuple[str, str]]:
    """The places after these ballots, given the places before them."""
    going = []
    for b in ballots:
        if b.answer != GOING:
            continue
        previous = before.get(b.user)
        going.append((previous[1] if previous else rank_key(b.ts, b.event_id), b.user))
    going.sort()
    places: dict[UserId, tuple[str, str]] = {}
    for i, (key, user) in enumerate(going):
        confirmed = capacity is None or i < capacity
        places[user] = (CONFIRMED if confirmed else WAITLISTED, key)
    return places


@dataclass(frozen=True)
class Changes:
    confirmed: list[UserId]
    """Got a place with this change (first answer, or promoted from the waitlist)."""
    promoted: list[UserId]
    """Of those, who were waiting before."""
    waitlisted: list[UserId]
    """Entered the waitlist with this change."""


def changes(before: Places, after: Places) -> Changes:
    confirmed, promoted, waitlisted = [], [], []
    for user, (status, _) in sorted(after.items(), key=lambda item: item[1][1]):
        was = before.get(user, ("", ""))[0]
        if status == CONFIRMED and was != CONFIRMED:
            confirmed.append(user)
            if was == WAITLISTED:
                promoted.append(user)
        elif status == WAITLISTED and was != WAITLISTED:
            waitlisted.append(user)
    return Changes(confirmed, promoted, waitlisted)


def waitlist_position(places: Places, user: UserId) -> int:
    """1 for the first person waiting; 0 for someone not waiting."""
    waiting = sorted(key for status, key in places.values() if status == WAITLISTED)
    mine = places.get(user)
    if mine is None or mine[0] != WAITLISTED:
        return 0
    return waiting.index(mine[1]) + 1
