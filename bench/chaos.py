"""Chaos soak: every bot answers every command exactly once while its process is killed, the
homeserver restarts and keys arrive late.

    .venv/bin/python bench/chaos.py [--seed N] [--commands 240] [--rate 2] [--bots 4]
                                    [--members 3] [--kills 10] [--late 0.1] [--hs-down 5]

One fresh Synapse (SQLite, loopback). The bots run in one process of their own
(`tests/integration/bots/botproc.py`: `open_runtimes`, each bot on its own cross-signed device,
production long-poll) under `clubs.supervisor.Supervisor`, the code `clubs up` runs them with.
Each bot serves one managed encrypted room; `--members` members, each on the independent
cross-signed-only client (mautrix, as Element's SDK shares keys), are in every room.

- Commands: `--commands` `!echo` commands at `--rate` per second in total, each from a random
  member to a random bot's room. A share `--late` of them is sent under a Megolm session whose
  key reaches the bot 1–10 s later (a member's new or slow device).
- Kills: the bots' process is SIGKILLed at `--kills` random moments (at least 8 s apart); the
  supervisor restarts it. Its restart policy is the production one except that a run of 5 s
  counts as stable (the soak's kills are not a crash loop; production gives up after 5 deaths
  within 2 minutes).
- Homeserver: stopped once, in the longest gap between kills, for `--hs-down` seconds, and
  started again with the same database; members' clients pause their sync meanwhile and retry
  what they type under one transaction id until the server takes it.

Counts, from the members' decrypted timelines: lost (no answer), duplicated (more than one
answer) and undecryptable (a bot's event no member could decrypt), target 0 / 0 / 0. Prints the
p50/p95 of command → decrypted answer for unaffected commands and for each kind of affected
ones (sent while the bots were down or just back, around the homeserver restart, late key), the
warm-start ratio (first command per room sent within 5 s after the bots were back, against the
unaffected p50; target ≤ 3), and how the run was made: seed, kill times, restart times, rates.
Exit status 1 if a command was lost or duplicated or a reply was undecryptable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet
from mautrix.types import EventType, MessageType, RoomID, TextMessageEventContent

from bench.bots import pct, rss_mb, verdict
from clubs.bots.host import BotAccount
from clubs.core.homeserver import Homeserver, Settings
from clubs.core.http import path
from clubs.core.secrets import MASTER_KEY_ENV
from clubs.supervisor import ChildSpec, RestartPolicy, Supervisor
from tests.harness import Account, SynapseHarness, bootstrap_admin
from tests.integration.bots.botproc import READY_FILE
from tests.integration.bots.support import (
    CS,
    BotProcess,
    create_bot_account,
    managed_room,
    new_network,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer

TARGET_WARM_RATIO = 3.0
WARM_WINDOW_S = 5.0
"""A command sent this long after the bots were back measures the warm start."""
KILL_SPACING_S = 8.0
AFFECTED_AFTER_S = 5.0
"""A command sent this long after the bots (or the homeserver) were back still counts as
affected by the fault."""
LATE_KEY_S = (1.0, 10.0)
ANSWER_WITHIN_S = 180.0
"""After the last command: how long every command may take to be answered."""
SETTLE_S = 10.0
"""After every command was answered: how long to wait for a late duplicate."""


@dataclass
class Command:
    n: int
    member: int
    room: str
    bot: str
    due: float
    """When the member "typed" it (time.time()); latency counts from here."""
    late_key_s: float | None = None
    event_id: str | None = None
    sent_late_key: bool = False


@dataclass
class Timeline:
    """What happened when (time.time()): the faults and the recoveries."""

    kills: list[float] = field(default_factory=list)
    back: list[float] = field(default_factory=list)
    """When the restarted bots process had synced every bot (its ready file), per kill."""
    hs_down: float | None = None
    hs_up: float | None = None

    def bots_affected(self, t: float) -> bool:
        return any(
            k <= t <= b + AFFECTED_AFTER_S for k, b in zip(self.kills, self.back, strict=False)
        )

    def hs_affected(self, t: float) -> bool:
        if self.hs_down is None or self.hs_up is None:
            return False
        return self.hs_down <= t <= self.hs_up + AFFECTED_AFTER_S

    def warm(self, t: float) -> bool:
        return any(b <= t <= b + WARM_WINDOW_S for b in self.back)


class Member:
    """One member's client, sending one thing at a time (as a person types)."""

    def __init__(self, peer: MautrixPeer) -> None:
        self.peer = peer
        self.lock = asyncio.Lock()
        self.server_up = asyncio.Event()
        self.server_up.set()
        self.deliveries: set[asyncio.Task[None]] = set()

    async def send(self, cmd: Command, body: str) -> None:
        async with self.lock:
            if cmd.late_key_s is not None and self.server_up.is_set():
                try:
                    event_id, key = await self.peer.send_with_late_key(cmd.room, body)
                except Exception:  # the server went away under this send: sent the plain way
                    await self._send_retrying(cmd, body)
                    return
                cmd.event_id, cmd.sent_late_key = str(event_id), True
                task = asyncio.create_task(self._deliver_later(key, cmd.bot, cmd.late_key_s))
                self.deliveries.add(task)
                task.add_done_callback(self.deliveries.discard)
                return
            await self._send_retrying(cmd, body)

    async def _send_retrying(self, cmd: Command, body: str) -> None:
        txn = f"chaos-{cmd.n}-{time.monotonic_ns()}"
        while True:
            await self.server_up.wait()
            try:
                event_id = await self.peer.client.send_message_event(
                    RoomID(cmd.room),
                    EventType.ROOM_MESSAGE,
                    TextMessageEventContent(msgtype=MessageType.TEXT, body=body),
                    txn_id=txn,
                )
            except Exception:  # the server is down: try again, under the same txn id
                await asyncio.sleep(0.5)
                continue
            cmd.event_id = str(event_id)
            return

    async def _deliver_later(self, key: Any, bot: str, delay: float) -> None:
        await asyncio.sleep(delay)
        while True:
            await self.server_up.wait()
            try:
                async with self.lock:
                    await self.peer.deliver_key(key, bot)
                return
            except Exception:
                await asyncio.sleep(0.5)


def plan(args: argparse.Namespace, rng: random.Random) -> tuple[list[float], float]:
    """Kill offsets (seconds into the run, at least KILL_SPACING_S apart) and the homeserver's
    restart offset (the middle of the longest gap between kills)."""
    duration = args.commands / args.rate
    kills: list[float] = []
    for _ in range(10_000):
        if len(kills) == args.kills:
            break
        t = rng.uniform(3.0, max(4.0, duration - 10.0))
        if all(abs(t - k) >= KILL_SPACING_S for k in kills):
            kills.append(t)
    if len(kills) < args.kills:
        raise SystemExit(
            f"{args.kills} kills {KILL_SPACING_S:.0f} s apart do not fit into {duration:.0f} s "
            "of commands: send more commands or at a lower rate"
        )
    kills.sort()
    edges = [0.0, *kills, duration]
    gaps = [(edges[i + 1] - edges[i], edges[i]) for i in range(len(edges) - 1)]
    width, start = max(gaps)
    return kills, start + width / 2 - args.hs_down / 2


async def run(args: argparse.Namespace) -> int:
    os.environ.setdefault(MASTER_KEY_ENV, Fernet.generate_key().decode())
    with tempfile.TemporaryDirectory(prefix="clubs-bench-chaos-") as tmp:
        hs = Homeserver(Settings(data_dir=Path(tmp) / "synapse", server_name="bench.local", port=0))
        hs.start()
        try:
            synapse = SynapseHarness(hs, await bootstrap_admin(hs))
            try:
                return await soak(synapse, Path(tmp) / "var", args)
            finally:
                await synapse.admin.http.close()
                await synapse.close()
        finally:
            hs.stop()


async def bot_rooms(
    synapse: SynapseHarness, var: Path, bots: int, members: int
) -> tuple[str, list[BotAccount], list[Account], list[str]]:
    """A new network; `bots` bot accounts, each in one managed encrypted room that `members`
    new members joined: (network, accounts, members, rooms)."""
    network = new_network()
    names = ["moderation", "facilitation", "scheduling", "checkins"][:bots]
    accounts = [await create_bot_account(synapse, var, name) for name in names]
    people = [await synapse.new_user(f"member{i}") for i in range(members)]
    rooms = []
    for i, account in enumerate(accounts):
        room = await managed_room(
            synapse, network, invite=[account.user_id, *(m.user_id for m in people)], key=f"r{i}"
        )
        for m in people:
            await m.http.post(path(*CS, "join", room), {})
        rooms.append(room)
    return network, accounts, people, rooms


async def soak(synapse: SynapseHarness, var: Path, args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)  # a reproducible soak
    network, accounts, members, rooms = await bot_rooms(synapse, var, args.bots, args.members)

    kill_at, hs_at = plan(args, rng)
    commands = make_commands(args, rng, accounts, rooms)
    bp = BotProcess(  # for its command line; the supervisor runs it
        synapse.url, var, accounts, network, synapse.admin.user_id, sync_timeout_ms=30_000
    )
    bp.var_dir.mkdir(parents=True, exist_ok=True)
    policy = RestartPolicy(stable_after_s=5.0, max_fast_deaths=args.kills + 5)
    timeline = Timeline()
    with bp.log_file.open("ab") as log_out:
        async with (
            Supervisor(var / "run", policy, stdout=log_out.fileno()) as sup,
            contextlib.AsyncExitStack() as stack,
        ):
            # Its log (stdout and stderr) goes to the bot process's log file, not the terminal.
            argv = ["sh", "-c", 'exec "$@" 2>&1', "sh", *bp.argv()]
            spec = ChildSpec(name="bots", argv=argv, ready_file=var / READY_FILE)
            sup.start(spec)
            if not await sup.wait_ready("bots"):
                raise SystemExit(f"the bots process did not start; {bp}")
            peers = [await stack.enter_async_context(mautrix_peer(m, synapse.url)) for m in members]
            clients = [Member(p) for p in peers]
            await warm_up(clients, accounts, rooms)
            started = time.time()
            for c in commands:
                c.due += started
            faults = asyncio.gather(
                kills(sup, var, [started + k for k in kill_at], timeline),
                restart_homeserver(synapse, clients, started + hs_at, args.hs_down, timeline),
            )
            await asyncio.gather(*(send_at(clients[c.member], c) for c in commands))
            await faults
            last_sent = time.time()
            await wait_answered(peers, commands, last_sent)
            await asyncio.sleep(SETTLE_S)
            pid = sup.pid("bots")
            rss = rss_mb(pid) if pid is not None else (0.0, 0.0)
            restarts = sum(1 for line in bp.log_text().splitlines() if "bot(s) ready" in line)
            if os.environ.get("BENCH_KEEP_LOG"):
                Path(os.environ["BENCH_KEEP_LOG"]).write_text(bp.log_text())
    return report(args, peers, commands, timeline, started, kill_at, hs_at, rss, restarts)


def make_commands(
    args: argparse.Namespace, rng: random.Random, accounts: list[BotAccount], rooms: list[str]
) -> list[Command]:
    out = []
    for n in range(args.commands):
        i = rng.randrange(len(rooms))
        late = rng.uniform(*LATE_KEY_S) if rng.random() < args.late else None
        out.append(
            Command(n, rng.randrange(args.members), rooms[i], accounts[i].user_id, n / args.rate)
        )
        out[-1].late_key_s = late
    return out


async def warm_up(clients: list[Member], accounts: list[BotAccount], rooms: list[str]) -> None:
    """One command per member and room before the clock starts: keys shared, devices known."""
    warm = [
        Command(-1 - i * len(rooms) - j, i, room, accounts[j].user_id, time.time())
        for i in range(len(clients))
        for j, room in enumerate(rooms)
    ]
    for c in warm:
        await clients[c.member].send(c, f"!echo warm {c.n}")
    await wait_answered([m.peer for m in clients], warm, time.time())


async def send_at(member: Member, cmd: Command) -> None:
    await asyncio.sleep(max(0.0, cmd.due - time.time()))
    await member.send(cmd, f"!echo c{cmd.n}")


async def kills(sup: Supervisor, var: Path, at: list[float], timeline: Timeline) -> None:
    ready = var / READY_FILE
    for t in at:
        await asyncio.sleep(max(0.0, t - time.time()))
        pid = sup.pid("bots")
        if pid is None:  # not back from the previous kill yet: this one waits for it
            while (pid := sup.pid("bots")) is None:  # noqa: ASYNC110 - a process, no event
                await asyncio.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        timeline.kills.append(time.time())
        while sup.pid("bots") in (None, pid) or not ready.exists():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        timeline.back.append(time.time())


async def restart_homeserver(
    synapse: SynapseHarness, clients: list[Member], at: float, down_s: float, timeline: Timeline
) -> None:
    await asyncio.sleep(max(0.0, at - time.time()))
    for c in clients:
        c.server_up.clear()
        c.peer.client.stop()
    timeline.hs_down = time.time()
    await asyncio.to_thread(synapse.hs.stop)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(synapse.hs.start)  # returns once Synapse answers
    timeline.hs_up = time.time()
    for c in clients:
        c.peer.client.start(None)
        c.server_up.set()


def answers(peers: list[MautrixPeer], cmd: Command) -> list[Any]:
    """The bot's decrypted answers to a command (not its notices), as its sender saw them."""
    return [
        r
        for r in peers[cmd.member].received
        if r.reply_to == cmd.event_id and r.sender == cmd.bot and r.body.startswith("Echo")
    ]


async def wait_answered(peers: list[MautrixPeer], commands: list[Command], since: float) -> None:
    while time.time() - since < ANSWER_WITHIN_S:
        if all(c.event_id is not None and answers(peers, c) for c in commands):
            return
        await asyncio.sleep(0.2)


def report(
    args: argparse.Namespace,
    peers: list[MautrixPeer],
    commands: list[Command],
    timeline: Timeline,
    started: float,
    kill_at: list[float],
    hs_at: float,
    rss: tuple[float, float],
    ready_lines: int,
) -> int:
    counts = Counter(len(answers(peers, c)) for c in commands)
    lost = counts[0]
    duplicated = sum(n for k, n in counts.items() if k > 1)
    ids = {c.event_id for c in commands}
    undecryptable = sum(1 for p in peers for e in p.undecryptable if e not in ids)
    latency: dict[str, list[float]] = {}
    warm: dict[str, float] = {}
    for c in commands:
        got = answers(peers, c)
        if not got:
            continue
        seconds = min(r.arrived_at for r in got) - c.due
        if c.sent_late_key:
            kind = "late key"
        elif timeline.hs_affected(c.due):
            kind = "homeserver restart"
        elif timeline.bots_affected(c.due):
            kind = "bots killed"
        else:
            kind = "unaffected"
        latency.setdefault(kind, []).append(seconds)
        if not c.sent_late_key and timeline.warm(c.due) and not timeline.hs_affected(c.due):
            back = max(b for b in timeline.back if b <= c.due)
            warm.setdefault(f"{back} {c.room}", seconds)  # the first in that room after it

    def rel(ts: list[float]) -> str:
        return ", ".join(f"{t - started:.1f}" for t in ts)

    print(
        f"run: seed {args.seed}; {args.commands} commands at {args.rate}/s from {args.members} "
        f"members to {args.bots} bots (one room each); {args.late:.0%} with the key "
        f"{LATE_KEY_S[0]:.0f}-{LATE_KEY_S[1]:.0f} s late "
        f"({sum(c.sent_late_key for c in commands)} sent so)"
    )
    print(f"kills planned at (s): {', '.join(f'{k:.1f}' for k in kill_at)}")
    print(f"kills done at (s):    {rel(timeline.kills)}")
    print(
        "bots back after (s):  "
        + ", ".join(f"{b - k:.2f}" for k, b in zip(timeline.kills, timeline.back, strict=False))
        + f"  ({ready_lines} starts of the bots process in all)"
    )
    if timeline.hs_down is not None and timeline.hs_up is not None:
        print(
            f"homeserver: planned {hs_at:.1f} s, stopped at {timeline.hs_down - started:.1f} s, "
            f"answering again at {timeline.hs_up - started:.1f} s"
        )
    ok = lost == 0 and duplicated == 0 and undecryptable == 0
    print(
        f"lost {lost}, duplicated {duplicated}, undecryptable {undecryptable} "
        f"(target 0 / 0 / 0) {verdict(ok)}"
    )
    steady = statistics.median(latency.get("unaffected", [0.0]))
    for kind in ("unaffected", "bots killed", "homeserver restart", "late key"):
        s = latency.get(kind, [])
        if s:
            p50, p95 = statistics.median(s) * 1e3, pct(s, 0.95) * 1e3
            print(
                f"command -> answer, {kind:<18} n={len(s):3d}: p50 {p50:6.0f} ms  p95 {p95:6.0f} ms"
            )
    if warm:
        w = list(warm.values())
        ratio = statistics.median(w) / steady if steady else float("inf")
        print(
            f"warm start: first command per room within {WARM_WINDOW_S:.0f} s of the bots being "
            f"back, n={len(w)}: p50 {statistics.median(w) * 1e3:.0f} ms, p95 "
            f"{pct(w, 0.95) * 1e3:.0f} ms; p50 ratio to the unaffected p50 {ratio:.2f} "
            f"(target <= {TARGET_WARM_RATIO}) {verdict(ratio <= TARGET_WARM_RATIO)}"
        )
    print(f"bots process RSS at the end: {rss[0]:.0f} MB (peak of its last run {rss[1]:.0f} MB)")
    return 0 if ok else 1


def main() -> int:
    logging.basicConfig(level=logging.CRITICAL)  # the members' clients chat about key sharing
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--commands", type=int, default=240)
    p.add_argument("--rate", type=float, default=2.0, help="commands per second, all members")
    p.add_argument("--bots", type=int, default=4)
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--late", type=float, default=0.1, help="share of commands with a late key")
    p.add_argument("--hs-down", type=float, default=5.0, help="seconds the homeserver is down")
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1_000_000)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
