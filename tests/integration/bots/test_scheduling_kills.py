"""The scheduling bot killed around its own fire times: every reminder, "starting now" and
announcement reaches its room exactly once.

The bot runs in a process of its own (`schedproc.py`: the shipped factory, the production host)
on a clock the test moves (`schedhost.SchedProcess.jump_to`). A club's sessions room declares a
weekly online evening (the provisioner's `CLUB_SESSIONS` state); three members answer its RSVP
polls from the independent client — going; not going, then maybe; going, then not going. The
test walks the bot's jobs due instant by due instant (the 24 h and 15 min reminders, the call
widget, the start, the end with the next week's announcement) across two weeks. At five of
those instants the process is started armed with a kill point and dies there (exit 137 as after
a SIGKILL, `clubs/core/crash.py`): a job claimed but not run (`job_claimed`), a send on the wire
but not recorded (`after_send`), a job run but not completed (`job_ran`), a job completed
(`job_completed`); two kills per instant, ten in all. Then it is started again and the instant
settles (no job due or running, nothing unsent).

Counted on the server after every instant and at the end, never through a client's decryption:
the bot's events in each member's DM rooms (reminders: one per occurrence and offset to each
member going or maybe, none to the one not going), in the announcements room (one announcement
per occurrence; the RSVP count edits are relations and not counted) and in the sessions room
(one poll, one discussion thread and one "starting now" per occurrence, one poll end). A failure
prints the bot's job rows and unsent outbox rows, so it says which side lost or doubled it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mautrix.types import RoomID

from clubs.core.http import path
from clubs.core.namespace import CLUB_SESSIONS, OCCURRENCE
from clubs.core.sealed import Sealer
from clubs.core.secrets import Vault
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.schedhost import SchedProcess
from tests.integration.bots.support import (
    CS,
    create_bot_account,
    device_count,
    joined,
    managed_room,
    new_network,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer

ADMIN = ("_synapse", "admin", "v1")
BERLIN = ZoneInfo("Europe/Berlin")
GOING, MAYBE, NOT_GOING = "a1", "a2", "a3"
VOTES = ((GOING,), (NOT_GOING, MAYBE), (GOING, NOT_GOING))
"""Each member's answers in order (the last one counts): going, maybe, not going."""
REMINDED = (0, 1)
DAY_MIN = 24 * 60
KILLS: Mapping[tuple[int, str, int], Sequence[str]] = {
    (1, "remind", DAY_MIN): ("job_claimed:1", "after_send:1"),
    (1, "remind", 15): ("after_send:2", "job_completed:1"),
    (1, "start", 0): ("job_claimed:1", "after_send:1"),
    # The end: the finish job completes, then the next week's announcement dies after its run
    # (recorded, not completed) and runs again: its reminders, start and end must follow.
    (1, "finish", 0): ("job_completed:1", "job_ran:1"),
    (2, "remind", DAY_MIN): ("job_ran:1", "job_completed:1"),
}
"""The kill points of the runs at each due instant: (week, job kind, minutes before the start
for a reminder) → `CLUBS_CRASH_AT` of each run that must die there, in order. Ten in all."""
LAST = (2, "start", 0)
"""The walk ends with the second week's start (its end would announce a third week)."""
MAX_INSTANTS = 20


async def test_the_scheduling_bots_jobs_happen_exactly_once_across_kills_around_fire_times(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "scheduling")
    bot = account.user_id
    members = [await synapse.new_user(f"m{i}") for i in range(len(VOTES))]
    rooms = {
        key: await managed_room(
            synapse,
            network,
            invite=[bot, *(m.user_id for m in members)],
            key=key,
            powers={bot: 50},
            settings={"name": "Berlin"},
        )
        for key in ("announcements", "sessions")
    }
    for member in members:
        for room in rooms.values():
            await member.http.post(path(*CS, "join", room), {})
    bp = SchedProcess(synapse.url, tmp_path, [account], network, synapse.admin.user_id)
    server = Server(synapse, bot, rooms, [m.user_id for m in members])
    async with killed_at_the_end(bp), contextlib.AsyncExitStack() as stack:
        peers = [await stack.enter_async_context(mautrix_peer(m, synapse.url)) for m in members]
        await bp.start()
        await bp.wait_ready()
        for room in rooms.values():

            async def bot_joined(room: str = room) -> bool:
                return await joined(members[0], room, bot)

            await eventually(bot_joined, within=20)
        await synapse.admin.http.put(
            path(*CS, "rooms", rooms["sessions"], "state", CLUB_SESSIONS, ""),
            {"sessions": [weekly_evening(bp.now())]},
        )
        await vote(bp, peers, week=1)
        await settled(bp)
        counts = await server.counts()
        # week 1: announced (the poll, and the discussion thread under it)
        assert counts == {"announcements": 1, "sessions": 1, "sessions related": 1}, counts
        kills = await walk(bp, server, peers, counts)
        await bp.stop()
        # Each "starting now" the members read carries the occurrence with the declared agenda.
        starting = [r for r in peers[0].received if r.sender == bot and OCCURRENCE in r.content]
        assert starting
        assert all(r.content[OCCURRENCE]["agenda"] == AGENDA for r in starting)

    final = await server.counts()
    expected = {"announcements": 2, "sessions": 4, "sessions related": 3}
    expected |= {f"dm {members[i].user_id}": 4 for i in REMINDED}
    dup = {k: n - expected.get(k, 0) for k, n in final.items() if n > expected.get(k, 0)}
    miss = {k: n - final.get(k, 0) for k, n in expected.items() if final.get(k, 0) < n}
    assert (dup, miss) == ({}, {}), what_the_bot_has(bp)
    assert kills == 10
    assert bp.exits.count(137) == 10
    assert await server.dm_rooms_per_member() == {members[i].user_id: 1 for i in REMINDED}
    assert await device_count(synapse.url, tmp_path, bot) == 1


def weekly_evening(now: float) -> dict[str, Any]:
    """A weekly online evening as the provisioner declares it: first in two days, 19:00 in
    Berlin (both reminders of the first week are still ahead of the bot's clock)."""
    first = (datetime.fromtimestamp(now, BERLIN) + timedelta(days=2)).replace(
        hour=19, minute=0, second=0, microsecond=0
    )
    return {
        "key": "weekly",
        "title": "Evening of the kill test",
        "kind": "meeting",
        "start": first.strftime("%Y-%m-%dT%H:%M"),
        "rrule": "FREQ=WEEKLY;BYDAY=" + ("MO", "TU", "WE", "TH", "FR", "SA", "SU")[first.weekday()],
        "duration_s": 3600,
        "online": True,
        "capacity": None,
        "materials": None,
        "agenda": AGENDA,
    }


AGENDA = [
    {"title": "Круг: как прошла неделя", "minutes": 10},
    {"title": "method story", "minutes": 20},
]
"""The declared agenda the "starting now" notices carry (encrypted) to the facilitation bot."""


async def walk(
    bp: SchedProcess, server: Server, peers: Sequence[MautrixPeer], counts: Counter[str]
) -> int:
    """Due instant by due instant up to `LAST`: the kills planned there, a clean run that
    settles, the server's counts checked against what the instant's jobs must send. Returns how
    many runs died at their kill point."""
    kills = 0
    for _ in range(MAX_INSTANTS):
        instant, kinds = next_due(bp)
        label = label_of(bp, instant, kinds)
        planned = KILLS.get(label, ())
        if planned and bp.running:
            await bp.stop()
        for i, point in enumerate(planned):
            await bp.start(crash_at=point)
            if i == 0:  # nothing is due yet: the run is up when the time comes
                await bp.wait_ready()
                bp.jump_to(instant)
            try:
                code = await bp.wait_exit(within=30)
            except AssertionError as e:
                raise AssertionError(f"{label}: the run armed with {point}: {e}; {bp}") from None
            assert code == 137, f"{label}: the run armed with {point} ended with {code}; {bp}"
            kills += 1
        if not bp.running:
            await bp.start()
            await bp.wait_ready()
        bp.jump_to(instant)  # (a no-op after a kill: the clock is there already)
        await settled(bp)
        if "finish" in kinds:  # the next week is announced: its poll gets the same answers
            await vote(bp, peers, week=label[0] + 1)
            await settled(bp)
        now = await server.counts()
        delta = now - counts
        want = expected_delta(kinds, server)
        assert delta == want, f"{label}: {dict(delta)} sent, {dict(want)} expected\n" + (
            what_the_bot_has(bp)
        )
        counts = now
        if label == LAST:
            return kills
    raise AssertionError(f"{LAST} not reached\n" + what_the_bot_has(bp))


def expected_delta(kinds: set[str], server: Server) -> Counter[str]:
    """What the jobs due at one instant send, as the server counts it."""
    want: Counter[str] = Counter()
    if "remind" in kinds:
        want.update(f"dm {server.member_ids[i]}" for i in REMINDED)
    if "start" in kinds:
        want["sessions"] += 1  # "starting now"
    if "finish" in kinds:  # the poll ended; the next week announced, its poll and thread posted
        want.update({"sessions related": 2, "announcements": 1, "sessions": 1})
    return want


# --- the bot's database, read-only, for the due instants and a failure's story ------------------


def bot_db(bp: SchedProcess) -> sqlite3.Connection:
    db = bp.var_dir / "bots" / "bots.db"
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def rows(bp: SchedProcess, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(bot_db(bp)) as conn:
        return list(conn.execute(sql, params))


def next_due(bp: SchedProcess) -> tuple[float, set[str]]:
    """The earliest pending job's due time and the kinds of the jobs due then."""
    ((instant,),) = rows(bp, "SELECT MIN(not_before) FROM jobs WHERE state = 'pending'")
    assert instant is not None, "no job pending\n" + what_the_bot_has(bp)
    kinds = rows(
        bp, "SELECT DISTINCT kind FROM jobs WHERE state = 'pending' AND not_before = ?", [instant]
    )
    return float(instant), {str(k) for (k,) in kinds}


def label_of(bp: SchedProcess, instant: float, kinds: set[str]) -> tuple[int, str, int]:
    """(week, kind, minutes before the start) of the jobs due at `instant`."""
    starts = [float(s) for (s,) in rows(bp, "SELECT start_utc FROM sched_occurrences")]
    starts.sort()
    kind = next(k for k in ("remind", "widget", "start", "finish") if k in kinds)
    if kind == "finish":
        week = max(i for i, s in enumerate(starts, 1) if s < instant)
        return week, kind, 0
    week = min(i for i, s in enumerate(starts, 1) if s >= instant)
    minutes = round((starts[week - 1] - instant) / 60)
    return week, kind, minutes if kind == "remind" else 0


async def settled(bp: SchedProcess, within: float = 30) -> None:
    """Until no job is due or running and nothing waits in the outbox (one read snapshot)."""

    async def quiet() -> bool:
        with contextlib.closing(bot_db(bp)) as conn, conn:
            conn.execute("BEGIN")
            ((busy,),) = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = 'running' "
                "OR (state = 'pending' AND not_before <= ?)",
                [bp.now()],
            )
            ((unsent,),) = conn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'sent'")
        return bool(busy == 0 and unsent == 0)

    try:
        await eventually(quiet, within=within, interval=0.1)
    except AssertionError:
        raise AssertionError("the bot did not settle\n" + what_the_bot_has(bp)) from None


async def vote(bp: SchedProcess, peers: Sequence[MautrixPeer], *, week: int) -> None:
    """Every member answers the week's poll (`VOTES`), as Element sends it; until the bot has
    counted each member's last answer."""

    async def poll() -> tuple[str, str] | None:
        found = rows(
            bp,
            "SELECT poll_room, poll_event FROM sched_occurrences WHERE poll_event IS NOT NULL "
            "ORDER BY start_utc",
        )
        return (str(found[week - 1][0]), str(found[week - 1][1])) if len(found) >= week else None

    polled = await eventually(poll, within=30)
    assert polled is not None
    room, poll_id = polled
    for peer, answers in zip(peers, VOTES, strict=True):
        for answer in answers:
            await peer.send_poll_response(RoomID(room), poll_id, [answer])
    want = {str(p.user_id): [a[-1]] for p, a in zip(peers, VOTES, strict=True)}
    sealer = Sealer.from_vault(Vault(bp.var_dir / "secrets" / "vault"))

    def answers_of(stored: str | bytes) -> Any:
        """A vote's answer ids: sealed at rest (bytes), or JSON text from before sealing."""
        return sealer.open_json(stored) if isinstance(stored, bytes) else json.loads(stored)

    async def counted() -> bool:
        got = rows(bp, "SELECT sender, answers FROM poll_votes WHERE poll_id = ?", [poll_id])
        return {str(s): answers_of(a) for s, a in got} == want

    await eventually(counted, within=30)


def what_the_bot_has(bp: SchedProcess) -> str:
    """For a failure: every job row, the outbox rows not sent, the log's warnings."""
    lines = [f"bot clock {bp.now():.0f}; runs ended {bp.exits}"]
    with contextlib.suppress(sqlite3.Error):
        lines += [
            f"job {row}"
            for row in rows(
                bp,
                "SELECT kind, key, state, attempts, due_at, not_before, updated_at FROM jobs "
                "ORDER BY due_at",
            )
        ]
        lines += [
            f"outbox {row}"
            for row in rows(
                bp,
                "SELECT txn_id, room_id, event_type, state, attempts, created_at, next_try_at, "
                "last_error FROM outbox WHERE state != 'sent'",
            )
        ]
    if bp.log_file.exists():
        lines += [
            line
            for line in bp.log_text().splitlines()
            if " WARNING " in line or " ERROR " in line or "clubs.bots.jobs" in line
        ][-40:]
    return "\n".join(lines)


# --- the server's count -----------------------------------------------------------------------


class Server:
    """The bot's message events as the homeserver has them, read with the admin API (the DM
    rooms' members need not have joined): per club room (top-level events, and relations such
    as edits and poll ends apart) and per member's DM rooms."""

    def __init__(
        self,
        synapse: SynapseHarness,
        bot: str,
        rooms: Mapping[str, str],
        member_ids: Sequence[str],
    ) -> None:
        self.http = synapse.admin.http
        self.bot = bot
        self.rooms = dict(rooms)
        self.member_ids = list(member_ids)

    async def counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for key, room in self.rooms.items():
            for related in await self._bot_events(room):
                if not related:
                    counts[key] += 1
                elif key == "sessions":  # poll ends (the announcements' are RSVP count edits)
                    counts[f"{key} related"] += 1
        for member, dm_rooms in (await self._dm_rooms()).items():
            for room in dm_rooms:
                counts[f"dm {member}"] += len(await self._bot_events(room))
        return +counts

    async def dm_rooms_per_member(self) -> dict[str, int]:
        return {member: len(found) for member, found in (await self._dm_rooms()).items()}

    async def _dm_rooms(self) -> dict[str, list[str]]:
        """Every other room the bot is in, by the member it was made for (joined or invited)."""
        joined_rooms = await self.http.get(path(*ADMIN, "users", self.bot, "joined_rooms"))
        found: dict[str, list[str]] = {}
        for room in joined_rooms.get("joined_rooms", []):
            if room in self.rooms.values():
                continue
            state = await self.http.get(path(*ADMIN, "rooms", room, "state"))
            people = {
                e["state_key"]
                for e in state.get("state", [])
                if e.get("type") == "m.room.member"
                and e.get("content", {}).get("membership") in ("invite", "join")
                and e["state_key"] != self.bot
            }
            for member in people:
                found.setdefault(member, []).append(str(room))
        return found

    async def _bot_events(self, room: str) -> list[bool]:
        """The bot's message events in the room, each as whether it is a relation."""
        out: list[bool] = []
        token: str | None = None
        while True:
            query = {"dir": "b", "limit": "1000"} | ({"from": token} if token else {})
            page = await self.http.get(path(*ADMIN, "rooms", room, "messages"), query=query)
            out += [
                "m.relates_to" in e.get("content", {})
                for e in page.get("chunk", [])
                if e.get("sender") == self.bot
                and e.get("type") in ("m.room.encrypted", "m.room.message")
            ]
            token = page.get("end")
            if not token or not page.get("chunk"):
                return out


@contextlib.asynccontextmanager
async def killed_at_the_end(bp: SchedProcess) -> AsyncIterator[SchedProcess]:
    try:
        yield bp
    finally:
        await bp.kill()
