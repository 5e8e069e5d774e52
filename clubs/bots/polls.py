"""Polls (MSC3381) as Element counts them: parsing and tallying, no I/O.

Element (matrix-js-sdk) sends the unstable event types (`org.matrix.msc3381.poll.start`,
`….poll.response`, `….poll.end`); the stable forms (`m.poll.start` with an `m.poll` block,
`m.poll.response` with `m.selections`, `m.poll.end`) are read as well. Counting follows the
MSC and Element:

- a poll has at most 20 answers (the rest are dropped); `max_selections` that is not a
  positive integer counts as 1; an unknown `kind` counts as undisclosed;
- only each person's latest response counts (by `origin_server_ts`, then event id, so that a
  tie is decided the same way everywhere), even when that response is invalid;
- a response naming any answer the poll does not have is spoiled (no selection); otherwise it
  is cut to `max_selections` and an answer repeated after the cut counts once; an empty list
  takes the vote back;
- a poll ends with the first end (by `origin_server_ts`) from its creator or from someone who
  may redact other people's events; ends from anyone else are ignored;
- responses stamped after the end do not count, even if they arrived before the end did.

Nothing here raises on hostile input: what cannot be read is `None` or a spoiled vote.

Bots get told about changes to the polls they started with `@on_poll`:

```python
class Scheduler(Bot):
    @on_poll
    async def rsvp_changed(self, ctx: BotContext, update: PollUpdate) -> None:
        ...
```
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from clubs.core.ids import EventId, RoomId, UserId

if TYPE_CHECKING:
    from clubs.bots.context import BotContext

POLL_START = "org.matrix.msc3381.poll.start"
POLL_RESPONSE = "org.matrix.msc3381.poll.response"
POLL_END = "org.matrix.msc3381.poll.end"
STABLE_START = "m.poll.start"
STABLE_RESPONSE = "m.poll.response"
STABLE_END = "m.poll.end"
START_TYPES = frozenset({POLL_START, STABLE_START})
RESPONSE_TYPES = frozenset({POLL_RESPONSE, STABLE_RESPONSE})
END_TYPES = frozenset({POLL_END, STABLE_END})
TEXT = "org.matrix.msc1767.text"
DISCLOSED = "org.matrix.msc3381.poll.disclosed"
UNDISCLOSED = "org.matrix.msc3381.poll.undisclosed"
DISCLOSED_KINDS = frozenset({DISCLOSED, "m.disclosed", "m.poll.disclosed"})
REFERENCE = "m.reference"
MAX_ANSWERS = 20
MAX_ID_CHARS = 255
"""Answer ids longer than this are not stored (Element's are 16 characters)."""


@dataclass(frozen=True)
class Poll:
    """What counting needs from a poll start: its answer ids, in order, and the rules."""

    answers: tuple[str, ...]
    max_selections: int = 1
    disclosed: bool = False
    question: str = ""
    texts: tuple[str, ...] = ()
    """The answers' texts, by position (empty when only the ids are known)."""

    def __repr__(self) -> str:  # the question and answers never reach a log through a repr
        return f"Poll(answers={len(self.answers)}, max_selections={self.max_selections})"


@dataclass(frozen=True)
class Vote:
    """One response: who, when, which event, and the answer ids it names (as sent, but only
    strings; `()` for a response that cannot be read, which still replaces an earlier vote)."""

    sender: UserId
    event_id: EventId
    ts: int
    answers: tuple[str, ...]

    def newer_than(self, other: Vote) -> bool:
        return (self.ts, self.event_id) > (other.ts, other.event_id)


@dataclass(frozen=True)
class End:
    sender: UserId
    event_id: EventId
    ts: int


@dataclass(frozen=True)
class Results:
    counts: Mapping[str, int]
    """Votes per answer id, in the poll's order (every answer present, zero included)."""
    voters: int
    """People whose current vote selects at least one answer."""
    end_ts: int | None = None
    """When the poll ended (the first valid end's `origin_server_ts`), None while open."""

    @property
    def ended(self) -> bool:
        return self.end_ts is not None

    def top(self) -> list[str]:
        """The answer ids with the most votes (none when nobody voted)."""
        best = max(self.counts.values(), default=0)
        return [a for a, n in self.counts.items() if n == best] if best > 0 else []


@dataclass(frozen=True)
class PollUpdate:
    """What `@on_poll` handlers get when a poll this bot started changes."""

    room_id: RoomId
    poll_id: EventId
    counts: Mapping[str, int]
    """Votes per answer id (`a1`, `a2`, … for polls sent with `BotContext.poll`)."""
    voters: int
    ended: bool
    disclosed: bool
    """Undisclosed: members expect no totals before the end (anyone's client can count, though)."""
    undecryptable: int | None = None
    """Relations of the poll this bot could not decrypt (votes it may be missing), if known."""
    cause: EventId | None = None
    """The response or end that changed the tally (to derive idempotent job ids from)."""


# --- parsing --------------------------------------------------------------------------------------


def relation_target(content: Any) -> EventId | None:
    """The event a reference relation points at (`m.relates_to`), else None."""
    if not isinstance(content, Mapping):
        return None
    rel = content.get("m.relates_to")
    if not isinstance(rel, Mapping) or rel.get("rel_type") != REFERENCE:
        return None
    target = rel.get("event_id")
    return EventId(target) if isinstance(target, str) and target.startswith("$") else None


def text_of(block: Any) -> str:
    """The plain text of an extensible-events text block: `org.matrix.msc1767.text` (a string),
    `m.text` (a string or `[{body, mimetype}]`), `org.matrix.msc1767.message`, or `body`."""
    if not isinstance(block, Mapping):
        return ""
    for key in (TEXT, "m.text", "org.matrix.msc1767.message", "m.message", "body"):
        value = block.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            for item in value:
                if (
                    isinstance(item, Mapping)
                    and isinstance(item.get("body"), str)
                    and item.get("mimetype", "text/plain") == "text/plain"
                ):
                    return str(item["body"])
    return ""


def parse_start(event_type: str, content: Any) -> Poll | None:
    """A poll start in either namespace; None when it is not one (no answers, wrong shapes)."""
    if event_type not in START_TYPES or not isinstance(content, Mapping):
        return None
    block = next((content[k] for k in (POLL_START, STABLE_START, "m.poll") if k in content), None)
    if not isinstance(block, Mapping):
        return None
    raw_answers = block.get("answers")
    if not isinstance(raw_answers, list):
        return None
    ids: list[str] = []
    texts: list[str] = []
    for answer in raw_answers[:MAX_ANSWERS]:
        if not isinstance(answer, Mapping):
            continue
        answer_id = answer.get("id", answer.get("m.id"))
        if not isinstance(answer_id, str) or not answer_id or len(answer_id) > MAX_ID_CHARS:
            continue
        if answer_id in ids:
            continue
        ids.append(answer_id)
        texts.append(text_of(answer))
    if not ids:
        return None
    raw_max = block.get("max_selections", 1)
    max_selections = raw_max if type(raw_max) is int and raw_max > 0 else 1
    return Poll(
        answers=tuple(ids),
        max_selections=min(max_selections, len(ids)),
        disclosed=block.get("kind") in DISCLOSED_KINDS,
        question=text_of(block.get("question")),
        texts=tuple(texts),
    )


def parse_response(event_type: str, content: Any) -> tuple[str, ...] | None:
    """The answer ids a response names, as sent (strings only); `()` for a response whose
    answers cannot be read (it still counts as the sender's latest vote: a spoiled one); None
    when the event is not a poll response at all."""
    if event_type not in RESPONSE_TYPES or relation_target(content) is None:
        return None
    for key in (POLL_RESPONSE, STABLE_RESPONSE):
        block = content.get(key)
        if isinstance(block, Mapping):
            return _strings(block.get("answers"))
    if "m.selections" in content:
        return _strings(content.get("m.selections"))
    return ()


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return ()  # Element spoils a list with anything but strings in it
    return tuple(value)


def is_end(event_type: str, content: Any) -> bool:
    return event_type in END_TYPES and relation_target(content) is not None


# --- counting -------------------------------------------------------------------------------------


def selection(poll: Poll, answers: Sequence[str]) -> tuple[str, ...]:
    """What a response selects: nothing if it names an unknown answer (spoiled); otherwise the
    first `max_selections` ids, each counted once."""
    known = set(poll.answers)
    if any(a not in known for a in answers):
        return ()
    return tuple(dict.fromkeys(answers[: poll.max_selections]))


def first_end(ends: Iterable[End], may_end: Callable[[UserId], bool]) -> End | None:
    """The end that closes the poll: the earliest from someone allowed to end it."""
    valid = [e for e in ends if may_end(e.sender)]
    return min(valid, key=lambda e: (e.ts, e.event_id), default=None)


def latest_votes(votes: Iterable[Vote], end_ts: int | None = None) -> dict[UserId, Vote]:
    """Each sender's latest vote stamped no later than the end (if the poll ended)."""
    latest: dict[UserId, Vote] = {}
    for vote in votes:
        if end_ts is not None and vote.ts > end_ts:
            continue
        current = latest.get(vote.sender)
        if current is None or vote.newer_than(current):
            latest[vote.sender] = vote
    return latest


def tally(poll: Poll, votes: Iterable[Vote], end_ts: int | None = None) -> Results:
    """Element's result of a poll from all its responses (any order, duplicates harmless)."""
    counts = dict.fromkeys(poll.answers, 0)
    voters = 0
    for vote in latest_votes(votes, end_ts).values():
        chosen = selection(poll, vote.answers)
        if chosen:
            voters += 1
        for answer in chosen:
            counts[answer] += 1
    return Results(counts, voters, end_ts)


# --- @on_poll -------------------------------------------------------------------------------------

PollHandler = Callable[["BotContext", PollUpdate], Awaitable[None]]
P = TypeVar("P", bound=Callable[..., Awaitable[None]])
_MARK = "__clubs_on_poll__"


def on_poll(handler: P) -> P:
    """Mark a method `async def handler(self, ctx: BotContext, update: PollUpdate) -> None`,
    called when a response or an end changes the tally of a poll this bot started (and again
    for the same event after a crash: be idempotent by `update.cause`)."""
    setattr(handler, _MARK, True)
    return handler


def collect_poll_handlers(bot: object) -> list[PollHandler]:
    """The `@on_poll` methods of `bot` and of the handler objects it registered."""
    from clubs.bots.base import handler_objects

    return [
        member
        for owner in handler_objects(bot)
        for _, member in inspect.getmembers(owner, inspect.ismethod)
        if getattr(member, _MARK, False)
    ]
