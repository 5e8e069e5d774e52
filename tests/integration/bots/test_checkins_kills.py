"""The check-ins bot killed around its own fire times: every member gets exactly one check-in
per week, and nothing goes to a member who did not opt in.

The bot runs in a process of its own (`schedproc.py`: the shipped factory of
`clubs.bots.catalog`, the production host) on a clock the test moves
(`schedhost.SchedProcess.jump_to`). Two clubs' support rooms (Almaty, Berlin); a member of each
opts in for Thursday 19:00 their time (Almaty from a DM, in Russian; Berlin in the support room,
as `test_checkins` does), a third member of the Berlin club opens a DM with the bot and never
opts in. Nobody answers, so each check-in is followed by its one reminder a day later.

The test walks the bot's jobs due instant by due instant (the daily retention run, each
member's check-in at 19:00 local, the reminder) across two weeks. At five of those instants the
process is started armed with a kill point and dies there (exit 137 as after a SIGKILL,
`clubs/core/crash.py`): a job claimed but not run (`job_claimed`), a send on the wire but not
recorded (`after_send`), a job completed (`job_completed`); one to three kills per instant, ten
in all. After each killed run the server may have less than the instant's sends, never more;
then a clean run settles the instant (no job due or running, nothing unsent) and the server has
exactly them.

Counted on the server, never through a client's decryption: the bot's events in each member's
DM rooms (a check-in is the intro, the mood poll and question 1, and from the second week the
end of last week's poll, a relation; a reminder is one event) and in the support rooms (nothing
at check-in time). A failure prints the bot's job rows and unsent outbox rows.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from clubs.core.http import path
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.schedhost import SchedProcess
from tests.integration.bots.support import (
    CS,
    create_bot_account,
    device_count,
    joined,
    managed_room,
    new_network,
    open_dm,
    send_text,
)
from tests.integration.bots.test_scheduling_kills import (
    ADMIN,
    killed_at_the_end,
    next_due,
    rows,
    settled,
    what_the_bot_has,
)
from tests.mautrix_client import mautrix_peer

CHECKIN_EVENTS = 3
"""A check-in's top-level events in the member's DM: the intro, the mood poll, question 1."""
KILLS: Mapping[tuple[int, str, str], Sequence[str]] = {
    (1, "almaty", "checkin"): ("job_claimed:1", "after_send:1"),
    (1, "berlin", "checkin"): ("after_send:2", "job_completed:1"),
    (1, "almaty", "remind"): ("after_send:1",),
    (2, "almaty", "checkin"): ("after_send:3", "job_claimed:1"),
    (2, "berlin", "checkin"): ("after_send:1", "job_claimed:1", "job_completed:1"),
}
"""The kill points of the runs at each due instant: (week, club, job kind) → `CLUBS_CRASH_AT`
of each run that must die there, in order. Ten in all. (In the second week `after_send:3` is
the mood poll on the wire and not yet recorded: the first send is the end of last week's poll.
`job_completed` is an instant's last kill: after it nothing of the job is left to run.)"""
LAST = (2, "berlin", "checkin")
MAX_INSTANTS = 40


@dataclass(frozen=True)
class Due:
    """One job due at an instant, as the test reads it from the bot's tables."""

    kind: str
    member: str
    club: str
    slot: str


async def test_each_member_gets_one_check_in_a_week_across_kills_around_fire_times(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "checkins")
    bot = account.user_id
    ala = await synapse.new_user("ala")
    ber = await synapse.new_user("ber")
    out = await synapse.new_user("out")
    support = {
        "almaty": await managed_room(
            synapse,
            network,
            invite=[bot, ala.user_id],
            key="support",
            club="almaty",
            language="ru",
            settings={"time_zone": "Asia/Almaty", "name": "Алматы"},
        ),
        "berlin": await managed_room(
            synapse,
            network,
            invite=[bot, ber.user_id, out.user_id],
            key="support",
            club="berlin",
            settings={"time_zone": "Europe/Berlin", "name": "Berlin"},
        ),
    }
    for person, club in ((ala, "almaty"), (ber, "berlin"), (out, "berlin")):
        await person.http.post(path(*CS, "join", support[club]), {})
    bp = SchedProcess(synapse.url, tmp_path, [account], network, synapse.admin.user_id)
    server = Server(synapse, bot, support)
    async with killed_at_the_end(bp), contextlib.AsyncExitStack() as stack:
        ala_peer, ber_peer, _ = [
            await stack.enter_async_context(mautrix_peer(m, synapse.url)) for m in (ala, ber, out)
        ]
        await bp.start()
        await bp.wait_ready()
        for member, room in ((ala, support["almaty"]), (ber, support["berlin"])):

            async def bot_joined(member: Account = member, room: str = room) -> bool:
                return await joined(member, room, bot)

            await eventually(bot_joined, within=20)
        ala_dm = await open_dm(ala, bot)
        await open_dm(ber, bot)
        await open_dm(out, bot)  # in a club and in a DM with the bot, but never opted in

        await send_text(ala_peer, ala_dm, "!чекин вкл чт 19:00")
        await send_text(ber_peer, support["berlin"], "!checkin on thu 19:00")

        async def both_planned() -> bool:
            planned = rows(
                bp, "SELECT COUNT(*) FROM jobs WHERE kind = 'checkin' AND state = ?", ["pending"]
            )
            return bool(planned[0][0] == 2)

        await eventually(both_planned, within=30)
        await settled(bp)
        start = await server.counts()  # the opt-in replies
        kills = await walk(bp, server, start)
        await bp.stop()

    final = await server.counts()
    weekly = {"almaty": 2, "berlin": 2}  # check-ins up to LAST (Almaty's week 2 comes first)
    reminded = {"almaty": 1, "berlin": 1}  # week 1's reminders (week 2's are after LAST)
    expected = Counter(start)
    for club, user in (("almaty", ala.user_id), ("berlin", ber.user_id)):
        expected[f"dm {user}"] += weekly[club] * CHECKIN_EVENTS + reminded[club]
        expected[f"dm {user} related"] += weekly[club] - 1  # the end of last week's poll
    dup = {k: n - expected.get(k, 0) for k, n in final.items() if n > expected.get(k, 0)}
    miss = {k: n - final.get(k, 0) for k, n in expected.items() if final.get(k, 0) < n}
    assert (dup, miss) == ({}, {}), what_the_bot_has(bp)
    assert final[f"dm {out.user_id}"] == 0, what_the_bot_has(bp)
    assert await server.dm_rooms() == {ala.user_id: 1, ber.user_id: 1, out.user_id: 1}
    assert rows(bp, "SELECT COUNT(*) FROM ci_checkins") == [(4,)], what_the_bot_has(bp)
    assert kills == 10
    assert bp.exits.count(137) == 10
    assert await device_count(synapse.url, tmp_path, bot) == 1


async def walk(bp: SchedProcess, server: Server, counts: Counter[str]) -> int:
    """Due instant by due instant up to `LAST`: the kills planned there (after each, the server
    has no more than the instant's sends), a clean run that settles, the server's counts checked
    against what the instant's jobs must send. Returns how many runs died at their kill point."""
    kills = 0
    weeks: dict[str, list[str]] = {}
    for _ in range(MAX_INSTANTS):
        instant, _kinds = next_due(bp)
        due = due_at(bp, instant)
        labels = [label_of(weeks, d) for d in due if d.kind != "prune"]
        planned = next((KILLS[label] for label in labels if label in KILLS), ())
        want = expected_delta(due, labels)
        if planned and bp.running:
            await bp.stop()
        for i, point in enumerate(planned):
            await bp.start(crash_at=point)
            if i == 0:  # nothing is due yet: the run is up when the time comes
                await bp.wait_ready()
                bp.jump_to(instant)
            code = await bp.wait_exit(within=30)
            assert code == 137, f"{labels}: the run armed with {point} ended with {code}; {bp}"
            kills += 1
            sent = await server.counts() - counts
            assert not sent - want, (
                f"{labels} {point}: {dict(sent)} sent, {dict(want)} at most\n"
                + (what_the_bot_has(bp))
            )
        if not bp.running:
            await bp.start()
            await bp.wait_ready()
        bp.jump_to(instant)  # (a no-op after a kill: the clock is there already)
        await settled(bp)
        now = await server.counts()
        delta = now - counts
        assert delta == want, f"{labels}: {dict(delta)} sent, {dict(want)} expected\n" + (
            what_the_bot_has(bp)
        )
        counts = now
        if LAST in labels:
            return kills
    raise AssertionError(f"{LAST} not reached\n" + what_the_bot_has(bp))


def due_at(bp: SchedProcess, instant: float) -> list[Due]:
    """The pending jobs due at `instant`, each with its member and slot (none for retention)."""
    members = {
        str(token): (str(user), str(club))
        for token, user, club in rows(bp, "SELECT token, user_id, club FROM ci_members")
    }
    out = []
    for kind, key in rows(
        bp, "SELECT kind, key FROM jobs WHERE state = 'pending' AND not_before = ?", [instant]
    ):
        if kind == "prune":
            out.append(Due("prune", "", "", ""))
            continue
        token, _, rest = str(key).partition("@")
        user, club = members[token]
        out.append(Due(str(kind), user, club, rest.partition("#")[0]))
    return out


def label_of(weeks: dict[str, list[str]], due: Due) -> tuple[int, str, str]:
    """(week, club, kind): the week counts the member's slots as the walk meets them."""
    slots = weeks.setdefault(due.member, [])
    if due.slot not in slots:
        slots.append(due.slot)
    return slots.index(due.slot) + 1, due.club, due.kind


def expected_delta(due: Sequence[Due], labels: Sequence[tuple[int, str, str]]) -> Counter[str]:
    """What the jobs due at one instant send, as the server counts it."""
    want: Counter[str] = Counter()
    jobs = [d for d in due if d.kind != "prune"]
    for job, (week, _, kind) in zip(jobs, labels, strict=True):
        if kind == "checkin":
            want[f"dm {job.member}"] += CHECKIN_EVENTS
            if week > 1:
                want[f"dm {job.member} related"] += 1
        elif kind == "remind":
            want[f"dm {job.member}"] += 1
    return want


class Server:
    """The bot's message events as the homeserver has them, read with the admin API: per
    support room and per member's DM rooms, top-level events and relations apart."""

    def __init__(self, synapse: SynapseHarness, bot: str, rooms: Mapping[str, str]) -> None:
        self.http = synapse.admin.http
        self.bot = bot
        self.rooms = dict(rooms)

    async def counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for club, room in self.rooms.items():
            for related in await self._bot_events(room):
                counts[f"support {club}" + (" related" if related else "")] += 1
        for member, found in (await self._dm_rooms()).items():
            counts[f"dm {member}"] += 0
            for room in found:
                for related in await self._bot_events(room):
                    counts[f"dm {member}" + (" related" if related else "")] += 1
        return counts

    async def dm_rooms(self) -> dict[str, int]:
        return {member: len(found) for member, found in (await self._dm_rooms()).items()}

    async def _dm_rooms(self) -> dict[str, list[str]]:
        """Every other room the bot is in, by the member it was made for (joined or invited)."""
        joined_rooms = await self.http.get(path(*ADMIN, "users", self.bot, "joined_rooms"))
        found: dict[str, list[str]] = {}
        for room in joined_rooms.get("joined_rooms", []):
            if room in self.rooms.values():
                continue
            state = await self.http.get(path(*ADMIN, "rooms", room, "state"))
            for e in state.get("state", []):
                if (
                    e.get("type") == "m.room.member"
                    and e.get("content", {}).get("membership") in ("invite", "join")
                    and e["state_key"] != self.bot
                ):
                    found.setdefault(e["state_key"], []).append(str(room))
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
