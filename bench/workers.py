"""Kill drill of the worker stack: each Synapse process, Redis and PostgreSQL killed in turn
while members send commands; nothing lost, every command answered exactly once.

    .venv/bin/python bench/workers.py [--rate 1] [--members 2] [--bots 2]
        [--kill worker1,redis,persister1,fedsender1,main,postgres] [--gap 15] [--seed N]
    .venv/bin/python bench/workers.py --single [--kill postgres] …
    .venv/bin/python bench/workers.py --latency [--sends 200] [--cycles 50]

The stack `CLUBS_WORKERS=1` runs (`clubs.workersrun.worker_stack`: PostgreSQL from the wheel,
Valkey on a Unix socket, main, event persister, client worker, federation sender, the front),
and the bots in a process of their own under `clubs.supervisor` (`tests/integration/bots/
botproc.py`: the production composition, `!echo` answers), each bot in one managed encrypted
room with every member on the independent cross-signed-only client (mautrix). Members send
`!echo` commands at `--rate` per second for the whole drill, retrying under one transaction id
while the front answers 502. The processes named by `--kill` are SIGKILLed one after the other,
`--gap` seconds apart, each once the previous one is back; the stack's supervisor restarts them.

`postgres` SIGKILLs the database server's postmaster only, as an OOM kill would: its backends
and helper processes notice and exit by themselves (the drill prints how long they took), and
the watchdog `clubs homeserver run` runs (`clubs.core.postgres.keep_running`) starts the server
again, which runs crash recovery first. `--single` runs the same drill against one Synapse
process on PostgreSQL (`CLUBS_DB=postgres` without workers), where only `postgres` can be killed.

Prints, per kill, how long until the process was back (ready again; for PostgreSQL: taking
connections after its crash recovery), and from the members'
decrypted timelines: lost (no answer), duplicated (more than one answer), undecryptable (target
0 / 0 / 0); the command -> answer p50/p95 for commands sent while a process was down or within 5 s
of its return, against those sent when all ran. Exit status 1 if a command was lost or duplicated.

`--latency` measures instead what workers cost a member on this machine: sequential sends and
send → incremental `/sync`, on one Synapse on SQLite (the floor), one on PostgreSQL, and the
worker stack through the front and straight to the client worker, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet

from bench.bots import pct, verdict
from bench.chaos import Command, Member, answers, bot_rooms, send_at, wait_answered, warm_up
from clubs.core.http import MatrixHttp, path
from clubs.core.postgres import EmbeddedPostgres, adopt_orphans, kept_running
from clubs.core.secrets import MASTER_KEY_ENV
from clubs.core.workers import launches
from clubs.supervisor import ChildSpec, Supervisor
from clubs.workersrun import Stack
from tests.harness import SynapseHarness, postgres_cluster, synapse_on, synapse_workers_on
from tests.integration.bots.botproc import READY_FILE
from tests.integration.bots.support import (
    CS,
    BotProcess,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer

AFFECTED_AFTER_S = 5.0
SETTLE_S = 10.0
BACK_WITHIN_S = 120.0
KILL_WORKERS = "worker1,redis,persister1,fedsender1,main,postgres"


@dataclass
class Targets:
    """What the drill can kill: the worker stack's processes (none with `--single`) and the
    PostgreSQL server."""

    stack: Stack | None
    pg: EmbeddedPostgres
    synapse: SynapseHarness

    def synapse_pids(self) -> dict[str, int | None]:
        """Every Synapse process (and Redis) by name: to see which ones died on their own."""
        if self.stack is None:
            proc = self.synapse.hs.process
            return {"synapse": proc.pid if proc is not None and proc.poll() is None else None}
        return {launch.name: self.stack.pid(launch.name) for launch in launches(self.stack.main)}

    def pid(self, name: str) -> int | None:
        if name == "postgres":
            return self.pg.postmaster_pid()
        return self.stack.pid(name) if self.stack is not None else None

    async def back(self, name: str, old: int) -> None:
        """Until `name` runs again (another process than `old`) and is ready."""
        deadline = time.monotonic() + BACK_WITHIN_S
        while self.pid(name) in (None, old) or (name == "postgres" and not _takes(self.pg)):
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not come back within {BACK_WITHIN_S:.0f} s")
            await asyncio.sleep(0.05)
        if name != "postgres" and self.stack is not None:
            await self.stack.supervisor.wait_ready(name)


def _takes(pg: EmbeddedPostgres) -> bool:
    """The server's pid file says it takes connections (crash recovery done)."""
    try:
        return (pg.data_dir / "postmaster.pid").read_text().splitlines()[7].strip() == "ready"
    except (OSError, IndexError):
        return False


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (a postmaster's backends and helpers)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


@contextlib.asynccontextmanager
async def shape(
    base: Path, pg: EmbeddedPostgres, single: bool
) -> AsyncIterator[tuple[SynapseHarness, Stack | None]]:
    if single:
        async with synapse_on(base / "synapse", pg) as synapse:
            yield synapse, None
    else:
        async with synapse_workers_on(base / "synapse", pg) as (synapse, stack):
            yield synapse, stack


async def run(args: argparse.Namespace) -> int:
    os.environ.setdefault(MASTER_KEY_ENV, Fernet.generate_key().decode())
    base = Path(tempfile.mkdtemp(prefix="clubs-bw-"))  # short: the Redis socket's path
    try:
        # As under `clubs homeserver run`: a dead PostgreSQL is started again by its watchdog.
        adopt_orphans()
        with postgres_cluster() as pg:
            async with kept_running(pg), shape(base, pg, args.single) as (synapse, stack):
                return await drill(synapse, Targets(stack, pg, synapse), base / "var", args)
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def drill(
    synapse: SynapseHarness, targets: Targets, var: Path, args: argparse.Namespace
) -> int:
    rng = random.Random(args.seed)
    network, accounts, members, rooms = await bot_rooms(synapse, var, args.bots, args.members)
    victims = [v for v in args.kill.split(",") if v]
    duration = args.gap * (len(victims) + 1)
    commands = [
        Command(
            n,
            rng.randrange(args.members),
            rooms[(i := rng.randrange(len(rooms)))],
            accounts[i].user_id,
            n / args.rate,
        )
        for n in range(int(duration * args.rate))
    ]
    bp = BotProcess(
        synapse.url, var, accounts, network, synapse.admin.user_id, sync_timeout_ms=30_000
    )
    bp.var_dir.mkdir(parents=True, exist_ok=True)
    downs: list[tuple[str, float, float]] = []
    notes: dict[float, str] = {}
    with bp.log_file.open("ab") as log_out:
        async with (
            Supervisor(var / "run", stdout=log_out.fileno()) as sup,
            contextlib.AsyncExitStack() as exits,
        ):
            argv = ["sh", "-c", 'exec "$@" 2>&1', "sh", *bp.argv()]
            sup.start(ChildSpec(name="bots", argv=argv, ready_file=var / READY_FILE))
            if not await sup.wait_ready("bots"):
                raise SystemExit(f"the bots process did not start; see {bp.log_file}")
            peers = [await exits.enter_async_context(mautrix_peer(m, synapse.url)) for m in members]
            clients = [Member(p) for p in peers]
            await warm_up(clients, accounts, rooms)
            pids_before = targets.synapse_pids()
            started = time.time()
            for c in commands:
                c.due += started
            faults = asyncio.create_task(
                kill_in_turn(targets, victims, started, args.gap, downs, notes)
            )
            await asyncio.gather(*(send_at(clients[c.member], c) for c in commands))
            await faults
            await wait_answered(peers, commands, time.time())
            await asyncio.sleep(SETTLE_S)
            pids_after = targets.synapse_pids()
    # A process whose pid changed though it was not killed died of a kill of another one.
    on_their_own = sorted(
        name
        for name, pid in pids_before.items()
        if name not in victims and pids_after.get(name) != pid
    )
    return report(args, peers, commands, downs, started, notes, on_their_own)


async def kill_in_turn(
    targets: Targets,
    victims: list[str],
    started: float,
    gap: float,
    downs: list[tuple[str, float, float]],
    notes: dict[float, str],
) -> None:
    watchers: list[asyncio.Task[None]] = []
    for n, name in enumerate(victims, start=1):
        await asyncio.sleep(max(0.0, started + n * gap - time.time()))
        pid = targets.pid(name)
        if pid is None:
            raise SystemExit(f"{name} is not running: no such process in this shape")
        orphans = _children(pid) if name == "postgres" else set()
        os.kill(pid, signal.SIGKILL)
        killed = time.time()
        if orphans:
            watchers.append(asyncio.create_task(_orphans_gone(orphans, killed, notes)))
        await targets.back(name, pid)
        downs.append((name, killed, time.time()))
    await asyncio.gather(*watchers)


async def _orphans_gone(pids: set[int], killed: float, notes: dict[float, str]) -> None:
    """When the killed postmaster's backends and helpers have all exited by themselves."""
    deadline = time.monotonic() + BACK_WITHIN_S
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    left = sum(1 for p in pids if _alive(p))
    notes[killed] = f"  its {len(pids)} backends and helpers exited by themselves within " + (
        f"{time.time() - killed:.2f} s" + (f" ({left} still running)" if left else "")
    )


def report(
    args: argparse.Namespace,
    peers: list[MautrixPeer],
    commands: list[Command],
    downs: list[tuple[str, float, float]],
    started: float,
    notes: dict[float, str],
    on_their_own: list[str],
) -> int:
    counts = Counter(len(answers(peers, c)) for c in commands)
    lost = counts[0]
    duplicated = sum(n for k, n in counts.items() if k > 1)
    ids = {c.event_id for c in commands}
    undecryptable = sum(1 for p in peers for e in p.undecryptable if e not in ids)
    latency: dict[str, list[float]] = {}
    for c in commands:
        got = answers(peers, c)
        if not got:
            continue
        hit = [n for n, k, b in downs if k <= c.due <= b + AFFECTED_AFTER_S]
        kind = f"{hit[0]} down" if hit else "all running"
        latency.setdefault(kind, []).append(min(r.arrived_at for r in got) - c.due)
    print(
        f"run: seed {args.seed}; {len(commands)} commands at {args.rate}/s from {args.members} "
        f"members to {args.bots} bots (one encrypted room each), "
        + ("one Synapse process on PostgreSQL" if args.single else "through the front")
    )
    for name, killed, back in downs:
        print(
            f"killed {name:<10} at {killed - started:5.1f} s: back (ready) after "
            f"{back - killed:.2f} s"
        )
        if killed in notes:
            print(notes[killed])
    print(
        "Synapse processes (and Redis) that died without being killed: "
        + (", ".join(on_their_own) if on_their_own else "none")
    )
    ok = lost == 0 and duplicated == 0 and undecryptable == 0
    print(
        f"lost {lost}, duplicated {duplicated}, undecryptable {undecryptable} "
        f"(target 0 / 0 / 0) {verdict(ok)}"
    )
    for kind, s in sorted(latency.items(), key=lambda kv: kv[0] != "all running"):
        print(
            f"command -> answer, {kind:<18} n={len(s):3d}: p50 {statistics.median(s) * 1e3:6.0f}"
            f" ms  p95 {pct(s, 0.95) * 1e3:6.0f} ms"
        )
    return 0 if ok else 1


async def latency(args: argparse.Namespace) -> int:
    """`--latency`: one member's sequential sends and send → incremental sync, on one Synapse on
    SQLite, one on PostgreSQL, and the worker stack through the front and straight to the client
    worker (the front's own cost), one after the other in the same run."""
    rows: list[tuple[str, list[float], list[float]]] = []
    base = Path(tempfile.mkdtemp(prefix="clubs-bl-"))
    try:
        async with synapse_on(base / "sqlite") as single:
            rows.append(("SQLite, one process", *await timings(single.url, single, args)))
        with postgres_cluster() as pg:
            async with synapse_on(base / "pg", pg) as single:
                rows.append(("PostgreSQL, one process", *await timings(single.url, single, args)))
        with postgres_cluster() as pg:  # a database of its own
            async with synapse_workers_on(base / "w", pg) as (synapse, stack):
                rows.append(
                    ("workers, through the front", *await timings(stack.url, synapse, args))
                )
                direct = f"http://127.0.0.1:{stack.main.ports.workers['worker1']}"
                rows.append(("workers, to worker1 itself", *await timings(direct, synapse, args)))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    floor_send = statistics.median(rows[0][1])
    floor_sync = statistics.median(rows[0][2])
    print(f"{args.sends} sequential sends, then {args.cycles} x (send, incremental /sync):")
    for name, sends, cycles in rows:
        print(
            f"  {name:<28} send p50 {statistics.median(sends) * 1e3:5.1f} ms p95 "
            f"{pct(sends, 0.95) * 1e3:5.1f} ms ({statistics.median(sends) / floor_send:.2f}x)   "
            f"send+sync p50 {statistics.median(cycles) * 1e3:5.1f} ms "
            f"({statistics.median(cycles) / floor_sync:.2f}x)"
        )
    return 0


async def timings(
    url: str, synapse: SynapseHarness, args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    user = await synapse.new_user("lat")
    async with MatrixHttp(url, user.session.access_token) as http:
        room = (await http.post(path(*CS, "createRoom"), {"name": "lat"}))["room_id"]
        since = (await http.get(path(*CS, "sync"), query={"timeout": "0"}))["next_batch"]
        sends = []
        for n in range(args.sends):
            t = time.perf_counter()
            await http.put(
                path(*CS, "rooms", room, "send", "m.room.message", f"s{n}"),
                {"msgtype": "m.text", "body": "x"},
            )
            sends.append(time.perf_counter() - t)
        cycles = []
        for n in range(args.cycles):
            t = time.perf_counter()
            sent = await http.put(
                path(*CS, "rooms", room, "send", "m.room.message", f"c{n}"),
                {"msgtype": "m.text", "body": "y"},
            )
            while True:  # until the event is in the sync (the persister may be a hop away)
                batch = await http.get(path(*CS, "sync"), query={"since": since, "timeout": "1000"})
                since = batch["next_batch"]
                timeline = batch.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {})
                if any(e["event_id"] == sent["event_id"] for e in timeline.get("events", [])):
                    break
            cycles.append(time.perf_counter() - t)
    return sends, cycles


def main() -> int:
    logging.basicConfig(level=logging.CRITICAL, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("clubs.core.postgres").setLevel(logging.WARNING)  # the watchdog's steps
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--rate", type=float, default=1.0, help="commands per second, all members")
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--bots", type=int, default=2)
    p.add_argument("--kill", default=None, help=f"default: {KILL_WORKERS}; --single: postgres")
    p.add_argument(
        "--single", action="store_true", help="one Synapse process on PostgreSQL, no workers"
    )
    p.add_argument("--gap", type=float, default=15.0, help="seconds between kills")
    p.add_argument("--latency", action="store_true", help="measure latencies instead (no kills)")
    p.add_argument("--sends", type=int, default=200)
    p.add_argument("--cycles", type=int, default=50)
    args = p.parse_args()
    if args.kill is None:
        args.kill = "postgres" if args.single else KILL_WORKERS
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1_000_000)
    return asyncio.run(latency(args) if args.latency else run(args))


if __name__ == "__main__":
    sys.exit(main())
