"""Benchmark: a minute in which every member's weekly check-in falls due, against the same
Synapse's raw send floor.

    .venv/bin/python bench/checkins.py [--members 2000] [--clubs 50] [--idle 60]

One fresh Synapse (SQLite, loopback). The shipped check-ins bot runs in a process of its own
(`tests/integration/bots/schedproc.py`: `open_runtimes` with the shipped factory, its own
cross-signed device, production long-poll, INFO logs, `SystemClock`'s 60 s slice). `--clubs`
clubs (in six zones, half Russian, half English) each have their managed encrypted support room
with the bot; `--members` members are spread over them. Each member is a real account (created
and given a token with the admin API: no password, no login) that joined its club's support
room and opened an encrypted DM with the bot, as an Element user who writes to it; the bot
accepted it (the runtime's DM rule: they share a managed room).

The opt-ins are seeded, not typed: with the bot process stopped, each member is opted in
through the bot's own store (`CheckinStore.opt_in`, the call `!checkin on` makes) for the weekly
slot whose wall time in their club's zone is one and the same instant (Thursday 19:00 in
Berlin is 22:00 in Tbilisi, 23:00 in Almaty), and that check-in is scheduled as the command
schedules it (`checkin:<token>@<slot>#v<version>` in the bot's job store). Typing 2,000 `!checkin
on` commands needs 2,000 E2EE member clients, which this machine cannot set up in a benchmark's
time; members therefore have a device without keys (an admin-issued token), so the bot's and
the floor's room keys go to no member device alike. Every DM still goes through real Synapse
into each member's real DM room.

1. floor: a bare cross-signed E2eeClient (no runtime, no database) with its own encrypted DM
   room with each member sends what a check-in is, three messages per member one after the
   other, as many members in flight as the bot's job runner runs; the time until its last
   message is stamped (and its last first message) is the floor;
2. idle before: the bot's clock (`schedproc.ShiftedClock`) is stepped to shortly before the
   minute; once the runner has seen it, the CPU time of the bots process over `--idle` seconds
   while every check-in waits (target < 1 %);
3. the minute: every check-in falls due at once; each is the intro, the mood poll and
   question 1 in the member's DM. From the due instant to the homeserver's stamp
   (`origin_server_ts`, read with the admin API) of the last check-in's last event, and of the
   last intro (every member reached), against the floor's (target ≤ 1.2×);
4. idle after: the CPU of the bots process over `--idle` seconds between check-ins (the next
   week's check-ins and a reminder per member pending; target < 1 %);
5. RSS of the bots process (VmRSS at the end, VmHWM peak).

A quick run: `--members 200 --clubs 10 --idle 20`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet

from bench.bots import pct, rss_mb, verdict
from bench.jobs import cpu_seconds
from bench.scheduling import ZONES, count, direct_room, joined, new_client, settled
from bench.shapes import synapse_harness
from clubs.bots.checkins.bot import CHECKIN, CHECKIN_GRACE_S, job_key
from clubs.bots.checkins.box import Box
from clubs.bots.checkins.store import CheckinStore
from clubs.bots.checkins.week import WeeklyPlan, next_slot
from clubs.bots.host import BotAccount
from clubs.bots.jobs import JobStore
from clubs.core.clock import SLICE_S
from clubs.core.db import Database
from clubs.core.e2ee import E2eeClient
from clubs.core.http import MatrixHttp, RoomId, path
from clubs.core.sealed import Sealer
from clubs.core.secrets import MASTER_KEY_ENV, Vault
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.schedhost import SchedProcess
from tests.integration.bots.support import CS, create_bot_account, managed_room, new_network

ADMIN = ("_synapse", "admin", "v1")
TARGET_RATIO = 1.2
TARGET_IDLE_CPU = 1.0
FLOOR_CONCURRENCY = 16
"""As many members in flight as the bot's job runner runs (`clubs.bots.jobs.CONCURRENCY`)."""
CHECKIN_EVENTS = 3
"""A check-in's events in the DM: the intro, the mood poll, question 1."""
SETUP_CONCURRENCY = 8
SEEN_S = SLICE_S + 5
"""After a clock step, how long until the runner has surely looked at the clock again."""
BERLIN = ZoneInfo("Europe/Berlin")


@dataclass(frozen=True)
class Member:
    user_id: str
    club: int
    http: MatrixHttp
    dm: str
    """The DM room the member opened with the bot."""
    floor_dm: str
    """The floor client's DM room with the member."""


async def run(args: argparse.Namespace) -> int:
    os.environ.setdefault(MASTER_KEY_ENV, Fernet.generate_key().decode())
    with tempfile.TemporaryDirectory(prefix="clubs-bench-checkins-") as tmp:
        async with synapse_harness("sqlite", Path(tmp) / "synapse") as synapse:
            return await measure(synapse, Path(tmp), args)


async def gathered(calls: Sequence[Callable[[], Awaitable[None]]], n: int) -> None:
    gate = asyncio.Semaphore(n)

    async def one(call: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one(c) for c in calls))


def the_minute(now: float) -> float:
    """The next Thursday 19:00 in Berlin at least two days ahead: every check-in's instant."""
    day = datetime.fromtimestamp(now, BERLIN) + timedelta(days=2)
    day += timedelta(days=(3 - day.weekday()) % 7)
    return day.replace(hour=19, minute=0, second=0, microsecond=0).timestamp()


async def measure(synapse: SynapseHarness, tmp: Path, args: argparse.Namespace) -> int:
    var = tmp / "var"
    network = new_network()
    account = await create_bot_account(synapse, var, "checkins")
    bot = account.user_id
    floor = await new_client(synapse, tmp / "floor", "floor")
    bp = SchedProcess(
        synapse.url,
        var,
        [BotAccount(account.name, bot)],
        network,
        synapse.admin.user_id,
        sync_timeout_ms=30_000,  # as in production: long-poll, INFO logs
        verbosity=0,
        clock_slice=SLICE_S,  # wakes up as SystemClock does
    )
    members: list[Member] = []
    sync: asyncio.Task[None] | None = None
    try:
        await bp.start()
        await bp.wait_ready(within=120)
        t = time.monotonic()
        zones = [ZONES[i % len(ZONES)] for i in range(args.clubs)]
        support = [
            await managed_room(
                synapse,
                network,
                invite=[bot],
                key="support",
                club=f"c{i}",
                language="ru" if i % 2 == 0 else "en",
                settings={"time_zone": zones[i], "name": f"Club {i}"},
            )
            for i in range(args.clubs)
        ]

        async def in_support() -> bool:
            return await joined(synapse, bot, support)

        await eventually(in_support, within=300, interval=1)
        print(
            f"setup: {args.clubs} support rooms, the bot in each, in {time.monotonic() - t:.1f} s"
        )

        t = time.monotonic()
        members = await make_members(synapse, bot, floor, support, args.members)
        print(
            f"setup: {len(members)} members (support room, DM with the bot, DM with the floor) "
            f"in {time.monotonic() - t:.1f} s"
        )
        t = time.monotonic()

        async def dms_accepted() -> bool:
            return await joined(synapse, bot, [m.dm for m in members])

        await eventually(dms_accepted, within=3600, interval=2)

        async def dms_recorded() -> bool:
            n = count(var, "SELECT COUNT(*) FROM dm_rooms")
            return n >= len(members)

        await eventually(dms_recorded, within=600, interval=1)
        await bp.stop()
        print(f"setup: the bot accepted and recorded every DM in {time.monotonic() - t:.1f} s")

        # The opt-ins, through the bot's own store, while its process is stopped.
        t = time.monotonic()
        due = the_minute(time.time())
        await seed_opt_ins(var, members, zones, due)
        print(f"setup: {len(members)} opt-ins seeded in {time.monotonic() - t:.1f} s")

        # 1. The floor: three messages per member into its own DM with each, at full speed.
        for m in members:
            await m.http.close()
        await floor.sync(None, timeout_ms=0)

        async def sync_forever(client: E2eeClient) -> None:
            since = (await client.sync(None, timeout_ms=0)).next_batch
            while True:
                since = (await client.sync(since, timeout_ms=30_000)).next_batch

        sync = asyncio.create_task(sync_forever(floor))
        floor_start = time.time()
        floor_sent = await floor_run(floor, members)
        print(f"floor: {len(floor_sent)} messages sent in {time.time() - floor_start:.1f} s")

        # 2. Idle before the minute.
        await bp.start()
        await bp.wait_ready(within=600)
        assert bp.proc is not None
        pid = bp.proc.pid
        assert synapse.hs.process is not None
        hs_pid = synapse.hs.process.pid
        bp.jump_to(due - SEEN_S - args.idle)
        offset = bp.now() - time.time()
        await asyncio.sleep(SEEN_S - 1)
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(max(1.0, due - offset - time.time() - 1))
        idle_before = (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0) * 100
        print(f"idle: {idle_before:.2f} % CPU over {time.monotonic() - wall0:.0f} s, nothing due")

        # 3. The minute.
        real_due = due - offset
        await asyncio.sleep(max(0.0, real_due - time.time()))
        wall, cpu = time.monotonic(), (cpu_seconds(pid), cpu_seconds(hs_pid))

        async def all_sent() -> bool:
            n = count(var, "SELECT COUNT(*) FROM ci_checkins WHERE poll_id IS NOT NULL")
            return n >= len(members)

        await eventually(all_sent, within=3600, interval=0.5)
        await settled(var, bp, within=600)
        fire_s = time.monotonic() - wall
        fire_cpu = (cpu_seconds(pid) - cpu[0], cpu_seconds(hs_pid) - cpu[1])
        checkins = count(var, "SELECT COUNT(*) FROM ci_checkins")

        # 4. Idle between check-ins.
        await asyncio.sleep(SEEN_S)
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(args.idle)
        idle_after = (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0) * 100
        pending = count(var, "SELECT COUNT(*) FROM jobs WHERE state = 'pending'")
        print(f"idle: {idle_after:.2f} % CPU over {time.monotonic() - wall0:.0f} s, {pending} jobs")
        rss, hwm = rss_mb(pid)
        await bp.stop()
    finally:
        if sync is not None:
            sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sync
        for m in members:
            await m.http.close()
        await floor.close()
        await bp.kill()
        if os.environ.get("BENCH_KEEP_LOG"):
            Path(os.environ["BENCH_KEEP_LOG"]).write_text(bp.log_text())

    # What the server stamped: the bot's events in each DM after the due instant.
    bot_stamps = await sender_stamps(synapse, [m.dm for m in members], bot, since=real_due)
    problems = []
    shapes = sorted({len(s) for s in bot_stamps})
    if shapes != [CHECKIN_EVENTS]:
        problems.append(f"the bot's events per DM: {shapes}, not {CHECKIN_EVENTS}")
    if checkins != len(members):
        problems.append(f"{checkins} check-in rows for {len(members)} members")
    floor_stamps = await sender_stamps(
        synapse, [m.floor_dm for m in members], str(floor.user_id), since=floor_start
    )
    if {len(s) for s in floor_stamps} != {CHECKIN_EVENTS}:
        problems.append("the floor's events per DM differ")
    bot_last = max(max(s) for s in bot_stamps) / 1e3 - real_due
    bot_first = max(min(s) for s in bot_stamps) / 1e3 - real_due
    bot_each = [(max(s) / 1e3 - real_due) for s in bot_stamps]
    floor_last = max(max(s) for s in floor_stamps) / 1e3 - floor_start
    floor_first = max(min(s) for s in floor_stamps) / 1e3 - floor_start
    ratio = bot_last / floor_last
    print("command: .venv/bin/python bench/checkins.py " + shlex.join(sys.argv[1:]))
    print(
        f"check-ins: {len(members)} members across {args.clubs} clubs in {len(set(zones))} "
        f"zones, all due at {datetime.fromtimestamp(due, BERLIN):%a %H:%M} Berlin; "
        f"{CHECKIN_EVENTS * len(members)} DMs each side"
    )
    print(
        f"due -> last check-in complete (stamped): {bot_last:6.1f} s; floor, start -> its last "
        f"message: {floor_last:6.1f} s; ratio = {ratio:.2f} (target <= {TARGET_RATIO}) "
        f"{verdict(ratio <= TARGET_RATIO)}"
    )
    print(
        f"due -> every member reached (last intro): {bot_first:6.1f} s; floor's last first "
        f"message: {floor_first:6.1f} s; ratio = {bot_first / floor_first:.2f}"
    )
    print(
        f"per member, due -> check-in complete: p50 {statistics.median(bot_each):.1f} s, "
        f"p95 {pct(bot_each, 0.95):.1f} s"
    )
    for name, value in (("before the minute", idle_before), ("between check-ins", idle_after)):
        print(
            f"idle CPU of the bots process {name}: {value:.2f} % (target < {TARGET_IDLE_CPU} %) "
            f"{verdict(value < TARGET_IDLE_CPU)}"
        )
    print(f"bots process RSS (check-ins bot): {rss:.0f} MB at the end, {hwm:.0f} MB peak")
    print(
        f"CPU while the check-ins went out ({fire_s:.0f} s to settle on {os.cpu_count()} cores): "
        f"bots process {fire_cpu[0] / fire_s:.0%} of a core "
        f"({fire_cpu[0] / len(members) * 1e3:.1f} ms per check-in), "
        f"Synapse {fire_cpu[1] / fire_s:.0%}"
    )
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


async def make_members(
    synapse: SynapseHarness, bot: str, floor: E2eeClient, support: Sequence[str], n: int
) -> list[Member]:
    """`n` members, round-robin over the clubs: an account without a password and an
    admin-issued token, joined to its club's support room, with a DM it opened with the bot
    and one the floor opened with it."""
    floor_http = MatrixHttp(synapse.url, floor.session.access_token)
    out: list[Member | None] = [None] * n
    admin = synapse.admin.http

    async def make(i: int) -> None:
        user_id = f"@m{i}-{os.urandom(3).hex()}:{synapse.server_name}"
        await admin.put(path("_synapse", "admin", "v2", "users", user_id), {"displayname": f"M{i}"})
        token = (await admin.post(path(*ADMIN, "users", user_id, "login"), {}))["access_token"]
        http = MatrixHttp(synapse.url, str(token))
        club = i % len(support)
        # The provisioner's invite and the member's join, in one admin call.
        await admin.post(path(*ADMIN, "join", support[club]), {"user_id": user_id})
        dm = await direct_room(http, bot)
        floor_dm = await direct_room(floor_http, user_id)
        await http.post(path(*CS, "join", floor_dm), {})
        out[i] = Member(user_id, club, http, dm, floor_dm)

    try:
        await gathered([functools.partial(make, i) for i in range(n)], SETUP_CONCURRENCY)
    finally:
        await floor_http.close()
    return [m for m in out if m is not None]


async def seed_opt_ins(
    var: Path, members: Sequence[Member], zones: Sequence[str], due: float
) -> None:
    """Each member opted in (`CheckinStore.opt_in`, as `!checkin on` does) for the weekly slot
    of their club's zone that falls at `due`, and that check-in scheduled as the command
    schedules it (`CheckinsBot._schedule`)."""
    db = await Database.open(var / "bots" / "bots.db")
    try:
        vault = Vault(var / "secrets" / "vault")
        store = await CheckinStore.open(db, "checkins", Box.from_vault(vault))
        jobs = await JobStore.open(db, "checkins", Sealer.from_vault(vault))
        now = time.time()
        for m in members:
            zone = zones[m.club]
            local = datetime.fromtimestamp(due, ZoneInfo(zone))
            plan = WeeklyPlan(frozenset({local.weekday()}), local.hour, local.minute, zone)
            lang = "ru" if m.club % 2 == 0 else "en"
            member = await store.opt_in(m.user_id, f"c{m.club}", lang, plan, now)
            slot = next_slot(member.plan, now)
            assert slot.at == due, (slot, due)
            await jobs.add(
                CHECKIN,
                job_key(member, slot.key),
                slot.at,
                {"token": member.token, "slot": slot.key, "v": member.version},
                grace_s=CHECKIN_GRACE_S,
                now=now,
            )
    finally:
        await db.close()


async def floor_run(floor: E2eeClient, members: Sequence[Member]) -> list[str]:
    """Three encrypted messages per member, one after the other, into the floor's DM with them
    (`FLOOR_CONCURRENCY` members in flight); the event ids."""
    sent: list[str] = []

    async def checkin(i: int, m: Member) -> None:
        for k in range(CHECKIN_EVENTS):
            event_id = await floor.send(
                RoomId(m.floor_dm),
                "m.room.message",
                {"msgtype": "m.notice", "body": f"floor {i}.{k}", "m.mentions": {}},
                txn_id=f"floor-{i}-{k}",
            )
            sent.append(str(event_id))

    await gathered(
        [functools.partial(checkin, i, m) for i, m in enumerate(members)], FLOOR_CONCURRENCY
    )
    return sent


async def sender_stamps(
    synapse: SynapseHarness, rooms: Sequence[str], sender: str, *, since: float
) -> list[list[int]]:
    """Per room, the `origin_server_ts` of the sender's message events stamped after `since`
    (the admin API: no joining)."""
    out: list[list[int]] = [[] for _ in rooms]

    async def read(i: int) -> None:
        token: str | None = None
        while True:
            query = {"dir": "b", "limit": "100"} | ({"from": token} if token else {})
            page = await synapse.admin.http.get(
                path(*ADMIN, "rooms", rooms[i], "messages"), query=query
            )
            out[i] += [
                int(e["origin_server_ts"])
                for e in page.get("chunk", [])
                if e.get("sender") == sender
                and e.get("type") in ("m.room.encrypted", "m.room.message")
                and int(e["origin_server_ts"]) >= since * 1e3
            ]
            token = page.get("end")
            if not token or not page.get("chunk"):
                return

    await gathered([functools.partial(read, i) for i in range(len(rooms))], SETUP_CONCURRENCY)
    return out


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--members", type=int, default=2000)
    p.add_argument("--clubs", type=int, default=50)
    p.add_argument("--idle", type=float, default=60.0, help="seconds of each idle CPU phase")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
