"""The scheduling bot: club sessions across time zones, an RSVP poll, places and a waitlist,
reminders exactly once.

A facilitator creates a session (or a weekly series) in the club's sessions room with
`!session` / `!встреча`. Everything after that is a chain of durable jobs, each one exactly
once across crashes (its sends carry txn ids derived from the job, its follow-ups are stored
with its completion):

- `announce` (one occurrence): the announcement in the club's announcements room, pinned, and
  an encrypted RSVP poll in the sessions room (members cannot post in the announcements room,
  so they could not vote there); then the occurrence's reminders, start and finish are
  scheduled;
- `remind` (per offset, default 24 h and 15 min before): a DM to everyone going or maybe; late
  (the bot was down) but within its grace window it says so; past it the facilitator who made
  the session gets one "missed" DM instead — never silence;
- `start`: "starting now" in the sessions room, with the call link of an online session;
- `finish`: the announcement unpinned and marked over, the poll ended, the next occurrence
  announced.

Members can subscribe their calendar app to a secret feed of their clubs' sessions (`feed`).
Facilitators cancel one occurrence or end the series, move one occurrence, or change this and
the following ones (`edits`): a moved occurrence keeps its announcement, poll and places.

Votes arrive as poll responses (`@on_poll`): the counts are edited into the announcement, and
at an offline session with a capacity the places are given in the order people said "going";
the rest wait and are promoted when a place opens. The venue's address is only ever sent by DM
to people with a place — never in room state or a room message.

Times are computed in the club's IANA zone from the series' wall time and RRULE, so a weekly
19:00 stays 19:00 across daylight-saving changes; announcements show the club's local time.
"""

from __future__ import annotations

from typing import Any

from clubs.bots.scheduling.chain import SessionChain
from clubs.bots.scheduling.commands import SessionCommands
from clubs.bots.scheduling.edits import SeriesEdits
from clubs.bots.scheduling.feed import CalendarFeed
from clubs.bots.scheduling.follow import DeclaredFollower
from clubs.bots.scheduling.store import ScheduleStore


class SchedulingBot(SessionCommands, SeriesEdits, CalendarFeed, SessionChain, DeclaredFollower):
    """The commands, the edits of a series, the calendar feeds, the chain of jobs and the
    follower of declared sessions, on one account (their handlers are collected from this one
    object)."""

    async def start(self, ctx: Any) -> None:
        self.store = await ScheduleStore.open(self.db, ctx.name, self.sealer)
        self._ctx = ctx
        ctx.spawn(self._declared_everywhere(ctx), "declared sessions")


__all__ = ["SchedulingBot"]
