"""Following the polls a bot started: votes from sync, re-counts from `/relations`, the end.

Live, every decrypted response or end that relates to one of the bot's polls updates the stored
votes (`observe`). A count can also be rebuilt from the server: `recount` reads every reference
relation of the poll (`GET /_matrix/client/v1/rooms/{room}/relations/{poll}/m.reference`,
paginated), decrypts the encrypted ones with the bot's device and counts them with Element's
rules. That happens the first time a poll's results are asked for in a process (after a restart
or a gap nothing is missed), whenever an end arrives (votes stamped after the end that arrived
before it must go), and when the bot ends a poll. Relations that cannot be decrypted are
counted and reported: the results may then be incomplete, as Element warns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from clubs.bots.polls import (
    END_TYPES,
    POLL_END,
    RESPONSE_TYPES,
    TEXT,
    End,
    Poll,
    PollUpdate,
    Results,
    Vote,
    first_end,
    latest_votes,
    parse_response,
    parse_start,
    relation_target,
    selection,
    tally,
)
from clubs.bots.pollstore import PollStore, StoredPoll
from clubs.bots.rooms import RoomDirectory
from clubs.core.e2ee import E2eeClient, RoomEvent
from clubs.core.errors import MatrixError
from clubs.core.html import Text
from clubs.core.http import MatrixHttp, path
from clubs.core.ids import EventId, RoomId, UserId

log = logging.getLogger(__name__)

RELATIONS_PAGE = 100
RELATIONS_MAX_PAGES = 50
"""A re-count reads at most this many pages of relations (5000 responses and ends)."""
PRUNE_EVERY_S = 3600.0


class _Send(Protocol):
    async def __call__(
        self, room_id: RoomId, event_type: str, content: Mapping[str, Any], *, job: Iterable[str]
    ) -> EventId | None: ...


class PollTracker:
    """One bot account's polls: record, follow, re-count, end."""

    def __init__(
        self,
        store: PollStore,
        client: E2eeClient,
        http: MatrixHttp,
        rooms: RoomDirectory,
        clock: Callable[[], float],
        send: _Send,
        render: Callable[..., Text],
    ) -> None:
        self.store = store
        self.client = client
        self.http = http
        self.rooms = rooms
        self.clock = clock
        self._send = send
        self._render = render
        self._recounted: set[EventId] = set()
        """Polls re-counted from the server since this process started."""
        self._undecryptable: dict[EventId, set[EventId]] = {}
        """Per poll: relations seen in sync that this device could not decrypt (yet)."""
        self._pruned_at = 0.0

    async def record(self, room_id: RoomId, poll_id: EventId, poll: Poll) -> None:
        await self.store.add(room_id, poll_id, poll, self.clock())
        self._recounted.add(poll_id)  # nothing to re-count: it was just sent

    async def observe(self, event: RoomEvent) -> PollUpdate | None:
        """A timeline event: if it responds to or ends one of our polls and changes the count,
        the update (also when it is the stored vote already: a replay after a crash)."""
        target = relation_target(event.content)
        if target is None:
            return None
        stored = await self.store.find(target)
        if stored is None or stored.room_id != event.room_id:
            return None
        await self._prune()
        if event.encrypted and not event.decrypted:
            self._undecryptable.setdefault(target, set()).add(event.event_id)
            return None
        if not event.encrypted and await self.client.is_encrypted(event.room_id):
            return None  # no client sends plaintext there: only the server could have
        self._undecryptable.get(target, set()).discard(event.event_id)
        if event.type in END_TYPES:
            return await self._on_end(stored, event)
        answers = parse_response(event.type, event.content)
        if answers is None or (
            stored.end_ts is not None and event.origin_server_ts > stored.end_ts
        ):
            return None
        vote = Vote(
            event.sender,
            event.event_id,
            event.origin_server_ts,
            selection(stored.poll, answers),
        )
        before = tally(stored.poll, await self.store.votes(target), stored.end_ts)
        replaced = await self.store.put_vote(target, vote)
        votes = await self.store.votes(target)
        if not any(v.event_id == event.event_id for v in votes):
            return None  # an older vote than the one that counts
        after = tally(stored.poll, votes, stored.end_ts)
        if replaced and after == before:
            return None  # the same choice again
        # Not replaced but current: this event was handled before a crash; tell again.
        return self._update(stored, after, cause=event.event_id)

    async def _on_end(self, stored: StoredPoll, event: RoomEvent) -> PollUpdate | None:
        if stored.end_ts is not None and stored.end_ts <= event.origin_server_ts:
            return None  # a later end changes nothing
        if not await self._may_end(stored.room_id, event.sender):
            log.info("poll %s: ignored an end by someone who may not end it", stored.poll_id)
            return None
        results = await self.recount(stored)
        return self._update(stored, results, cause=event.event_id)

    async def _may_end(self, room_id: RoomId, user: UserId) -> bool:
        """The poll's creator (this bot) or someone who may redact other people's events."""
        if user == self.client.user_id:
            return True
        room = await self.rooms.info(room_id)
        return room.power(user) >= room.required("redact", 50)

    async def results(self, room_id: RoomId, poll_id: EventId) -> PollUpdate | None:
        """The poll's current results (None if this bot did not start it there). The first
        call in a process re-counts from the server; after the end, the final counts."""
        stored = await self.store.find(poll_id)
        if stored is None or stored.room_id != room_id:
            return None
        if (
            stored.final is not None
            and poll_id not in self._recounted
            and not await self.store.votes(poll_id)
        ):
            # The votes are deleted (retention): the final counts are what is left.
            return self._update(stored, stored.final)
        if poll_id not in self._recounted:
            results = await self.recount(stored)
        else:
            results = tally(stored.poll, await self.store.votes(poll_id), stored.end_ts)
        return self._update(stored, results)

    async def ballots(self, room_id: RoomId, poll_id: EventId) -> list[Vote]:
        """The votes that count now, one per person who chose something (an RSVP needs to know
        who, not only how many): the same rules as the counts. Empty for a poll this bot did
        not start there."""
        stored = await self.store.find(poll_id)
        if stored is None or stored.room_id != room_id:
            return []
        if poll_id not in self._recounted:
            await self.results(room_id, poll_id)  # the first call in a process re-counts
        out = []
        for vote in latest_votes(await self.store.votes(poll_id), stored.end_ts).values():
            chosen = selection(stored.poll, vote.answers)
            if chosen:
                out.append(Vote(vote.sender, vote.event_id, vote.ts, tuple(chosen)))
        return sorted(out, key=lambda v: (v.ts, v.event_id))

    async def recount(self, stored: StoredPoll) -> Results:
        """Count the poll again from every relation the server has for it."""
        votes: list[Vote] = []
        ends: list[End] = []
        undecryptable: set[EventId] = set()
        for raw in await self._relations(stored.room_id, stored.poll_id):
            event = await self._readable(stored.room_id, raw)
            if event is None:
                event_id = raw.get("event_id")
                if isinstance(event_id, str):
                    undecryptable.add(EventId(event_id))
                continue
            if relation_target(event.content) != stored.poll_id:
                continue
            if event.type in END_TYPES:
                ends.append(End(event.sender, event.event_id, event.origin_server_ts))
            elif (answers := parse_response(event.type, event.content)) is not None:
                vote_answers = selection(stored.poll, answers)
                votes.append(
                    Vote(event.sender, event.event_id, event.origin_server_ts, vote_answers)
                )
        allowed = {e.sender: await self._may_end(stored.room_id, e.sender) for e in ends}
        end = first_end(ends, lambda user: allowed.get(user, False))
        end_ts = end.ts if end is not None else None
        results = tally(stored.poll, votes, end_ts)
        await self.store.replace_votes(
            stored.poll_id,
            latest_votes(votes, end_ts).values(),
            end_ts,
            results if end is not None else None,
            self.clock(),
        )
        self._undecryptable[stored.poll_id] = undecryptable
        self._recounted.add(stored.poll_id)
        log.debug(
            "poll %s re-counted: %d responses, %d ends, %d undecryptable",
            stored.poll_id,
            len(votes),
            len(ends),
            len(undecryptable),
        )
        return results

    async def _relations(self, room_id: RoomId, poll_id: EventId) -> list[Mapping[str, Any]]:
        url = path("_matrix", "client", "v1", "rooms", room_id, "relations", poll_id, "m.reference")
        events: list[Mapping[str, Any]] = []
        query = {"limit": str(RELATIONS_PAGE)}
        for _ in range(RELATIONS_MAX_PAGES):
            page = await self.http.get(url, query=query, label="relations")
            chunk = page.get("chunk")
            if isinstance(chunk, list):
                events += [e for e in chunk if isinstance(e, Mapping)]
            token = page.get("next_batch")
            if not isinstance(token, str) or not token:
                return events
            query = {"limit": str(RELATIONS_PAGE), "from": token}
        log.warning("poll %s: more relations than a re-count reads; counted the newest", poll_id)
        return events

    async def _readable(self, room_id: RoomId, raw: Mapping[str, Any]) -> RoomEvent | None:
        """The event as the bot reads it (decrypted if it was encrypted), None if it cannot.
        Plaintext in an encrypted room is read as nothing (only the server could send it)."""
        event_type = raw.get("type")
        if event_type == "m.room.encrypted":
            return await self.client.decrypt_json(room_id, raw)
        if await self.client.is_encrypted(room_id):
            return RoomEvent(room_id, EventId(str(raw.get("event_id"))), UserId(""), "", {}, 0)
        sender, event_id, ts = raw.get("sender"), raw.get("event_id"), raw.get("origin_server_ts")
        content = raw.get("content")
        if not (
            isinstance(event_type, str)
            and isinstance(sender, str)
            and isinstance(event_id, str)
            and isinstance(ts, int)
            and isinstance(content, Mapping)
        ):
            return None
        if event_type not in RESPONSE_TYPES | END_TYPES:
            return RoomEvent(room_id, EventId(event_id), UserId(sender), event_type, {}, ts)
        return RoomEvent(room_id, EventId(event_id), UserId(sender), event_type, content, ts)

    async def end(
        self,
        room_id: RoomId,
        poll_id: EventId,
        *,
        job: Iterable[str],
        lang: str | None = None,
    ) -> PollUpdate | None:
        """End a poll this bot started: an `org.matrix.msc3381.poll.end` whose text fallback
        gives the results, as Element sends it. Returns the final results (None if the poll is
        not this bot's, or if it could not be sent yet). A poll already ended stays as it is."""
        stored = await self.store.find(poll_id)
        if stored is None or stored.room_id != room_id:
            return None
        if stored.final is not None:
            return self._update(stored, stored.final)
        results = await self.recount(stored)
        if results.ended:
            return self._update(stored, results)
        if lang is None:
            lang = (await self.rooms.info(room_id)).language
        poll = await self._fetch_start(room_id, poll_id) or stored.poll
        text = self._render("bots/poll_ended", lang, **_end_values(poll, results))
        content = {
            "m.relates_to": {"rel_type": "m.reference", "event_id": poll_id},
            TEXT: text.body,
            POLL_END: {},
        }
        if await self._send(room_id, POLL_END, content, job=job) is None:
            return None
        stored = await self.store.find(poll_id) or stored
        return self._update(stored, await self.recount(stored))

    async def _fetch_start(self, room_id: RoomId, poll_id: EventId) -> Poll | None:
        """The poll as sent (question and answers' texts are never stored: read them back)."""
        try:
            raw = await self.http.get(
                path("_matrix", "client", "v3", "rooms", room_id, "event", poll_id),
                label="poll start",
            )
        except MatrixError:
            return None
        event = await self._readable(room_id, raw)
        return parse_start(event.type, event.content) if event is not None else None

    def _update(
        self, stored: StoredPoll, results: Results, *, cause: EventId | None = None
    ) -> PollUpdate:
        known = self._undecryptable.get(stored.poll_id)
        return PollUpdate(
            room_id=stored.room_id,
            poll_id=stored.poll_id,
            counts=dict(results.counts),
            voters=results.voters,
            ended=results.ended,
            disclosed=stored.poll.disclosed,
            undecryptable=len(known) if known is not None else None,
            cause=cause,
        )

    async def _prune(self) -> None:
        now = self.clock()
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            await self.store.prune(now)


def _end_values(poll: Poll, results: Results) -> dict[str, Any]:
    def label(answer_id: str) -> str:
        i = poll.answers.index(answer_id) if answer_id in poll.answers else -1
        return poll.texts[i] if 0 <= i < len(poll.texts) and poll.texts[i] else answer_id

    return {
        "question": poll.question,
        "top": [label(a) for a in results.top()],
        "answers": [{"text": label(a), "votes": n} for a, n in results.counts.items()],
        "voters": results.voters,
    }
