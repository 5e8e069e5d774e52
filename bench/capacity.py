"""Capacity model of the worker stack: CPU-seconds per syncing member, per sent message, per
/sync answer, per delivery and per bot command for each process, fitted from phases of known
load, then checked against the largest message rate the stack sustains when pinned to 1 and to
2 cores. The model and how to use it: docs/capacity.md; its arithmetic: clubs/capacity.py.

    .venv/bin/python bench/capacity.py [--quick] [--members 60] [--room-size 20]
        [--rates 2,6] [--bot-rate 1] [--phase-s 30] [--step-s 20] [--cores 1,2]
        [--headroom 0.9] [--p95-s 0.5] [--edge-s 2.0] [--no-check] [--no-wait]

The stack is the one `CLUBS_WORKERS=1 make up` runs (`tests.harness.synapse_workers_on`):
PostgreSQL from the wheel, Valkey, main, persister1, worker1, fedsender1 and the front, which
runs inside this process. The bots run in a process of their own under `clubs.supervisor`
(`tests/integration/bots/botproc.py`, the production composition: two bots, each in one managed
encrypted room with two members). The load comes from a separate process (this file with
`--driver`): `--members` real accounts, each a plain HTTP client long-polling `/sync` at once
after every answer, every member in one room of 2 ("small") and one of `--room-size` ("large"),
sending `m.room.encrypted` events shaped like a short Megolm message (the server cannot tell
them from real ones; nobody decrypts them) at random times (n uniform arrivals in the phase: a
Poisson process). Bot commands come from independent cross-signed E2EE clients (mautrix).

CPU is user+system time from /proc/<pid>/stat, summed over each process's tree (PostgreSQL: the
postmaster and every backend, reaped ones included), for: postgres, redis, main, persister1,
worker1, fedsender1, front (this process's own time only), bots, and the load process.

Phases (each `--phase-s`, CPU counted from its start to its last delivery):
  A0 idle, nobody syncing; A1 idle, every member syncing;
  B1..B4 messages at each of `--rates` into the small rooms, then into the large rooms;
  B5 as B4 with the clients pausing 1 s after each answer (answers carry several messages);
  C1 chat messages in the bots' encrypted rooms (each decrypted by one bot);
  C2 `!echo` commands answered by the bots.
Per process, least squares over A0..B5 of CPU-s = base*T + per_member*members*T
+ per_event*events [+ per_answer*answers] [+ per_delivery*deliveries], where answers are the
/sync answers carrying new messages; the three decompositions' residuals are printed and the
smallest that fits is kept. The bots' cost per message and everyone's per command come from C1
and C2 against that fit (two points each: no residual).

The check (`clubs.capacity.max_rate`, headroom `--headroom`, one answer per delivery) pins the
stack with sched_setaffinity on every thread of every process (what `taskset -a -p` does; new
PostgreSQL backends inherit it) to `--cores` cores; the load process gets the other core for 1
core, and shares the 2 cores for 2 (its measured cost is then part of the prediction). It offers
rising rates into the large rooms for `--step-s` each. A step is sustained when 95 % of the
offered sends completed in time, 99 % of the deliveries arrived, and the send -> seen-by-each-
member p95 is at most `--p95-s`; the measured maximum is the last step before the first one that
is not. PASS when it is within 25 % of the prediction. The ramp goes on while the p95 stays under
`--edge-s` (Synapse then keeps up by batching, slowly), and that rate is printed too. Before the
check it waits (up to 10 min) for the 1-minute load average to drop below 1.0.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clubs.capacity import TOTAL, Cost, Load, cores_needed, demand, least_squares, max_rate

CS = ("_matrix", "client", "v3")
CLK = os.sysconf("SC_CLK_TCK")
TARGET = 0.25
GROUPS = ("postgres", "redis", "main", "persister1", "worker1", "fedsender1", "front", "bots")
DRIVER = "load"
SINGLE_CORE = {g: g != "postgres" for g in (*GROUPS, DRIVER)}
STEP_FACTORS = (0.3, 0.45, 0.6, 0.75, 0.9, 1.05, 1.2, 1.4, 1.7, 2.0, 2.5)
SYNC_FILTER = json.dumps(
    {"room": {"timeline": {"limit": 200}, "state": {"lazy_load_members": True}}},
    separators=(",", ":"),
)


# --- CPU time from /proc ------------------------------------------------------------------------


def processes() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU-s of the process and of its reaped children)."""
    out: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime
        out[int(entry)] = (int(rest[1]), ticks / CLK)
    return out


def own_cpu(pid: int) -> float:
    """CPU-s of the process itself, all its threads, not its children."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK


def tree(root: int, procs: dict[int, tuple[int, float]]) -> list[int]:
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            found.append(pid)
            todo.extend(kids.get(pid, ()))
    return found


@dataclass
class Groups:
    """Each measured group's root pid (the front: this process, without its children)."""

    roots: dict[str, Callable[[], int | None]]

    def cpu(self) -> dict[str, float]:
        procs = processes()
        out = {}
        for name, root in self.roots.items():
            pid = root()
            if name == "front":
                out[name] = own_cpu(os.getpid())
            elif pid is not None:
                out[name] = sum(procs[p][1] for p in tree(pid, procs))
        return out

    def pin(self, names: Sequence[str], cpus: set[int]) -> int:
        """Every thread of every process of `names` onto `cpus` (taskset -a -p); how many."""
        procs = processes()
        n = 0
        for name in names:
            pid = self.roots[name]()
            if pid is None:
                continue
            for p in [os.getpid()] if name == "front" else tree(pid, procs):
                with contextlib.suppress(OSError):
                    for tid in os.listdir(f"/proc/{p}/task"):
                        with contextlib.suppress(OSError):
                            os.sched_setaffinity(int(tid), cpus)
                            n += 1
        return n


def cpus_busy(cpus: set[int]) -> float:
    """CPU-s the machine spent busy on `cpus` since boot (/proc/stat: all but idle and iowait)."""
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *vals = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                ticks = [int(v) for v in vals[:8]]
                busy += sum(ticks) - ticks[3] - ticks[4]
    return busy / CLK


def postmaster(data_dir: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    return None


# --- the load process (--driver) ----------------------------------------------------------------


def fake_megolm() -> dict[str, str]:
    """A short text message's m.room.encrypted content: same shape and size, random bytes."""

    def b64(n: int) -> str:
        return base64.b64encode(secrets.token_bytes(n)).decode().rstrip("=")

    return {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": b64(240),
        "sender_key": b64(32),
        "session_id": b64(32),
        "device_id": "CAPACITY",
    }


def pct(xs: Sequence[float], q: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


class Driver:
    """The members: plain HTTP clients syncing and sending; the bots' members (mautrix)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import aiohttp

        self.spec = spec
        self.url = spec["url"]
        self.tokens: list[str] = spec["tokens"]
        self.rooms: dict[str, list[tuple[str, list[int]]]] = spec["rooms"]
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
        )
        self.seen: dict[str, list[float]] = {}
        self.responses = 0
        """/sync answers that carried at least one of our messages."""
        self.pause = 0.0
        """Seconds a client waits after an answer before its next /sync (0: at once)."""
        self.syncing: list[asyncio.Task[None]] = []
        self.peers: list[Any] = []
        self.members: list[Any] = []
        self.exits = contextlib.AsyncExitStack()

    def _auth(self, i: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[i]}"}

    async def _sync(self, i: int, ready: asyncio.Event) -> None:
        since = None
        url = f"{self.url}/_matrix/client/v3/sync"
        while True:
            query = {"filter": SYNC_FILTER, "timeout": "30000" if since else "0"}
            if since:
                query["since"] = since
            try:
                async with self.http.get(url, params=query, headers=self._auth(i)) as resp:
                    body = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(f"/sync answered {resp.status}")
            except (TimeoutError, OSError, RuntimeError, ValueError):
                await asyncio.sleep(0.5)
                continue
            now = time.monotonic()
            since = body["next_batch"]
            ours = 0
            for room in body.get("rooms", {}).get("join", {}).values():
                for ev in room.get("timeline", {}).get("events", []):
                    if ev.get("type") == "m.room.encrypted":
                        self.seen.setdefault(ev["event_id"], []).append(now)
                        ours += 1
            ready.set()
            if ours:
                self.responses += 1
                if self.pause:
                    await asyncio.sleep(self.pause)

    async def op_hello(self) -> dict[str, Any]:
        return {"pid": os.getpid()}

    async def op_sync(self) -> dict[str, Any]:
        readies = [asyncio.Event() for _ in self.tokens]
        for i, ready in enumerate(readies):
            self.syncing.append(asyncio.create_task(self._sync(i, ready)))
        await asyncio.gather(*(r.wait() for r in readies))
        return {"syncing": len(self.tokens)}

    async def op_send(
        self,
        rate: float,
        duration: float,
        kind: str,
        grace: float,
        pause: float = 0.0,
        seed: int = 0,
    ) -> dict[str, Any]:
        rooms = self.rooms[kind]
        n = max(1, round(rate * duration))
        self.seen.clear()
        self.responses, self.pause = 0, pause
        sent: dict[str, tuple[float, int]] = {}
        completed: list[float] = []
        failures = 0
        sem = asyncio.Semaphore(256)
        start = time.monotonic() + 0.2
        rng = random.Random(seed)  # arrivals at random (a Poisson process given n), not a metronome
        dues = sorted(start + rng.uniform(0.0, duration) for _ in range(n))

        async def one(k: int) -> None:
            nonlocal failures
            due = dues[k]
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            room, who = rooms[k % len(rooms)]
            sender = who[(k // len(rooms)) % len(who)]
            txn = f"cap{secrets.token_hex(6)}"
            url = f"{self.url}/_matrix/client/v3/rooms/{room}/send/m.room.encrypted/{txn}"
            async with sem:
                for _ in range(3):
                    try:
                        async with self.http.put(
                            url, json=fake_megolm(), headers=self._auth(sender)
                        ) as resp:
                            body = await resp.json()
                            if resp.status == 200:
                                sent[body["event_id"]] = (due, len(who))
                                completed.append(time.monotonic())
                                return
                    except (TimeoutError, OSError, ValueError):
                        pass
                    await asyncio.sleep(0.5)
                failures += 1

        await asyncio.gather(*(one(k) for k in range(n)))
        expected = sum(m for _, m in sent.values())
        deadline = start + duration + grace
        while time.monotonic() < deadline:
            got = sum(min(len(self.seen.get(e, ())), m) for e, (_, m) in sent.items())
            if got >= expected:
                break
            await asyncio.sleep(0.1)
        self.pause = 0.0
        lat: list[float] = []
        for event_id, (due, m) in sent.items():
            times = sorted(self.seen.get(event_id, ()))[:m]
            lat += [t - due for t in times] + [math.inf] * (m - len(times))
        on_time = sum(1 for t in completed if t <= start + duration + 1.0)
        delivered = sum(1 for x in lat if x != math.inf)
        return {
            "offered": n,
            "sent": len(sent),
            "failures": failures,
            "achieved": on_time / duration,
            "expected": expected,
            "delivered": delivered,
            "responses": self.responses,
            "p50": pct(lat, 0.5),
            "p95": pct(lat, 0.95),
        }

    async def op_peers(self) -> dict[str, Any]:
        from bench.chaos import Member, warm_up
        from clubs.bots.host import BotAccount
        from clubs.core.admin import Session
        from clubs.core.http import DeviceId, MatrixHttp, UserId
        from tests.harness import Account
        from tests.mautrix_client import mautrix_peer

        bots = self.spec["bots"]
        for p in self.spec["peers"]:
            session = Session(UserId(p["user_id"]), DeviceId(p["device_id"]), p["token"])
            http = MatrixHttp(self.url, p["token"])
            self.exits.push_async_callback(http.close)
            account = Account(session, p["password"], http)
            self.peers.append(await self.exits.enter_async_context(mautrix_peer(account, self.url)))
        self.members = [Member(p) for p in self.peers]
        accounts = [BotAccount(f"b{i}", UserId(b)) for i, b in enumerate(bots)]
        await warm_up(self.members, accounts, self.spec["bot_rooms"])
        return {"peers": len(self.peers)}

    async def op_bots(self, rate: float, duration: float, commands: bool) -> dict[str, Any]:
        from bench.chaos import Command, answers, wait_answered

        rooms, bots = self.spec["bot_rooms"], self.spec["bots"]
        n = max(1, round(rate * duration))
        start = time.time() + 0.2
        cmds = [
            Command(10_000 + k, k % len(self.members), rooms[k % len(rooms)], bots[k % len(bots)],
                    start + k / rate)
            for k in range(n)
        ]  # fmt: skip

        async def one(c: Command) -> None:
            await asyncio.sleep(max(0.0, c.due - time.time()))
            body = f"!echo c{c.n}" if commands else f"hello {c.n}"
            await self.members[c.member].send(c, body)

        await asyncio.gather(*(one(c) for c in cmds))
        if not commands:
            await asyncio.sleep(3.0)  # the bots decrypt and drop them
            return {"messages": n}
        await wait_answered(self.peers, cmds, time.time())
        got = [min(r.arrived_at for r in a) - c.due for c in cmds if (a := answers(self.peers, c))]
        return {"commands": n, "answered": len(got), "p50": pct(got, 0.5), "p95": pct(got, 0.95)}

    async def close(self) -> None:
        for t in self.syncing:
            t.cancel()
        await asyncio.gather(*self.syncing, return_exceptions=True)
        await self.exits.aclose()
        await self.http.close()


async def drive() -> int:
    """`--driver`: the spec on stdin's first line, then one JSON operation per line; one JSON
    answer per line on stdout. Tokens travel through the pipe only, never a file."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    driver = Driver(json.loads(await reader.readline()))
    try:
        while line := await reader.readline():
            op = json.loads(line)
            name = op.pop("op")
            result = await getattr(driver, f"op_{name}")(**op)
            print(json.dumps(result), flush=True)
    finally:
        await driver.close()
    return 0


class DriverProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def call(self, **op: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(op) + "\n").encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the load process died during {op['op']}; see its log")
        result: dict[str, Any] = json.loads(line)
        return result


# --- phases and the fit -------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float
    members: int
    events: float = 0.0
    responses: float = 0.0
    deliveries: float = 0.0
    chat: float = 0.0
    commands: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    load: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)

    def cores(self, group: str) -> float:
        return self.cpu.get(group, 0.0) / self.seconds


async def measure(
    name: str, groups: Groups, members: int, work: Callable[[], Any], seconds: float = 0.0
) -> Phase:
    before = groups.cpu()
    t = time.monotonic()
    result = await work() if seconds == 0.0 else await asyncio.sleep(seconds)
    after = groups.cpu()
    phase = Phase(name, time.monotonic() - t, members, result=result or {})
    phase.cpu = {g: after[g] - before.get(g, after[g]) for g in after}
    phase.load = os.getloadavg()[0]
    print(
        f"  {name:<4} {phase.seconds:5.1f} s  "
        + "  ".join(f"{g} {phase.cores(g) * 100:4.1f}%" for g in after)
        + f"  | load {phase.load:.2f}",
        flush=True,
    )
    return phase


VARIANTS = {
    "per event": 3,
    "per event + per delivery": 4,
    "per event + per /sync answer + per delivery": 5,
}


def regressors(p: Phase, terms: int) -> list[float]:
    row = [p.seconds, p.members * p.seconds, p.events]
    if terms == 4:
        row.append(p.deliveries)
    elif terms == 5:
        row += [p.responses, p.deliveries]
    return row


def fit(phases: Sequence[Phase], group: str, terms: int) -> tuple[list[float], list[float]]:
    rows = [regressors(p, terms) for p in phases]
    ys = [p.cpu.get(group, 0.0) for p in phases]
    x = least_squares(rows, ys)
    residuals = [
        y - sum(a * b for a, b in zip(r, x, strict=True)) for r, y in zip(rows, ys, strict=True)
    ]
    return x, residuals


def rms(xs: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in xs) / len(xs))


def model(
    fitted: Sequence[Phase], chat: Phase, cmds: Phase, groups: Sequence[str]
) -> tuple[dict[str, Cost], str]:
    """The costs per group, and the decomposition that fits (printed with its residuals)."""
    fits = {v: {g: fit(fitted, g, t) for g in groups} for v, t in VARIANTS.items()}
    total = {
        v: rms([sum(f[g][1][i] for g in groups) for i in range(len(fitted))])
        for v, f in fits.items()
    }
    names = list(VARIANTS)
    chosen = names[0]
    for v in names[1:]:
        if total[v] < 0.8 * total[chosen]:
            chosen = v
    print(f"\nfit over {', '.join(p.name for p in fitted)} (CPU-s = base*T + "
          "per_member*members*T + per_event*events [+ per_answer*answers] [+ per_delivery*"
          "deliveries]); residual RMS of the sum of all processes, CPU-s:")  # fmt: skip
    for v in names:
        print(f"  {v:<46} {total[v]:6.3f}" + ("   <- chosen" if v == chosen else ""))
    print(f"per process ({chosen}); residuals in CPU-s per phase:")
    costs: dict[str, Cost] = {}
    for g in groups:
        x, res = fits[chosen][g]
        full = {3: [*x, 0.0, 0.0], 4: [*x[:3], 0.0, x[3]], 5: x}[VARIANTS[chosen]]
        print(f"  {g:<11} " + " ".join(f"{r:+6.2f}" for r in res))
        base, per_member, per_event, per_response, per_delivery = (max(0.0, v) for v in full)
        predicted = base * chat.seconds + per_member * chat.members * chat.seconds
        bots_per_event = max(0.0, (chat.cpu.get(g, 0.0) - predicted) / chat.chat)
        predicted = base * cmds.seconds + per_member * cmds.members * cmds.seconds
        per_command = max(0.0, (cmds.cpu.get(g, 0.0) - predicted) / cmds.commands)
        costs[g] = Cost(
            base=base,
            per_member=per_member,
            per_event=per_event + (bots_per_event if g == "bots" else 0.0),
            per_response=per_response,
            per_delivery=per_delivery,
            per_command=per_command,
            single_core=SINGLE_CORE[g],
        )
    return costs, chosen


def show_costs(costs: dict[str, Cost]) -> None:
    print("\nthe model's coefficients (negative fits clamped to 0; the bots' per event from C1,"
          " everyone's per command from C2):")  # fmt: skip
    print(f"  {'process':<11} {'base %':>7} {'ms/member/s':>11} {'ms/event':>9} "
          f"{'ms/answer':>9} {'ms/deliv':>9} {'ms/command':>10}")  # fmt: skip
    rows = [*costs.items()]
    fields = ("base", "per_member", "per_event", "per_response", "per_delivery", "per_command")
    rows.append(("sum", Cost(*(sum(getattr(c, f) for c in costs.values()) for f in fields))))
    for g, c in rows:
        print(
            f"  {g:<11} {c.base * 100:7.2f} {c.per_member * 1e3:11.3f} {c.per_event * 1e3:9.2f}"
            f" {c.per_response * 1e3:9.2f} {c.per_delivery * 1e3:9.3f}"
            f" {c.per_command * 1e3:10.1f}"
        )


# --- the check ----------------------------------------------------------------------------------


def check_costs(costs: dict[str, Cost], driver_shares: bool) -> dict[str, Cost]:
    """The costs of the check's load: no bots in its rooms, no commands; the load process counts
    toward the cores only when it shares them."""
    out = {g: c for g, c in costs.items() if g != DRIVER}
    bots = out["bots"]
    out["bots"] = Cost(bots.base, bots.per_member)
    if driver_shares:
        out[DRIVER] = costs[DRIVER]
    return out


async def wait_quiet(limit: float, within_s: float) -> float:
    deadline = time.monotonic() + within_s
    load = os.getloadavg()[0]
    while load >= limit and time.monotonic() < deadline:
        print(f"  load average {load:.2f} >= {limit}: waiting 30 s", flush=True)
        await asyncio.sleep(30)
        load = os.getloadavg()[0]
    return load


def predict(
    check: dict[str, Cost], costs: dict[str, Cost], cores: float, load: Load, headroom: float
) -> tuple[float, str]:
    """The check's predicted rate and what limits it (the load process on a core of its own
    can be the limit too)."""
    cap = max_rate(check, cores, load, headroom)
    driver_limit = max_rate({DRIVER: costs[DRIVER]}, 1, load, headroom).rate
    if cap.rate <= driver_limit:
        return cap.rate, cap.limit
    return driver_limit, f"{DRIVER} (its own core)"


async def check(
    args: argparse.Namespace,
    groups: Groups,
    driver: DriverProcess,
    costs: dict[str, Cost],
    cores: int,
) -> dict[str, Any]:
    ncpu = os.cpu_count() or 1
    stack_cpus = set(range(cores))
    driver_cpus = set(range(cores, ncpu)) or stack_cpus
    shares = not driver_cpus.isdisjoint(stack_cpus)
    predicted_costs = check_costs(costs, shares)
    load = Load(args.members, 0.0, args.room_size)  # one /sync answer per delivery
    predicted, limit = predict(predicted_costs, costs, cores, load, args.headroom)
    groups.pin(GROUPS, stack_cpus)
    groups.pin([DRIVER], driver_cpus)
    print(
        f"\n=== check on {cores} core(s): stack on cpu {sorted(stack_cpus)}, load process on "
        f"{sorted(driver_cpus)}; predicted {predicted:.1f} msg/s into rooms of {args.room_size} "
        f"(limit: {limit}) ==="
    )
    steps: list[tuple[float, Phase, bool]] = []
    knee = edge = 0.0
    knee_open = True
    for i, factor in enumerate(STEP_FACTORS):
        rate = predicted * factor
        busy = cpus_busy(stack_cpus)
        phase = await measure(
            f"{rate:.1f}/s",
            groups,
            args.members,
            lambda rate=rate, i=i: driver.call(
                op="send",
                rate=rate,
                duration=args.step_s,
                kind="large",
                grace=args.edge_s + 3,
                seed=cores * 100 + i,
            ),
        )
        ours = sum(v for g, v in phase.cpu.items() if g != DRIVER or shares)
        others = max(0.0, (cpus_busy(stack_cpus) - busy - ours) / phase.seconds)
        phase.result["others"] = others
        model_cores = demand(predicted_costs, load.at(rate))[TOTAL]
        used = sum(phase.cores(g) for g in predicted_costs)
        phase.result["cpu_ratio"] = used / model_cores
        r = phase.result
        kept_up = r["achieved"] >= 0.95 * rate and r["delivered"] >= 0.99 * r["expected"]
        quick = kept_up and r["p95"] <= args.p95_s
        late = kept_up and r["p95"] <= args.edge_s
        print(
            f"       offered {rate:5.1f}/s achieved {r['achieved']:5.1f}/s, delivered "
            f"{r['delivered']}/{r['expected']}, {r['delivered'] / max(1, r['responses']):.1f} per "
            f"answer, p50 {r['p50'] * 1e3:6.0f} ms p95 {r['p95'] * 1e3:6.0f} ms; other "
            f"programs used {others:.2f} of these cores; the stack {used:.2f}, the model says "
            f"{model_cores:.2f} -> "
            + ("sustained" if quick else "kept up, slowly" if late else "NOT sustained"),
            flush=True,
        )
        steps.append((rate, phase, quick))
        if quick and knee_open:
            knee = rate
        knee_open = knee_open and quick
        if not late:
            break
        edge = rate
        await asyncio.sleep(3)  # let what is left drain
    groups.pin([*GROUPS, DRIVER], set(range(ncpu)))
    others = statistics.mean(p.result["others"] for _, p, _ in steps)
    left = max(0.05, cores - others)
    adjusted, adjusted_limit = predict(predicted_costs, costs, left, load, args.headroom)
    return {
        "others": others,
        "adjusted": adjusted,
        "adjusted_limit": adjusted_limit,
        "cores": cores,
        "predicted": predicted,
        "limit": limit,
        "measured": knee,
        "edge": edge,
        "steps": steps,
        "demand_costs": predicted_costs,
        "load": load,
    }


def report_check(c: dict[str, Any], args: argparse.Namespace) -> bool:
    pred, meas, adj = c["predicted"], c["measured"], c["adjusted"]
    err = meas / adj - 1 if adj else math.inf
    ok = abs(err) <= TARGET
    fails = [s for s in c["steps"] if not s[2]]
    ceiling = f"; the next step, {fails[0][0]:.1f}/s, was not" if fails else ""
    print(
        f"  {c['cores']} core(s): measured {meas:.1f} msg/s (last step with p95 <= "
        f"{args.p95_s * 1e3:.0f} ms{ceiling}). Predicted for {c['cores']} free core(s) "
        f"{pred:.1f} msg/s (limit {c['limit']}): {(meas / pred - 1) * 100:+.0f} %. Other "
        f"programs used {c['others']:.2f} core(s) of these on average; predicted for the "
        f"{c['cores'] - c['others']:.2f} left {adj:.1f} msg/s (limit {c['adjusted_limit']}): "
        f"{err * 100:+.0f} % (target within ±{TARGET * 100:.0f} %) {'PASS' if ok else 'MISSED'}"
    )
    ratios = [f"{p.result['cpu_ratio']:.2f}" for _, p, ok in c["steps"] if ok]
    print(
        "    the stack's CPU against the model's demand at the sustained steps: "
        + (", ".join(ratios) or "none")
    )
    print(
        f"    kept up with p95 <= {args.edge_s:.1f} s (Synapse batching, latency rising) up to "
        f"{c['edge']:.1f} msg/s = {c['edge'] / pred:.2f}x the prediction"
    )
    if fails:
        rate, phase, _ = fails[0]
        load = c["load"].at(rate)
        need = {g: c["demand_costs"][g].demand(load) for g in c["demand_costs"]}
        print(f"    at {rate:.1f}/s, cores used (measured / model):")
        for g in sorted(phase.cpu, key=lambda g: -phase.cores(g)):
            print(f"      {g:<11} {phase.cores(g):5.2f} / {need.get(g, math.nan):5.2f}")
        print(f"      {'sum':<11} {sum(phase.cores(g) for g in phase.cpu):5.2f} / "
              f"{sum(need.values()):5.2f}")  # fmt: skip
    return ok


# --- the run ------------------------------------------------------------------------------------


async def setup_members(synapse: Any, args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    from clubs.core.http import path

    sem = asyncio.Semaphore(4)

    async def user(i: int) -> Any:
        async with sem:
            return await synapse.new_user(f"cap{i}")

    members = await asyncio.gather(*(user(i) for i in range(args.members)))

    async def room(who: list[int]) -> tuple[str, list[int]]:
        async with sem:
            created = await synapse.admin.http.post(
                path(*CS, "createRoom"),
                {"preset": "private_chat", "invite": [members[i].user_id for i in who]},
            )
            for i in who:
                await members[i].http.post(path(*CS, "join", created["room_id"]), {})
        return created["room_id"], who

    ids = list(range(args.members))
    small = [ids[i : i + 2] for i in range(0, len(ids) - 1, 2)]
    large = [ids[i : i + args.room_size] for i in range(0, len(ids), args.room_size)]
    large = [r for r in large if len(r) == args.room_size]
    rooms = {
        "small": await asyncio.gather(*(room(w) for w in small)),
        "large": await asyncio.gather(*(room(w) for w in large)),
    }
    return members, rooms


async def run(args: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    from bench.chaos import bot_rooms
    from clubs.core.secrets import MASTER_KEY_ENV
    from clubs.supervisor import ChildSpec, Supervisor
    from tests.harness import postgres_cluster, synapse_workers_on
    from tests.integration.bots.botproc import READY_FILE
    from tests.integration.bots.support import BotProcess

    os.environ.setdefault(MASTER_KEY_ENV, Fernet.generate_key().decode())
    base = Path(tempfile.mkdtemp(prefix="clubs-cap-"))  # short: the Redis socket's path
    started = time.monotonic()
    print(
        f"capacity: {args.members} members, rooms of 2 and of {args.room_size}, rates "
        f"{args.rates}/s, {args.phase_s:.0f} s phases; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f", load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cpus",
        flush=True,
    )
    try:
        with postgres_cluster() as pg:
            async with synapse_workers_on(base / "synapse", pg) as (synapse, stack):
                var = base / "var"
                members, rooms = await setup_members(synapse, args)
                network, accounts, people, bot_room_ids = await bot_rooms(synapse, var, 2, 2)
                bp = BotProcess(
                    synapse.url, var, accounts, network, synapse.admin.user_id,
                    sync_timeout_ms=30_000,
                )  # fmt: skip
                bp.var_dir.mkdir(parents=True, exist_ok=True)
                log = base / "load.log"
                with bp.log_file.open("ab") as bots_log, log.open("ab") as load_log:
                    async with Supervisor(var / "run", stdout=bots_log.fileno()) as sup:
                        argv = ["sh", "-c", 'exec "$@" 2>&1', "sh", *bp.argv()]
                        sup.start(ChildSpec(name="bots", argv=argv, ready_file=var / READY_FILE))
                        if not await sup.wait_ready("bots"):
                            raise SystemExit(f"the bots process did not start; {bp}")
                        proc = await asyncio.create_subprocess_exec(
                            sys.executable, __file__, "--driver",
                            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                            stderr=load_log,
                        )  # fmt: skip
                        try:
                            spec = {
                                "url": synapse.url,
                                "tokens": [m.session.access_token for m in members],
                                "rooms": rooms,
                                "peers": [
                                    {
                                        "user_id": p.user_id,
                                        "device_id": p.session.device_id,
                                        "token": p.session.access_token,
                                        "password": p.password,
                                    }
                                    for p in people
                                ],
                                "bots": [a.user_id for a in accounts],
                                "bot_rooms": bot_room_ids,
                            }
                            assert proc.stdin is not None
                            proc.stdin.write((json.dumps(spec) + "\n").encode())
                            roots: dict[str, Callable[[], int | None]] = {
                                "postgres": lambda: postmaster(pg.data_dir),
                                **{
                                    n: (lambda n=n: stack.pid(n))
                                    for n in (
                                        "redis",
                                        "main",
                                        "persister1",
                                        "worker1",
                                        "fedsender1",
                                    )
                                },
                                "front": os.getpid,
                                "bots": lambda: sup.pid("bots"),
                                DRIVER: lambda: proc.pid,
                            }
                            print(f"set up in {time.monotonic() - started:.0f} s", flush=True)
                            return await phases(args, Groups(roots), DriverProcess(proc))
                        finally:
                            if proc.stdin is not None:
                                proc.stdin.close()
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(proc.wait(), 20)
                            if proc.returncode is None:
                                proc.kill()
    finally:
        shutil.rmtree(base, ignore_errors=True)
        print(f"total {time.monotonic() - started:.0f} s")


async def phases(args: argparse.Namespace, groups: Groups, driver: DriverProcess) -> int:
    k, t = args.members, args.phase_s
    await driver.call(op="hello")  # its start-up is not part of A0
    print("\nCPU per process in each phase (% of one core):", flush=True)
    fitted = [await measure("A0", groups, 0, lambda: None, seconds=t)]
    await driver.call(op="sync")
    await asyncio.sleep(3)  # the initial syncs' tail
    fitted.append(await measure("A1", groups, k, lambda: None, seconds=t))
    n = 2
    for kind in ("small", "large"):
        for rate in args.rates:
            p = await measure(
                f"B{n - 1}",
                groups,
                k,
                lambda rate=rate, kind=kind: driver.call(
                    op="send", rate=rate, duration=t, kind=kind, grace=5.0
                ),
            )
            p.events, p.deliveries = p.result["sent"], p.result["delivered"]
            p.responses = p.result["responses"]
            r = p.result
            print(
                f"       {kind} rooms at {rate}/s: {r['sent']} sent, {r['delivered']}/"
                f"{r['expected']} delivered, p50 {r['p50'] * 1e3:.0f} ms p95 "
                f"{r['p95'] * 1e3:.0f} ms"
            )
            fitted.append(p)
            n += 1
    rate = max(args.rates)
    p = await measure(
        "B5", groups, k,
        lambda: driver.call(op="send", rate=rate, duration=t, kind="large", grace=5.0, pause=1.0),
    )  # fmt: skip
    p.events, p.deliveries, p.responses = (p.result[x] for x in ("sent", "delivered", "responses"))
    print(
        f"       large rooms at {rate}/s, clients pausing 1 s after each answer: "
        f"{p.deliveries / max(1, p.responses):.1f} messages per answer (forced batching)"
    )
    fitted.append(p)
    b4 = fitted[-2]
    print(f"       B4 carried {b4.deliveries / max(1, b4.responses):.2f} messages per answer")
    await driver.call(op="peers")
    chat = await measure(
        "C1", groups, k,
        lambda: driver.call(op="bots", rate=args.bot_rate, duration=t, commands=False),
    )  # fmt: skip
    chat.chat = chat.result["messages"]
    cmds = await measure(
        "C2", groups, k,
        lambda: driver.call(op="bots", rate=args.bot_rate, duration=t, commands=True),
    )  # fmt: skip
    cmds.commands = cmds.result["commands"]
    r = cmds.result
    print(
        f"       commands: {r['answered']}/{r['commands']} answered, p50 {r['p50'] * 1e3:.0f} ms"
        f" p95 {r['p95'] * 1e3:.0f} ms"
    )
    costs, _ = model(fitted, chat, cmds, [*GROUPS, DRIVER])
    show_costs(costs)
    example(costs, args.headroom)
    if args.no_check:
        return 0
    print("\nbefore the check: waiting for the 1-minute load average to drop below 1.0")
    load = await wait_quiet(1.0, 0 if args.no_wait else 600)
    print(f"  load average {load:.2f}")
    results = [await check(args, groups, driver, costs, cores) for cores in args.cores]
    print(f"\ncheck (load average at its start {load:.2f}, at its end {os.getloadavg()[0]:.2f}):")
    ok = [report_check(c, args) for c in results]
    return 0 if all(ok) else 1


def example(costs: dict[str, Cost], headroom: float) -> None:
    load = Load(members=500, rate=2.0, recipients=25, commands=0.1)
    stack = {g: c for g, c in costs.items() if g != DRIVER}
    need, over = cores_needed(stack, load, headroom)
    print(
        f"\nexample: 10,000 members, 5 % syncing (500), 2 msg/s into rooms with 25 syncing, "
        f"0.1 command/s: {need:.2f} cores at headroom {headroom}"
        + (f"; one process is not enough for: {', '.join(over)}" if over else "")
    )
    for cores in (1, 2, 4):
        cap = max_rate(stack, cores, load, headroom)
        print(f"  {cores} core(s): up to {cap.rate:.1f} msg/s (limit: {cap.limit})")


def main() -> int:
    logging.basicConfig(level=logging.CRITICAL)
    if "--driver" in sys.argv:
        return asyncio.run(drive())
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="30 members, 15 s phases, 12 s steps")
    p.add_argument("--members", type=int, default=60)
    p.add_argument("--room-size", type=int, default=20)
    p.add_argument("--rates", default="2,6", help="messages/s of the B phases")
    p.add_argument("--bot-rate", type=float, default=1.0, help="messages or commands/s in C")
    p.add_argument("--phase-s", type=float, default=30.0)
    p.add_argument("--step-s", type=float, default=20.0)
    p.add_argument("--cores", default="1,2")
    p.add_argument("--headroom", type=float, default=0.9)
    p.add_argument("--p95-s", type=float, default=0.5, help="latency of a sustained step")
    p.add_argument("--edge-s", type=float, default=2.0, help="latency where the ramp stops")
    p.add_argument("--no-check", action="store_true")
    p.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    args = p.parse_args()
    if args.quick:
        args.members, args.room_size, args.phase_s, args.step_s = 30, 10, 15.0, 12.0
    args.rates = [float(r) for r in args.rates.split(",")]
    args.cores = [int(c) for c in args.cores.split(",")]
    if args.members < args.room_size or args.room_size < 2:
        p.error("--members must be at least --room-size, which must be at least 2")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
