"""A running session as plain data, and the rules that change it (no I/O, no clock).

Everything here is pure: the bot loads a `Session`, applies one change with the time it read
from its clock, and stores it again. Limits keep a hostile room from growing the state without
bound; a change that would pass one raises `Refused` and leaves the session as it was.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_ITEMS = 50
MAX_TITLE_CHARS = 200
MAX_ITEM_S = 4 * 3600
MAX_QUEUE = 100
MAX_NOTES = 300
MAX_NOTE_CHARS = 1000
MAX_ROUND = 100
MAX_APPLIED = 64
MAX_PENDING = 50
SPEAKER_LIMIT_S = 180
"""A speaker's time before the one gentle notice."""

TAGS = {
    "#info": "info",
    "#инфо": "info",
    "#idea": "idea",
    "#идея": "idea",
    "#action": "action",
    "#действие": "action",
    "#agreed": "agreed",
    "#решено": "agreed",
    "#later": "later",
    "#потом": "later",
}
"""A line's first word → the note's kind; every other line is never kept."""
KINDS = ("info", "idea", "action", "agreed", "later")


class Refused(Exception):
    """A change the session does not take; `reason` names the template that says why."""

    def __init__(self, reason: str, **values: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.values = values


@dataclass
class Item:
    title: str
    duration_s: int
    method: str | None = None
    """A methods library exercise: its text is shown when the item starts."""
    case: int | None = None
    """A case of the club's case library: shown when the item starts."""


@dataclass
class Entry:
    user: str
    direct: bool = False


@dataclass
class Note:
    kind: str
    text: str


@dataclass
class Pending:
    """An anonymous question waiting for a chair's approval: a number and its words only."""

    number: int
    text: str


@dataclass
class Round:
    order: list[str]
    pos: int
    per_person_s: int
    turn_started: float
    noticed: bool = False
    passed: list[str] = field(default_factory=list)

    @property
    def current(self) -> str | None:
        return self.order[self.pos] if self.pos < len(self.order) else None


AUTO_END_GRACE_S = 3600
NO_AGENDA_END_S = 6 * 3600
MAX_GROUPS = 10
MAX_SUMMARY_CHARS = 300


@dataclass
class Group:
    """One breakout group: its members, where it talks, and its one-line summary."""

    members: list[str]
    marker: str
    """An opaque random token: names the group's txn ids and its room's marker state."""
    root: str | None = None
    """Threads: the event id of the group's thread root in the sessions room."""
    room: str | None = None
    """Rooms: the temporary room's id once created."""
    tried: bool = False
    """Rooms: a `createRoom` was sent (a retry looks for the room by its marker first)."""
    summary: str | None = None


@dataclass
class Breakout:
    key: str
    """The event id of the `!breakout` command."""
    rooms: bool
    groups: list[Group]

    def group_of(self, user: str) -> int | None:
        return next((i for i, g in enumerate(self.groups) if user in g.members), None)


def split_groups(people: Iterable[str], count: int, seed: str) -> list[list[str]]:
    """`people` dealt into `count` groups of sizes differing by at most one, in an order
    shuffled by `seed` (the command's event id: a replay gives the same groups)."""
    order = sorted(set(people))
    if not 2 <= count <= MAX_GROUPS or count > len(order):
        raise Refused("facilitation/breakout_usage")
    random.Random(seed).shuffle(order)  # noqa: S311 - who talks with whom, not a secret
    return [sorted(order[i::count]) for i in range(count)]


@dataclass
class Session:
    sid: str
    """The event id of the `!start` command: names the session in job keys and txn ids."""
    title: str
    started_at: float
    starter: str
    cochairs: list[str] = field(default_factory=list)
    agenda: list[Item] = field(default_factory=list)
    current: int = -1
    item_started: float = 0.0
    extra_s: int = 0
    warned: bool = False
    queue: list[Entry] = field(default_factory=list)
    speaker: str | None = None
    speaker_since: float = 0.0
    speaker_noticed: bool = False
    round: Round | None = None
    notes: list[Note] = field(default_factory=list)
    status_event: str | None = None
    status_job: list[str] = field(default_factory=list)
    """The txn parts the status message was first sent with (to find it again after a wait)."""
    status_text: str = ""
    status_seq: int = 0
    approve: bool = False
    """Anonymous questions wait for a chair's `!approve` before they are posted."""
    pending: list[Pending] = field(default_factory=list)
    outgoing: list[str] = field(default_factory=list)
    """Anonymous questions the next tick posts (their words only)."""
    next_question: int = 1
    asked: list[str] = field(default_factory=list)
    """The anonymous questions posted so far (their words only): the upvote poll's answers."""
    breakout: Breakout | None = None
    series: str | None = None
    """The scheduled series this session is an occurrence of (its parking lot is the series')."""
    call: str | None = None
    """The scheduled occurrence's call link, if it has one (given to breakout rooms)."""
    applied: list[str] = field(default_factory=list)
    """The latest command events already applied (a replay after a crash does not repeat)."""

    # --- serialisation ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Session:
        data = dict(data)
        data["agenda"] = [Item(**i) for i in data.get("agenda", [])]
        data["queue"] = [Entry(**e) for e in data.get("queue", [])]
        data["notes"] = [Note(**n) for n in data.get("notes", [])]
        data["pending"] = [Pending(**p) for p in data.get("pending", [])]
        rnd = data.get("round")
        data["round"] = Round(**rnd) if rnd else None
        out = data.get("breakout")
        data["breakout"] = (
            Breakout(out["key"], out["rooms"], [Group(**g) for g in out["groups"]]) if out else None
        )
        return cls(**data)

    def mark_applied(self, event_id: str) -> None:
        self.applied = [*self.applied, event_id][-MAX_APPLIED:]

    # --- chairs ----------------------------------------------------------------------------

    def add_cochair(self, user: str) -> None:
        if user not in self.cochairs:
            if len(self.cochairs) >= 20:
                raise Refused("facilitation/too_many")
            self.cochairs.append(user)

    # --- agenda ----------------------------------------------------------------------------

    @property
    def item(self) -> Item | None:
        return self.agenda[self.current] if 0 <= self.current < len(self.agenda) else None

    def add_item(
        self,
        title: str,
        duration_s: int,
        now: float,
        *,
        method: str | None = None,
        case: int | None = None,
    ) -> int:
        title = " ".join(title.split())
        if not title or len(title) > MAX_TITLE_CHARS:
            raise Refused("facilitation/agenda_usage")
        if not 60 <= duration_s <= MAX_ITEM_S:
            raise Refused("facilitation/agenda_usage")
        if len(self.agenda) >= MAX_ITEMS:
            raise Refused("facilitation/too_many")
        self.agenda.append(Item(title, duration_s, method, case))
        if self.current < 0:
            self.start_item(len(self.agenda) - 1, now)
        return len(self.agenda)

    def start_item(self, index: int, now: float) -> None:
        self.current = index
        self.item_started = now
        self.extra_s = 0
        self.warned = False

    def next_item(self, now: float) -> Item | None:
        """Move to the next item; past the last one, no item is current."""
        if self.current + 1 < len(self.agenda):
            self.start_item(self.current + 1, now)
        else:
            self.current = len(self.agenda)
        return self.item

    def move_item(self, frm: int, to: int) -> None:
        """Move item `frm` (1-based) to place `to`; only items not yet started move."""
        first = self.current + 1 if self.current >= 0 else 0
        if not (first < frm <= len(self.agenda) and first < to <= len(self.agenda)):
            raise Refused("facilitation/agenda_usage")
        item = self.agenda.pop(frm - 1)
        self.agenda.insert(to - 1, item)

    def remove_item(self, index: int) -> None:
        if not (self.current + 1 < index <= len(self.agenda)):
            raise Refused("facilitation/agenda_usage")
        del self.agenda[index - 1]

    def extend(self, seconds: int) -> None:
        if self.item is None or not 60 <= seconds <= MAX_ITEM_S:
            raise Refused("facilitation/extend_usage")
        self.extra_s = min(self.extra_s + seconds, MAX_ITEM_S)
        self.warned = False

    def time_left(self, now: float) -> int | None:
        item = self.item
        if item is None:
            return None
        return int(item.duration_s + self.extra_s - (now - self.item_started))

    def overrun_due(self, now: float) -> bool:
        """Whether the current item ran out and nobody was warned yet (then it marks it)."""
        left = self.time_left(now)
        if left is None or left > 0 or self.warned:
            return False
        self.warned = True
        return True

    # --- speaking queue (as W3C's Zakim keeps it) ------------------------------------------

    def raise_hand(self, user: str, *, direct: bool = False) -> int:
        """Queue `user`; a direct response goes after the other direct responses and before
        everyone else. Raising again changes nothing (or turns the entry into a direct
        response). Returns the place in the queue (1-based)."""
        for i, entry in enumerate(self.queue):
            if entry.user == user:
                if not direct or entry.direct:
                    return i + 1
                del self.queue[i]
                break
        else:
            if len(self.queue) >= MAX_QUEUE:
                raise Refused("facilitation/too_many")
        entry = Entry(user, direct)
        if direct:
            at = next((i for i, e in enumerate(self.queue) if not e.direct), len(self.queue))
            self.queue.insert(at, entry)
            return at + 1
        self.queue.append(entry)
        return len(self.queue)

    def lower_hand(self, user: str) -> bool:
        before = len(self.queue)
        self.queue = [e for e in self.queue if e.user != user]
        return len(self.queue) != before

    def next_speaker(self, now: float) -> str | None:
        """The first in the queue gets the floor (none if the queue is empty)."""
        if self.queue:
            self.speaker = self.queue.pop(0).user
            self.speaker_since = now
        else:
            self.speaker = None
        self.speaker_noticed = False
        return self.speaker

    def speaker_over(self, now: float) -> bool:
        """Whether the speaker's time ran out and the notice was not given yet (marks it)."""
        if self.speaker is None or self.speaker_noticed:
            return False
        if now - self.speaker_since < SPEAKER_LIMIT_S:
            return False
        self.speaker_noticed = True
        return True

    # --- rounds ----------------------------------------------------------------------------

    def start_round(
        self, people: Iterable[str], *, shuffle: bool, seed: str, per_person_s: int, now: float
    ) -> list[str]:
        order = sorted(set(people))[:MAX_ROUND]
        if not order:
            raise Refused("facilitation/round_usage")
        if shuffle:
            random.Random(seed).shuffle(order)  # noqa: S311 - an order of turns, not a secret
        self.round = Round(order, 0, per_person_s, now)
        return order

    def pass_turn(self, user: str, now: float) -> bool:
        """`user` passes: their turn now ends, or a later turn is skipped."""
        rnd = self.round
        if rnd is None or user not in rnd.order[rnd.pos :]:
            return False
        if user not in rnd.passed:
            rnd.passed.append(user)
        if rnd.current == user:
            self.next_turn(now)
        else:
            rnd.order.remove(user)
        return True

    def next_turn(self, now: float) -> str | None:
        """The round's next person; None (and the round is over) after the last."""
        rnd = self.round
        if rnd is None:
            return None
        rnd.pos += 1
        rnd.turn_started = now
        rnd.noticed = False
        if rnd.current is None:
            self.round = None
            return None
        return rnd.current

    def turn_over(self, now: float) -> bool:
        rnd = self.round
        if rnd is None or rnd.current is None or rnd.noticed or rnd.per_person_s <= 0:
            return False
        if now - rnd.turn_started < rnd.per_person_s:
            return False
        rnd.noticed = True
        return True

    # --- anonymous questions waiting for approval -----------------------------------------

    def queue_question(self, text: str) -> None:
        if len(self.outgoing) >= MAX_PENDING:
            raise Refused("facilitation/too_many")
        self.outgoing.append(text)

    def hold_question(self, text: str) -> int:
        if len(self.pending) >= MAX_PENDING:
            raise Refused("facilitation/too_many")
        number = self.next_question
        self.next_question += 1
        self.pending.append(Pending(number, text))
        return number

    def record_asked(self, text: str) -> None:
        self.asked = [*self.asked, text][-MAX_PENDING:]

    def take_question(self, number: int) -> str | None:
        """The waiting question `number`, no longer waiting (None if there is none)."""
        for i, pending in enumerate(self.pending):
            if pending.number == number:
                del self.pending[i]
                return pending.text
        return None

    def auto_end_at(self) -> float:
        """When a session nobody ended ends by itself: an hour after its agenda's time (with
        the current item's extensions), or six hours after the start without an agenda."""
        if not self.agenda:
            return self.started_at + NO_AGENDA_END_S
        total = sum(i.duration_s for i in self.agenda) + self.extra_s
        return self.started_at + total + AUTO_END_GRACE_S

    # --- breakout groups -----------------------------------------------------------------

    def summarise(self, user: str, text: str) -> int:
        """The one-line summary of `user`'s group (the latest one counts); returns the group's
        index."""
        out = self.breakout
        index = out.group_of(user) if out is not None else None
        text = " ".join(text.split())
        if out is None or index is None:
            raise Refused("facilitation/breakout_none")
        if not text or len(text) > MAX_SUMMARY_CHARS:
            raise Refused("facilitation/summary_usage")
        out.groups[index].summary = text
        return index

    # --- notes -----------------------------------------------------------------------------

    def take_notes(self, body: str) -> int:
        """Keep the tagged lines of a message; returns how many were kept."""
        kept = 0
        for note in tagged_lines(body):
            if len(self.notes) >= MAX_NOTES:
                raise Refused("facilitation/too_many")
            self.notes.append(note)
            kept += 1
        return kept


_TAG_RE = re.compile(r"^\s*(#\w+)[:\s]?\s*(.*)$", re.UNICODE)


def tagged_lines(body: str) -> list[Note]:
    """The notes in a message: each line that starts with a known tag, without the tag."""
    notes = []
    for line in body.splitlines():
        match = _TAG_RE.match(line)
        if match is None:
            continue
        kind = TAGS.get(match.group(1).lower())
        text = " ".join(match.group(2).split())[:MAX_NOTE_CHARS]
        if kind is not None and text:
            notes.append(Note(kind, text))
    return notes


def minutes_sections(notes: list[Note]) -> dict[str, list[str]]:
    """The notes grouped by kind, in the order they were taken: the minutes' content. Only
    the words of tagged lines appear, never who wrote them."""
    sections: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for note in notes:
        sections[note.kind].append(note.text)
    return sections


@dataclass(frozen=True)
class QuickPoll:
    question: str
    answers: tuple[str, ...]
    disclosed: bool
    multiple: bool
    seconds: int


POLL_OPEN = {"open", "открытый"}
POLL_MULTI = {"multi", "несколько"}
MAX_POLL_ANSWERS = 20
MAX_POLL_TEXT = 300


def parse_poll(spec: str, duration: Callable[[str], int | None]) -> QuickPoll:
    """`[open] [multi] [5m] Question? | answer | answer …` (2–20 answers; 1–60 minutes,
    5 by default; undisclosed unless `open`)."""
    head, bar, rest = spec.partition("|")
    if not bar:
        raise Refused("facilitation/poll_usage")
    words = head.split()
    disclosed = multiple = False
    seconds = 300
    while words:
        word = words[0].lower()
        if word in POLL_OPEN:
            disclosed = True
        elif word in POLL_MULTI:
            multiple = True
        elif (value := duration(word)) is not None:
            seconds = value
        else:
            break
        words.pop(0)
    question = " ".join(words)
    answers = tuple(" ".join(a.split()) for a in rest.split("|"))
    if (
        not question
        or len(question) > MAX_POLL_TEXT
        or not 2 <= len(answers) <= MAX_POLL_ANSWERS
        or any(not a or len(a) > MAX_POLL_TEXT for a in answers)
        or len(set(answers)) != len(answers)
        or not 60 <= seconds <= 3600
    ):
        raise Refused("facilitation/poll_usage")
    return QuickPoll(question, answers, disclosed, multiple, seconds)
