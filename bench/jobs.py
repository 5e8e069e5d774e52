"""Benchmark: durable jobs firing on time, against the same Synapse's raw send floor.

    .venv/bin/python bench/jobs.py [--jobs 10000] [--rooms 50] [--minutes 10] [--bots 4]
                                   [--idle 60]

One fresh Synapse (SQLite, loopback); the bots run in one process of their own
(`tests/integration/bots/botproc.py --bot jobs`: `open_runtimes`, each bot on its own
cross-signed device, production long-poll, INFO logs), every bot joined to `--rooms` managed
encrypted rooms. `--jobs` reminder jobs (`jobbot.JobBot`, one encrypted notice each) are written
into the bots' database while the process is stopped, spread over the bots and rooms, due at
random instants over `--minutes` minutes that start after the idle phase:

1. idle: the CPU time of the bots process over `--idle` seconds while every job waits in the
   future and nothing is due (target < 1 %: no wake-ups besides the long-poll syncs);
2. lag: from each job's due time to its event's `origin_server_ts` (the homeserver's stamp), from
   the outbox's event ids and `/messages`;
3. floor: bare cross-signed E2eeClients (no runtime, no database), one per bot, in the same
   rooms: each sends one encrypted message at each of its bot's due instants, in the same room,
   while the jobs fire (as many clients as bots, so a floor client carries what one bot does);
   their lag is measured the same way;
4. RSS of the bots process (VmRSS at the end, VmHWM peak);
5. CPU while the jobs fire: the bots process, Synapse and the floor clients' process (this
   one), as a share of a core and per job / message. Synapse's main process is one Python
   thread: when it nears a whole core, its queue sets both lags and the p95 ratio swings from
   run to run (see the README for measured runs).

Prints the command, p50/p95 of both lags, their ratio (target p95 ≤ 1.2× the floor's), idle CPU
and RSS. A quick run: `--jobs 1000 --minutes 1 --idle 20`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet

from bench.bots import join_all, pct, rss_mb, verdict
from clubs.bots.jobs import JobStore, job_id_of
from clubs.core.db import Database
from clubs.core.e2ee import E2eeClient
from clubs.core.homeserver import Homeserver, Settings
from clubs.core.http import RoomId, path
from clubs.core.sealed import Sealer
from clubs.core.secrets import MASTER_KEY_ENV, Vault
from clubs.core.txn import txn_id
from tests.harness import SynapseHarness, bootstrap_admin, eventually
from tests.integration.bots.jobbot import KIND
from tests.integration.bots.support import (
    CS,
    BotProcess,
    create_bot_account,
    managed_room,
    new_network,
)

TARGET_RATIO = 1.2
TARGET_IDLE_CPU = 1.0
FLOOR_CONCURRENCY = 16
"""Per floor client: as many sends in flight as one bot's job runner allows
(`clubs.bots.jobs.CONCURRENCY`)."""
START_MARGIN_S = 20.0
"""Between writing the jobs and the idle phase: the bots process starts and syncs."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args: argparse.Namespace) -> int:
    os.environ.setdefault(MASTER_KEY_ENV, Fernet.generate_key().decode())
    with tempfile.TemporaryDirectory(prefix="clubs-bench-jobs-") as tmp:
        hs = Homeserver(Settings(data_dir=Path(tmp) / "synapse", server_name="bench.local", port=0))
        hs.start()
        try:
            synapse = SynapseHarness(hs, await bootstrap_admin(hs))
            try:
                return await measure(synapse, Path(tmp) / "var", args)
            finally:
                await synapse.admin.http.close()
                await synapse.close()
        finally:
            hs.stop()


async def server_stamps(synapse: SynapseHarness, rooms: Sequence[str]) -> dict[str, int]:
    """event id -> origin_server_ts of every event in the rooms (read as the rooms' creator)."""
    stamps: dict[str, int] = {}
    for room in rooms:
        token: str | None = None
        while True:
            query = {"dir": "b", "limit": "1000"} | ({"from": token} if token else {})
            page = await synapse.admin.http.get(path(*CS, "rooms", room, "messages"), query=query)
            for event in page.get("chunk", []):
                stamps[str(event["event_id"])] = int(event["origin_server_ts"])
            token = page.get("end")
            if not token or not page.get("chunk"):
                break
    return stamps


def sent_events(db_file: Path) -> dict[str, str]:
    """txn id -> event id of every send the bots' outboxes recorded as sent."""
    with contextlib.closing(sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT txn_id, event_id FROM outbox WHERE state = 'sent'")
        return {str(t): str(e) for t, e in rows}


async def measure(synapse: SynapseHarness, var: Path, args: argparse.Namespace) -> int:
    network = new_network()
    names = ["moderation", "facilitation", "scheduling", "checkins"][: args.bots]
    accounts = [await create_bot_account(synapse, var, name) for name in names]
    bots = [a.user_id for a in accounts]
    floor_vars = [var / f"floor{i}" for i in range(len(names))]
    floor_accounts = [
        await create_bot_account(synapse, fv, f"floor{i}") for i, fv in enumerate(floor_vars)
    ]
    floor_ids = [a.user_id for a in floor_accounts]
    t = time.monotonic()
    rooms = [
        await managed_room(synapse, network, invite=[*bots, *floor_ids], key=f"r{i}")
        for i in range(args.rooms)
    ]
    print(f"setup: {args.rooms} managed rooms created in {time.monotonic() - t:.1f} s")

    bp = BotProcess(
        synapse.url,
        var,
        accounts,
        network,
        synapse.admin.user_id,
        sync_timeout_ms=30_000,  # as in production: long-poll, INFO logs
        verbosity=0,
        bot="jobs",
    )
    floors = [
        await E2eeClient.open(
            synapse.url, Vault(fv / "secrets" / "vault"), fa.user_id, fv / "store"
        )
        for fv, fa in zip(floor_vars, floor_accounts, strict=True)
    ]
    floor_syncs: list[asyncio.Task[None]] = []
    try:
        t = time.monotonic()
        await bp.start()
        await bp.wait_ready(within=600)
        await join_all(synapse, bots, rooms)
        for room in rooms:
            for floor in floors:
                await floor.join(RoomId(room))
        print(
            f"setup: {args.bots} bots and {len(floors)} floor clients joined in "
            f"{time.monotonic() - t:.1f} s"
        )
        await bp.stop()

        # The jobs, written while the process is stopped (as if scheduled before a restart).
        rng = random.Random(7)
        base = time.time() + START_MARGIN_S + args.idle
        window = args.minutes * 60.0
        dues = sorted(base + rng.uniform(0, window) for _ in range(args.jobs))
        plan = [(due, names[i % len(names)], rooms[i % len(rooms)]) for i, due in enumerate(dues)]
        db = await Database.open(var / "bots" / "bots.db")
        sealer = Sealer.from_vault(Vault(var / "secrets" / "vault"))
        stores = {name: await JobStore.open(db, name, sealer) for name in names}
        now = time.time()
        for i, (due, name, room) in enumerate(plan):
            await stores[name].add(
                KIND, f"b{i}", due, {"room": room, "label": f"bench {i}"}, grace_s=None, now=now
            )
        await db.close()
        print(f"setup: {args.jobs} jobs written, due over {args.minutes} min")

        async def sync_forever(floor: E2eeClient) -> None:
            since = (await floor.sync(None, timeout_ms=0)).next_batch
            while True:
                since = (await floor.sync(since, timeout_ms=30_000)).next_batch

        floor_syncs = [asyncio.create_task(sync_forever(f)) for f in floors]

        await bp.start()
        await bp.wait_ready(within=120)
        assert bp.proc is not None
        pid = bp.proc.pid
        idle_from = max(time.time(), base - args.idle)
        await asyncio.sleep(idle_from - time.time())
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(max(1.0, base - time.time() - 0.5))
        idle_cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0) * 100
        print(f"idle: {idle_cpu:.2f} % CPU over {time.monotonic() - wall0:.0f} s, nothing due")

        assert synapse.hs.process is not None
        hs_pid = synapse.hs.process.pid
        fire_wall = time.monotonic()
        fire_cpu = (cpu_seconds(pid), cpu_seconds(hs_pid), time.process_time())
        floor_sent: list[tuple[float, str]] = []
        gates = [asyncio.Semaphore(FLOOR_CONCURRENCY) for _ in floors]

        async def floor_send(i: int, due: float, name: str, room: str) -> None:
            k = names.index(name)
            async with gates[k]:
                event_id = await floors[k].send(
                    RoomId(room),
                    "m.room.message",
                    {"msgtype": "m.notice", "body": f"floor {i}", "m.mentions": {}},
                    txn_id=f"floor-{i}",
                )
            floor_sent.append((due, str(event_id)))

        sends: list[asyncio.Task[None]] = []
        for i, (due, name, room) in enumerate(plan):
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sends.append(asyncio.create_task(floor_send(i, due, name, room)))
        await asyncio.gather(*sends)

        wanted = {
            txn_id("m.room.message", name, "job", job_id_of(KIND, f"b{i}"), "notice"): due
            for i, (due, name, _) in enumerate(plan)
        }
        db_file = var / "bots" / "bots.db"

        async def all_sent() -> bool:
            return len(wanted.keys() & sent_events(db_file).keys()) == len(wanted)

        await eventually(all_sent, within=120, interval=1)
        fire_s = time.monotonic() - fire_wall
        spent = (
            cpu_seconds(pid) - fire_cpu[0],
            cpu_seconds(hs_pid) - fire_cpu[1],
            time.process_time() - fire_cpu[2],
        )
        rss, hwm = rss_mb(pid)
        await bp.stop()
    finally:
        for task in floor_syncs:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for floor in floors:
            await floor.close()
        await bp.kill()
        if os.environ.get("BENCH_KEEP_LOG"):
            Path(os.environ["BENCH_KEEP_LOG"]).write_text(bp.log_text())

    sent = sent_events(db_file)
    stamps = await server_stamps(synapse, rooms)
    job_lag = [stamps[sent[txn]] / 1e3 - due for txn, due in wanted.items()]
    floor_lag = [stamps[e] / 1e3 - due for due, e in floor_sent]
    events = len(stamps)  # every event the rooms hold
    j50, j95 = statistics.median(job_lag), pct(job_lag, 0.95)
    f50, f95 = statistics.median(floor_lag), pct(floor_lag, 0.95)
    ratio = j95 / f95
    ms = "p50 {:6.0f} ms  p95 {:6.0f} ms  max {:6.0f} ms"
    print("command: .venv/bin/python bench/jobs.py " + shlex.join(sys.argv[1:]))
    print(
        f"jobs: {args.jobs} across {args.rooms} rooms and {args.bots} bots, due over "
        f"{args.minutes} min ({args.jobs / window:.1f}/s); {len(job_lag)} notices, "
        f"{len(floor_lag)} floor sends, {events} events in the rooms"
    )
    print("job lag (due -> stamped):   " + ms.format(j50 * 1e3, j95 * 1e3, max(job_lag) * 1e3))
    print("floor lag (due -> stamped): " + ms.format(f50 * 1e3, f95 * 1e3, max(floor_lag) * 1e3))
    print(f"p95 ratio = {ratio:.2f} (target <= {TARGET_RATIO}) {verdict(ratio <= TARGET_RATIO)}")
    print(f"p50 ratio = {j50 / f50:.2f}")
    print(
        f"idle CPU with {args.jobs} future jobs: {idle_cpu:.2f} % "
        f"(target < {TARGET_IDLE_CPU} %) {verdict(idle_cpu < TARGET_IDLE_CPU)}"
    )
    print(f"bot process RSS: {rss:.0f} MB at the end, {hwm:.0f} MB peak")
    bots_cpu, hs_cpu, floor_cpu = spent
    print(
        f"CPU while the jobs fired ({fire_s:.0f} s on {os.cpu_count()} cores): bots process "
        f"{bots_cpu / fire_s:.0%} of a core ({bots_cpu / args.jobs * 1e3:.1f} ms per job), "
        f"Synapse {hs_cpu / fire_s:.0%} ({hs_cpu / (2 * args.jobs) * 1e3:.1f} ms per message), "
        f"the floor clients' process {floor_cpu / fire_s:.0%} "
        f"({floor_cpu / args.jobs * 1e3:.1f} ms per send)"
    )
    return 0


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--rooms", type=int, default=50)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--bots", type=int, default=4)
    p.add_argument("--idle", type=float, default=60.0, help="seconds of the idle CPU phase")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
