"""The polls each bot started and the votes that count in them.

Who voted for what is data about members. Only what the tally needs is kept: the poll's answer
ids and rules (never the question or the answers' texts), and per person the one vote that
counts now (event id, timestamp, the answer ids it selects — never a vote it replaced). The
answer ids a person selected are sealed at rest when the store has a sealer (a mood poll's
answer is the mood): readable by the bot, not by whoever copies its database file. Once a
poll has ended its final counts are kept with the poll and its votes are deleted
`VOTES_KEEP_AFTER_END_S` later (the window in which a late end or a re-count can still change
them); votes of a poll that never ends are deleted `VOTES_KEEP_OPEN_S` after it started.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from clubs.bots.polls import Poll, Results, Vote
from clubs.core.db import Database, Migration
from clubs.core.ids import EventId, RoomId, UserId
from clubs.core.sealed import Sealer

COMPONENT = "polls"
MIGRATIONS: Sequence[Migration] = (
    Migration(
        1,
        "polls started by bots, the votes that count in them",
        """
        CREATE TABLE polls (
            bot TEXT NOT NULL, poll_id TEXT NOT NULL, room_id TEXT NOT NULL,
            answers TEXT NOT NULL, max_selections INTEGER NOT NULL, disclosed INTEGER NOT NULL,
            started_at INTEGER NOT NULL, end_ts INTEGER, ended_at INTEGER, final_counts TEXT,
            PRIMARY KEY (bot, poll_id)
        );
        CREATE INDEX polls_ended_at ON polls (ended_at);
        CREATE TABLE poll_votes (
            bot TEXT NOT NULL, poll_id TEXT NOT NULL, sender TEXT NOT NULL,
            event_id TEXT NOT NULL, ts INTEGER NOT NULL, answers TEXT NOT NULL,
            PRIMARY KEY (bot, poll_id, sender),
            FOREIGN KEY (bot, poll_id) REFERENCES polls (bot, poll_id) ON DELETE CASCADE
        )
        """,
    ),
)

VOTES_KEEP_AFTER_END_S = 7 * 24 * 3600
VOTES_KEEP_OPEN_S = 180 * 24 * 3600


@dataclass(frozen=True)
class StoredPoll:
    poll_id: EventId
    room_id: RoomId
    poll: Poll
    end_ts: int | None
    final: Results | None
    """The results at the end (kept after the votes are deleted)."""


class PollStore:
    """One bot's polls inside the shared service database."""

    def __init__(self, db: Database, bot: str, sealer: Sealer | None = None) -> None:
        self.db = db
        self.bot = bot
        self.sealer = sealer

    def _answers_in(self, answers: Sequence[str]) -> str | bytes:
        if self.sealer is None:
            return json.dumps(list(answers))
        return self.sealer.seal_json(list(answers))

    def _answers_out(self, stored: str | bytes) -> tuple[str, ...]:
        """Sealed (bytes) or, from before sealing or without a sealer, plain JSON (text)."""
        if isinstance(stored, bytes):
            if self.sealer is None:
                raise ValueError("sealed votes need the store's sealer")
            return tuple(self.sealer.open_json(stored))
        return tuple(json.loads(stored))

    @staticmethod
    async def migrate(db: Database) -> None:
        await db.migrate(COMPONENT, MIGRATIONS)

    async def add(self, room_id: RoomId, poll_id: EventId, poll: Poll, now: float) -> None:
        """Record a poll this bot sent (again after a replayed send: nothing changes)."""
        await self.db.execute(
            "INSERT OR IGNORE INTO polls (bot, poll_id, room_id, answers, max_selections, "
            "disclosed, started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                self.bot,
                poll_id,
                room_id,
                json.dumps(list(poll.answers)),
                poll.max_selections,
                int(poll.disclosed),
                int(now),
            ),
        )

    async def find(self, poll_id: str) -> StoredPoll | None:
        row = await self.db.fetchone(
            "SELECT poll_id, room_id, answers, max_selections, disclosed, end_ts, final_counts "
            "FROM polls WHERE bot = ? AND poll_id = ?",
            (self.bot, poll_id),
        )
        if row is None:
            return None
        final = row["final_counts"]
        return StoredPoll(
            EventId(row["poll_id"]),
            RoomId(row["room_id"]),
            Poll(
                tuple(json.loads(row["answers"])),
                int(row["max_selections"]),
                bool(row["disclosed"]),
            ),
            row["end_ts"],
            _results(final, row["end_ts"]),
        )

    async def votes(self, poll_id: str) -> list[Vote]:
        rows = await self.db.fetchall(
            "SELECT sender, event_id, ts, answers FROM poll_votes WHERE bot = ? AND poll_id = ?",
            (self.bot, poll_id),
        )
        return [
            Vote(
                UserId(r["sender"]),
                EventId(r["event_id"]),
                int(r["ts"]),
                self._answers_out(r["answers"]),
            )
            for r in rows
        ]

    async def put_vote(self, poll_id: str, vote: Vote) -> bool:
        """Keep `vote` if it is its sender's latest; returns whether it replaced anything
        (False for an older vote or the same one again)."""
        changed = await self.db.execute(
            "INSERT INTO poll_votes (bot, poll_id, sender, event_id, ts, answers) "
            "VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (bot, poll_id, sender) DO UPDATE SET event_id = excluded.event_id, "
            "ts = excluded.ts, answers = excluded.answers "
            "WHERE (excluded.ts, excluded.event_id) > (poll_votes.ts, poll_votes.event_id)",
            (
                self.bot,
                poll_id,
                vote.sender,
                vote.event_id,
                vote.ts,
                self._answers_in(vote.answers),
            ),
        )
        return changed > 0

    async def replace_votes(
        self,
        poll_id: str,
        votes: Iterable[Vote],
        end_ts: int | None,
        final: Results | None,
        now: float,
    ) -> None:
        """After a re-count from the server: exactly these votes, and the end if there is one."""
        async with self.db.transaction():
            await self.db.execute(
                "DELETE FROM poll_votes WHERE bot = ? AND poll_id = ?", (self.bot, poll_id)
            )
            for vote in votes:
                await self.db.execute(
                    "INSERT INTO poll_votes (bot, poll_id, sender, event_id, ts, answers) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        self.bot,
                        poll_id,
                        vote.sender,
                        vote.event_id,
                        vote.ts,
                        self._answers_in(vote.answers),
                    ),
                )
            if end_ts is not None and final is not None:
                summary = {"counts": dict(final.counts), "voters": final.voters}
                await self.db.execute(
                    "UPDATE polls SET end_ts = ?, final_counts = ?, "
                    "ended_at = COALESCE(ended_at, ?) WHERE bot = ? AND poll_id = ?",
                    (end_ts, json.dumps(summary), int(now), self.bot, poll_id),
                )

    async def forget(self, sender: str) -> int:
        """Delete a person's votes in this bot's polls (the counts already posted stay)."""
        return await self.db.execute(
            "DELETE FROM poll_votes WHERE bot = ? AND sender = ?", (self.bot, sender)
        )

    async def prune(self, now: float) -> int:
        """Delete the votes of polls that ended `VOTES_KEEP_AFTER_END_S` ago or started
        `VOTES_KEEP_OPEN_S` ago; returns how many votes went."""
        return await self.db.execute(
            "DELETE FROM poll_votes WHERE bot = ? AND poll_id IN (SELECT poll_id FROM polls "
            "WHERE bot = ? AND (ended_at < ? OR started_at < ?))",
            (
                self.bot,
                self.bot,
                int(now - VOTES_KEEP_AFTER_END_S),
                int(now - VOTES_KEEP_OPEN_S),
            ),
        )


def _results(summary: str | None, end_ts: int | None) -> Results | None:
    if summary is None or end_ts is None:
        return None
    data = json.loads(summary)
    return Results(dict(data["counts"]), int(data["voters"]), int(end_ts))
