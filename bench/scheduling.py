"""Benchmark: the scheduling bot's reminders on time, against the same Synapse's raw send floor.

    .venv/bin/python bench/scheduling.py [--sessions 1000] [--clubs 50] [--minutes 10]
                                         [--idle 60]

One fresh Synapse (SQLite, loopback). The shipped bots (scheduling, moderation, check-ins) run
in one process of their own (`tests/integration/bots/schedproc.py`: `open_runtimes` with the
shipped factories, each bot on its own cross-signed device, production long-poll, INFO logs);
only the scheduling bot is in the clubs' rooms, the others idle beside it. Each of `--clubs`
clubs (in six zones) has its managed encrypted announcements and sessions rooms and one member,
a cross-signed client of its own, who opened a DM with the bot (as an Element user who writes
to it). The sessions are what a real deployment has:

1. declared: the provisioner's `CLUB_SESSIONS` state in each sessions room, `--sessions` online
   one-off sessions over the clubs, their starts (local wall times, on the minute, as people
   set them) spread over `--minutes` minutes a day ahead; the bot announces each (announcement,
   pin, RSVP poll) as it reads the state;
2. every member answers "going" in each of their club's polls (encrypted poll responses); the
   bot counts them (each vote edits the announcement's count);
3. the reminders: 24 h and 15 min before each start (the default offsets), one DM to the
   member. The bot's clock is the system clock plus an offset (`schedproc.ShiftedClock` with
   `SystemClock`'s 60 s slice: a stepped wall clock, exactly as a production host would see
   one); the benchmark steps it twice, to shortly before each wave of reminders;
4. idle: after each step, once the runner has seen it, the CPU time of the bots process over
   `--idle` seconds while nothing is due (target < 1 %: nothing but the long-poll syncs);
5. lag: from each reminder's due time to its event's `origin_server_ts` (the homeserver's
   stamp), from the outbox's event ids (txn ids from the job) and the admin API's `/messages`;
6. floor: a bare cross-signed E2eeClient (no runtime, no database) with its own encrypted DM
   room with each member sends one message at each reminder's due instant (as many in flight
   as one bot's job runner runs), while the reminders fire; its lag is measured the same way;
7. RSS of the bots process (VmRSS at the end, VmHWM peak; target ≤ 150 MB for all bots).

Prints the command, p50/p95 of both lags and their ratios (target ≤ 1.2× the floor's), the
idle CPU of each phase, RSS, and the CPU of the bots process and Synapse while the reminders
fired. A quick run: `--sessions 100 --clubs 10 --minutes 2 --idle 20`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet

from bench.bots import pct, rss_mb, verdict
from bench.jobs import cpu_seconds
from bench.shapes import synapse_harness
from clubs.bots.host import BotAccount
from clubs.core.clock import SLICE_S
from clubs.core.e2ee import E2eeClient
from clubs.core.http import MatrixHttp, RoomId, path
from clubs.core.namespace import CLUB_SESSIONS
from clubs.core.secrets import MASTER_KEY_ENV, Vault
from clubs.core.txn import txn_id
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.schedhost import SchedProcess
from tests.integration.bots.support import CS, create_bot_account, managed_room, new_network

ADMIN = ("_synapse", "admin", "v1")
TARGET_RATIO = 1.2
TARGET_IDLE_CPU = 1.0
TARGET_RSS_MB = 150.0
ZONES = (
    "Europe/Berlin",
    "Asia/Almaty",
    "Asia/Tbilisi",
    "Asia/Yerevan",
    "Europe/Belgrade",
    "Europe/Vilnius",
)
OFFSETS_S = (24 * 3600, 15 * 60)
"""The scheduling bot's default reminder offsets (`clubs.bots.scheduling.core`)."""
AHEAD_S = 26 * 3600
"""The first start is this far ahead of setup: both reminders are still to come when the bot
announces (it skips a reminder already past)."""
FLOOR_CONCURRENCY = 16
"""As many sends in flight as one bot's job runner runs (`clubs.bots.jobs.CONCURRENCY`)."""
SEEN_S = SLICE_S + 5
"""After a clock step, how long until the runner has surely looked at the clock again."""
GOING = "a1"
POLL_RESPONSE = "org.matrix.msc3381.poll.response"


@dataclass(frozen=True)
class Club:
    key: str
    zone: str
    announcements: str
    sessions: str
    member: E2eeClient
    dm: str
    """The DM room the member opened with the bot."""
    floor_dm: str
    """The floor client's DM room with the member."""


@dataclass(frozen=True)
class Reminder:
    due: float
    """Bot time (UTC epoch seconds on the bot's clock)."""
    club: Club


async def run(args: argparse.Namespace) -> int:
    os.environ.setdefault(MASTER_KEY_ENV, Fernet.generate_key().decode())
    with tempfile.TemporaryDirectory(prefix="clubs-bench-scheduling-") as tmp:
        async with synapse_harness("sqlite", Path(tmp) / "synapse") as synapse:
            return await measure(synapse, Path(tmp), args)


def db_rows(var: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    db = var / "bots" / "bots.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as c:
        return list(c.execute(sql, params))


def count(var: Path, sql: str, params: Sequence[Any] = ()) -> int:
    ((n,),) = db_rows(var, sql, params)
    return int(n)


def sent_events(var: Path) -> dict[str, str]:
    """txn id -> event id of every send the bots' outboxes recorded as sent."""
    rows = db_rows(var, "SELECT txn_id, event_id FROM outbox WHERE state = 'sent'")
    return {str(txn): str(event) for txn, event in rows}


async def settled(var: Path, bp: SchedProcess, within: float) -> None:
    """Until no job is due or running and the outbox has sent everything."""

    async def quiet() -> bool:
        busy = count(
            var,
            "SELECT COUNT(*) FROM jobs WHERE state = 'running' "
            "OR (state = 'pending' AND not_before <= ?)",
            [bp.now()],
        )
        return busy == 0 and count(var, "SELECT COUNT(*) FROM outbox WHERE state != 'sent'") == 0

    await eventually(quiet, within=within, interval=1)


async def stamps_of(synapse: SynapseHarness, rooms: Sequence[str]) -> dict[str, int]:
    """event id -> origin_server_ts of every event in the rooms (the admin API: no joining)."""
    stamps: dict[str, int] = {}
    for room in rooms:
        token: str | None = None
        while True:
            query = {"dir": "b", "limit": "1000"} | ({"from": token} if token else {})
            page = await synapse.admin.http.get(
                path(*ADMIN, "rooms", room, "messages"), query=query
            )
            for event in page.get("chunk", []):
                stamps[str(event["event_id"])] = int(event["origin_server_ts"])
            token = page.get("end")
            if not token or not page.get("chunk"):
                break
    return stamps


async def new_client(synapse: SynapseHarness, var: Path, name: str) -> E2eeClient:
    """A cross-signed device of a new account (as the bots' own), its vault in `var`."""
    account = await create_bot_account(synapse, var, name)
    return await E2eeClient.open(
        synapse.url, Vault(var / "secrets" / "vault"), account.user_id, var / "store"
    )


async def direct_room(http: MatrixHttp, invite: str) -> str:
    """An encrypted DM room as Element makes one (and as the bot's own DMs are)."""
    created = await http.post(
        path(*CS, "createRoom"),
        {
            "preset": "trusted_private_chat",
            "is_direct": True,
            "invite": [invite],
            "room_version": "12",
            "initial_state": [
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                },
                {
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": {"history_visibility": "invited"},
                },
            ],
        },
    )
    return str(created["room_id"])


def declared(n: int, first: float, window_s: float, zone: str) -> list[dict[str, Any]]:
    """The club's `n` sessions as the provisioner publishes them: the i-th starts at
    `first + window_s * i / n`, as the club's wall time on the minute (so every club has
    sessions at the same instants, and many reminders are due at once, as at 19:00)."""
    tz = ZoneInfo(zone)
    return [
        {
            "key": f"s{i}",
            "title": f"Session {i}",
            "kind": "lecture",
            "start": datetime.fromtimestamp(first + window_s * i / n, tz).strftime(
                "%Y-%m-%dT%H:%M"
            ),
            "rrule": None,
            "duration_s": 3600,
            "online": True,
            "capacity": None,
            "materials": None,
        }
        for i in range(n)
    ]


async def measure(synapse: SynapseHarness, tmp: Path, args: argparse.Namespace) -> int:
    var = tmp / "var"
    network = new_network()
    t = time.monotonic()
    bots = [
        await create_bot_account(synapse, var, name)
        for name in ("scheduling", "moderation", "checkins")
    ]
    bot = bots[0].user_id
    floor = await new_client(synapse, tmp / "floor", "floor")
    members = [
        await new_client(synapse, tmp / f"member{i}", f"member{i}") for i in range(args.clubs)
    ]
    print(
        f"setup: {len(bots)} bots, the floor and {args.clubs} members in "
        f"{time.monotonic() - t:.1f} s"
    )
    bp = SchedProcess(
        synapse.url,
        var,
        [BotAccount(a.name, a.user_id) for a in bots],
        network,
        synapse.admin.user_id,
        sync_timeout_ms=30_000,  # as in production: long-poll, INFO logs
        verbosity=0,
        clock_slice=SLICE_S,  # wakes up as SystemClock does
    )
    syncs: list[asyncio.Task[None]] = []
    try:
        await bp.start()
        await bp.wait_ready(within=120)
        t = time.monotonic()
        clubs = await make_clubs(synapse, network, bot, floor, members)
        print(
            f"setup: {len(clubs)} clubs (announcements, sessions, 2 DM rooms) in "
            f"{time.monotonic() - t:.1f} s"
        )

        async def sync_forever(client: E2eeClient) -> None:
            since = (await client.sync(None, timeout_ms=0)).next_batch
            while True:
                since = (await client.sync(since, timeout_ms=30_000)).next_batch

        for client in (floor, *members):
            await client.sync(None, timeout_ms=0)
        syncs = [asyncio.create_task(sync_forever(floor))]

        # 1. The sessions, declared; the bot announces each.
        t = time.monotonic()
        first = time.time() + AHEAD_S
        window = args.minutes * 60.0
        per_club = [
            args.sessions // len(clubs) + (i < args.sessions % len(clubs))
            for i in range(len(clubs))
        ]
        plan: list[tuple[float, Club]] = []
        for club, n in zip(clubs, per_club, strict=True):
            entries = declared(n, first, window, club.zone)
            await synapse.admin.http.put(
                path(*CS, "rooms", club.sessions, "state", CLUB_SESSIONS, ""), {"sessions": entries}
            )
            for e in entries:
                start = datetime.strptime(e["start"], "%Y-%m-%dT%H:%M").replace(
                    tzinfo=ZoneInfo(club.zone)
                )
                plan.append((start.timestamp(), club))

        async def announced() -> bool:
            found = count(
                var, "SELECT COUNT(*) FROM sched_occurrences WHERE poll_event IS NOT NULL"
            )
            return found == int(args.sessions)

        await eventually(announced, within=3600, interval=1)
        print(
            f"setup: {args.sessions} sessions announced (announcement, pin, poll) in "
            f"{time.monotonic() - t:.1f} s"
        )

        # 2. Every member says "going" in each of their club's polls.
        t = time.monotonic()
        await vote_all(var, clubs)

        async def counted() -> bool:
            return count(var, "SELECT COUNT(*) FROM poll_votes") >= int(args.sessions)

        await eventually(counted, within=3600, interval=1)
        await settled(var, bp, within=3600)
        print(f"setup: {args.sessions} votes sent and counted in {time.monotonic() - t:.1f} s")

        assert bp.proc is not None
        pid = bp.proc.pid
        assert synapse.hs.process is not None
        hs_pid = synapse.hs.process.pid
        reminders = sorted(
            (Reminder(start - offset, club) for start, club in plan for offset in OFFSETS_S),
            key=lambda r: r.due,
        )
        waves = [
            [r for r in reminders if r.due < first - 12 * 3600],
            [r for r in reminders if r.due >= first - 12 * 3600],
        ]
        idle: list[float] = []
        fired: list[tuple[float, float, float]] = []
        floor_sent: list[tuple[float, str]] = []
        offsets: list[float] = []
        sent: dict[str, str] = {}
        for wave in waves:
            # 3.–4. Step the clock to shortly before the wave; idle while nothing is due.
            start_bot = wave[0].due
            bp.jump_to(start_bot - SEEN_S - args.idle)
            offset = bp.now() - time.time()
            offsets.append(offset)
            await asyncio.sleep(SEEN_S - 1)
            cpu0, wall0 = cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(max(1.0, start_bot - offset - time.time() - 1))
            idle.append((cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0) * 100)
            print(f"idle: {idle[-1]:.2f} % CPU over {time.monotonic() - wall0:.0f} s, nothing due")
            # 5.–6. The wave fires; the floor sends at the same instants.
            wall, cpu = time.monotonic(), (cpu_seconds(pid), cpu_seconds(hs_pid))
            floor_sent += await floor_wave(floor, wave, offset)
            await settled(var, bp, within=600)
            spent = time.monotonic() - wall
            fired.append((spent, cpu_seconds(pid) - cpu[0], cpu_seconds(hs_pid) - cpu[1]))
            sent |= sent_events(var)  # read now: sent rows are pruned a day after
        rss, hwm = rss_mb(pid)
        await bp.stop()
    finally:
        for task in syncs:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in (floor, *members):
            await client.close()
        await bp.kill()
        if os.environ.get("BENCH_KEEP_LOG"):
            Path(os.environ["BENCH_KEEP_LOG"]).write_text(bp.log_text())

    # The reminders' events: txn ids from their jobs (`JobContext.txn("dm", member)`).
    jobs = db_rows(var, "SELECT job_id, due_at, state FROM jobs WHERE kind = 'remind'")
    member_ids = [str(c.member.user_id) for c in clubs]
    reminder_events: list[tuple[float, str]] = []
    for job_id, due, state in jobs:
        found = [
            sent[txn]
            for m in member_ids
            if (txn := txn_id("m.room.message", "scheduling", "job", str(job_id), "dm", m)) in sent
        ]
        assert state == "done", (job_id, state)
        assert len(found) == 1, (job_id, found)
        reminder_events.append((float(due), found[0]))
    assert len(reminder_events) == len(reminders), (len(reminder_events), len(reminders))
    stamps = await stamps_of(synapse, [c.dm for c in clubs] + [c.floor_dm for c in clubs])
    cut = first - 12 * 3600
    lag = [
        stamps[e] / 1e3 - (due - (offsets[0] if due < cut else offsets[1]))
        for due, e in reminder_events
    ]
    floor_lag = [stamps[e] / 1e3 - real_due for real_due, e in floor_sent]
    r50, r95 = statistics.median(lag), pct(lag, 0.95)
    f50, f95 = statistics.median(floor_lag), pct(floor_lag, 0.95)
    ms = "p50 {:6.0f} ms  p95 {:6.0f} ms  max {:6.0f} ms"
    print("command: .venv/bin/python bench/scheduling.py " + shlex.join(sys.argv[1:]))
    print(
        f"sessions: {args.sessions} across {len(clubs)} clubs, 2 reminders each "
        f"({len(lag)} DMs), starts over {args.minutes:g} min on the minute (two waves of "
        f"{len(waves[0])}, up to {max_per_instant(reminders)} due at one instant)"
    )
    print("reminder lag (due -> stamped): " + ms.format(r50 * 1e3, r95 * 1e3, max(lag) * 1e3))
    print("floor lag (due -> stamped):    " + ms.format(f50 * 1e3, f95 * 1e3, max(floor_lag) * 1e3))
    print(
        f"p50 ratio = {r50 / f50:.2f} (target <= {TARGET_RATIO}) "
        f"{verdict(r50 / f50 <= TARGET_RATIO)}"
    )
    print(
        f"p95 ratio = {r95 / f95:.2f} (target <= {TARGET_RATIO}) "
        f"{verdict(r95 / f95 <= TARGET_RATIO)}"
    )
    for name, value in zip(("before the 24 h wave", "before the 15 min wave"), idle, strict=True):
        print(
            f"idle CPU of the bots process {name}: {value:.2f} % (target < "
            f"{TARGET_IDLE_CPU} %) {verdict(value < TARGET_IDLE_CPU)}"
        )
    print(
        f"bots process RSS (3 bots): {rss:.0f} MB at the end, {hwm:.0f} MB peak (target <= "
        f"{TARGET_RSS_MB:.0f} MB) {verdict(hwm <= TARGET_RSS_MB)}"
    )
    for name, (spent, bots_cpu, hs_cpu) in zip(("24 h", "15 min"), fired, strict=True):
        print(
            f"CPU while the {name} wave fired ({spent:.0f} s on {os.cpu_count()} cores): "
            f"bots process {bots_cpu / spent:.0%} of a core, Synapse {hs_cpu / spent:.0%}"
        )
    return 0


def max_per_instant(reminders: Sequence[Reminder]) -> int:
    per: dict[float, int] = {}
    for r in reminders:
        per[r.due] = per.get(r.due, 0) + 1
    return max(per.values())


async def make_clubs(
    synapse: SynapseHarness,
    network: str,
    bot: str,
    floor: E2eeClient,
    members: Sequence[E2eeClient],
) -> list[Club]:
    """Each club's announcements and sessions rooms (bot invited, power 50; member joined), the
    member's DM with the bot (the bot accepts it: they share a managed room) and the floor's DM
    with the member."""
    clubs = []
    floor_http = MatrixHttp(synapse.url, floor.session.access_token)
    try:
        for i, member in enumerate(members):
            zone = ZONES[i % len(ZONES)]
            rooms = []
            for key in ("announcements", "sessions"):
                room = await managed_room(
                    synapse,
                    network,
                    invite=[bot, str(member.user_id)],
                    key=key,
                    club=f"c{i}",
                    powers={bot: 50},
                    settings={"time_zone": zone, "name": f"Club {i}"},
                )
                await member.join(RoomId(room))
                rooms.append(room)
            async with MatrixHttp(synapse.url, member.session.access_token) as http:

                async def bot_in(rooms: list[str] = rooms) -> bool:
                    return await joined(synapse, bot, rooms)

                await eventually(bot_in, within=120, interval=0.5)
                dm = await direct_room(http, bot)
                floor_dm = await direct_room(floor_http, str(member.user_id))
                await http.post(path(*CS, "join", floor_dm), {})
            clubs.append(Club(f"c{i}", zone, rooms[0], rooms[1], member, dm, floor_dm))

        async def dms_joined() -> bool:
            return await joined(synapse, bot, [c.dm for c in clubs])

        await eventually(dms_joined, within=300, interval=1)
    finally:
        await floor_http.close()
    return clubs


async def joined(synapse: SynapseHarness, user: str, rooms: Sequence[str]) -> bool:
    found = await synapse.admin.http.get(path(*ADMIN, "users", user, "joined_rooms"))
    return set(rooms) <= set(found.get("joined_rooms", []))


async def vote_all(var: Path, clubs: Sequence[Club]) -> None:
    """Each member answers "going" in every poll of their club, as Element sends a vote."""
    polls = db_rows(var, "SELECT poll_room, poll_event FROM sched_occurrences")
    by_room: dict[str, list[str]] = {}
    for room, poll in polls:
        by_room.setdefault(str(room), []).append(str(poll))

    async def vote(club: Club) -> None:
        await club.member.sync(None, timeout_ms=0)
        for poll in by_room.get(club.sessions, []):
            await club.member.send(
                RoomId(club.sessions),
                POLL_RESPONSE,
                {
                    "m.relates_to": {"rel_type": "m.reference", "event_id": poll},
                    POLL_RESPONSE: {"answers": [GOING]},
                },
                txn_id=f"vote-{poll}",
            )

    gate = asyncio.Semaphore(8)

    async def gated(club: Club) -> None:
        async with gate:
            await vote(club)

    await asyncio.gather(*(gated(c) for c in clubs))


async def floor_wave(
    floor: E2eeClient, wave: Sequence[Reminder], offset: float
) -> list[tuple[float, str]]:
    """One encrypted message per reminder, at its due instant (real time), into the floor's DM
    with the member; (real due time, event id) of each."""
    gate = asyncio.Semaphore(FLOOR_CONCURRENCY)
    sent: list[tuple[float, str]] = []

    async def send(i: int, real_due: float, room: str) -> None:
        async with gate:
            event_id = await floor.send(
                RoomId(room),
                "m.room.message",
                {"msgtype": "m.notice", "body": f"floor {i}", "m.mentions": {}},
                txn_id=f"floor-{real_due}-{i}",
            )
        sent.append((real_due, str(event_id)))

    tasks: list[asyncio.Task[None]] = []
    for i, r in enumerate(wave):
        real_due = r.due - offset
        delay = real_due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i, real_due, r.club.floor_dm)))
    await asyncio.gather(*tasks)
    return sent


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--clubs", type=int, default=50)
    p.add_argument("--minutes", type=float, default=10.0, help="the starts are spread over this")
    p.add_argument("--idle", type=float, default=60.0, help="seconds of each idle CPU phase")
    args = p.parse_args()
    if args.sessions > 100 * args.clubs:
        p.error("at most 100 declared sessions per club")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
