"""Benchmark: the facilitation bot during running sessions, against the same run's floor.

    .venv/bin/python bench/facilitation.py [--sessions 20] [--rate 5] [--samples 30] [--idle 60]

One fresh Synapse (SQLite, loopback). The shipped facilitation bot runs in a process of its own
(`tests/integration/bots/schedproc.py`: the production composition, long-poll, INFO logs, its
clock the wall clock). `--sessions` sessions rooms, each with a cross-signed chair client (the
project's `E2eeClient`) who starts a session with a four-hour item; then:

1. load: the chairs post tagged notes (`#info …`) at `--rate` messages per second in total,
   round robin over the rooms (each is stored, sealed, and may edit the status message);
2. command → status edited: in the first room a member raises and lowers a hand (`+`, `!q-`)
   (paced: commands are rate limited per member, 5 per 10 s) and waits until its own sync
   holds the bot's `m.replace` of the status message showing the change — two hops (the
   member's message, the bot's edit);
3. the floor, interleaved with 2 under the same load: a bare cross-signed client in the same
   room answering `relay?` with one message (the two-hop floor any reply has);
4. idle: the load stops; for `--idle` seconds the bot's events in every room are counted
   (status edits per minute per session: the tick edits only when the text changed, and time
   left is shown in whole minutes, so about one a minute; target ≤ 4);
5. RSS of the bot's process (VmRSS, VmHWM).

Prints p50/p95 of 2 and 3 and their ratio (target ≤ 1.1×), edits per minute, RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet

from bench.botmetrics import scrape, where_time_goes
from bench.bots import pct, rss_mb, verdict
from bench.jobs import cpu_seconds
from bench.scheduling import new_client
from bench.shapes import synapse_harness
from clubs.bots.host import BotAccount
from clubs.core.e2ee import E2eeClient
from clubs.core.homeserver import find_free_port
from clubs.core.http import RoomId, path
from clubs.core.secrets import MASTER_KEY_ENV
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.schedhost import SchedProcess
from tests.integration.bots.support import create_bot_account, managed_room, new_network

TARGET_RATIO = 1.1
TARGET_EDITS_PER_MIN = 4
SLICE_S = 60.0


@dataclass
class Seen:
    """What one client's sync delivered: (arrival monotonic, room, sender, content)."""

    items: list[tuple[float, str, str, dict[str, object]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    synced: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, predicate: object, since: float, within: float = 60) -> float:
        async with asyncio.timeout(within):
            while True:
                for at, room, sender, content in self.items:
                    if at >= since and predicate(room, sender, content):  # type: ignore[operator]
                        return at
                self.changed.clear()
                await self.changed.wait()


async def sync_forever(client: E2eeClient, seen: Seen, answer: str | None = None) -> None:
    since = (await client.sync(None, timeout_ms=0)).next_batch
    seen.synced.set()
    while True:
        batch = await client.sync(since, timeout_ms=30_000)
        since = batch.next_batch
        now = time.monotonic()
        for ev in batch.events:
            seen.items.append((now, ev.room_id, ev.sender, dict(ev.content)))
            if answer is not None and ev.content.get("body") == "relay?" and ev.sender == answer:
                await client.send(
                    ev.room_id,
                    "m.room.message",
                    {
                        "msgtype": "m.notice",
                        "body": "pong",
                        "m.relates_to": {"m.in_reply_to": {"event_id": ev.event_id}},
                    },
                    txn_id=ev.event_id,
                )
        seen.changed.set()


def status_edit(bot: str, room: str, shows: bool, who: str):  # type: ignore[no-untyped-def]
    def match(r: str, sender: str, content: dict[str, object]) -> bool:
        rel = content.get("m.relates_to")
        if r != room or sender != bot or not isinstance(rel, dict):
            return False
        if rel.get("rel_type") != "m.replace":
            return False
        body = str((content.get("m.new_content") or {}).get("body", ""))  # type: ignore[union-attr]
        queue = next((line for line in body.splitlines() if line.startswith("Queue")), "")
        return (who in queue) == shows

    return match


async def run(args: argparse.Namespace) -> int:
    os.environ.setdefault(MASTER_KEY_ENV, Fernet.generate_key().decode())
    with tempfile.TemporaryDirectory(prefix="clubs-bench-facilitation-") as tmp:
        async with synapse_harness("sqlite", Path(tmp) / "synapse") as synapse:
            return await measure(synapse, Path(tmp), args)


async def measure(synapse: SynapseHarness, tmp: Path, args: argparse.Namespace) -> int:
    var = tmp / "var"
    network = new_network()
    account = await create_bot_account(synapse, var, "facilitation")
    bot = account.user_id
    chairs = [
        await new_client(synapse, tmp / f"chair{i}", f"chair{i}") for i in range(args.sessions)
    ]
    member = await new_client(synapse, tmp / "member", "member")
    relay = await new_client(synapse, tmp / "relay", "relay")
    rooms = []
    for i, chair in enumerate(chairs):
        extra = [member.user_id, relay.user_id] if i == 0 else []
        room = await managed_room(
            synapse,
            network,
            invite=[bot, chair.user_id, *extra],
            key="sessions",
            club=f"c{i}",
            language="en",
            powers={bot: 50, chair.user_id: 50},
        )
        rooms.append(room)
        await chair.join(RoomId(room))
    await member.join(RoomId(rooms[0]))
    await relay.join(RoomId(rooms[0]))
    bp = SchedProcess(
        synapse.url,
        var,
        [BotAccount(account.name, bot)],
        network,
        synapse.admin.user_id,
        sync_timeout_ms=30_000,
        verbosity=0,
        clock_slice=SLICE_S,
        http_port=find_free_port(),
    )
    seen = {c.user_id: Seen() for c in (*chairs, member, relay)}
    tasks: list[asyncio.Task[None]] = []
    try:
        await bp.start()
        await bp.wait_ready(within=300)
        pid = bp.proc.pid if bp.proc is not None else 0

        async def all_joined() -> bool:
            joined = await synapse.admin.http.get(
                path("_synapse", "admin", "v1", "users", bot, "joined_rooms")
            )
            return set(rooms) <= set(joined.get("joined_rooms", []))

        await eventually(all_joined, within=300, interval=1)
        for c in chairs:
            tasks.append(asyncio.create_task(sync_forever(c, seen[c.user_id])))
        tasks.append(asyncio.create_task(sync_forever(member, seen[member.user_id])))
        tasks.append(
            asyncio.create_task(sync_forever(relay, seen[relay.user_id], answer=member.user_id))
        )
        for s in seen.values():
            await asyncio.wait_for(s.synced.wait(), 300)
        t0 = time.monotonic()
        for i, (c, room) in enumerate(zip(chairs, rooms, strict=True)):
            await c.send(
                RoomId(room), "m.room.message", {"msgtype": "m.text", "body": f"!start Bench {i}"}
            )
        for c, room in zip(chairs, rooms, strict=True):
            await seen[c.user_id].wait_for(
                lambda r, s, content, room=room: (
                    r == room and s == bot and str(content.get("body", "")).startswith("▶")
                ),
                t0,
                within=300,
            )
            await c.send(
                RoomId(room), "m.room.message", {"msgtype": "m.text", "body": "!agenda add 4h Talk"}
            )
        print(f"setup: {args.sessions} sessions started in {time.monotonic() - t0:.1f} s")

        stop = asyncio.Event()
        notes = 0

        async def load() -> None:
            nonlocal notes
            i = 0
            while not stop.is_set():
                c, room = chairs[i % len(chairs)], rooms[i % len(rooms)]
                await c.send(
                    RoomId(room), "m.room.message", {"msgtype": "m.text", "body": f"#info note {i}"}
                )
                notes += 1
                i += 1
                await asyncio.sleep(1 / args.rate)

        mseen = seen[member.user_id]
        who = member.user_id.removeprefix("@").split(":")[0]
        cmd: list[float] = []
        floor: list[float] = []
        load_task = asyncio.create_task(load())
        cpu0, hs_cpu0, wall0 = (
            cpu_seconds(pid),
            cpu_seconds(synapse.hs.process.pid),
            time.monotonic(),
        )
        try:
            for i in range(args.samples + 2):
                raise_it = i % 2 == 0
                started = time.monotonic()
                await member.send(
                    RoomId(rooms[0]),
                    "m.room.message",
                    {"msgtype": "m.text", "body": "+" if raise_it else "!q-"},
                )
                got = await mseen.wait_for(status_edit(bot, rooms[0], raise_it, who), started)
                started_f = time.monotonic()
                event_id = await member.send(
                    RoomId(rooms[0]), "m.room.message", {"msgtype": "m.text", "body": "relay?"}
                )
                got_f = await mseen.wait_for(
                    lambda r, s, content, e=event_id: (
                        s == relay.user_id
                        and (content.get("m.relates_to") or {})
                        .get("m.in_reply_to", {})
                        .get("event_id")
                        == e
                    ),
                    started_f,
                )
                # Commands are rate limited per member (5 per 10 s in production): pace them.
                await asyncio.sleep(2.1)
                if i >= 2:  # the first ones share keys
                    cmd.append(got - started)
                    floor.append(got_f - started_f)
        finally:
            stop.set()
            await load_task
        busy_s = time.monotonic() - wall0
        busy_cpu = (cpu_seconds(pid) - cpu0, cpu_seconds(synapse.hs.process.pid) - hs_cpu0)

        await asyncio.sleep(5)  # the last notes' edits settle
        idle_from = time.monotonic()
        cpu0 = cpu_seconds(pid)
        await asyncio.sleep(args.idle)
        idle_cpu = (cpu_seconds(pid) - cpu0) / args.idle * 100
        from_bot = [
            it
            for c in chairs
            for it in seen[c.user_id].items
            if it[0] >= idle_from and it[2] == bot
        ]
        edits_per_min = len(from_bot) / len(chairs) / (args.idle / 60)
        rss, hwm = rss_mb(pid)
        assert bp.http_port is not None
        parts = where_time_goes(await scrape(bp.http_port), "facilitation", "q-")
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await bp.stop()
        for c in (*chairs, member, relay):
            await c.close()

    c50, c95, f50, f95 = (
        statistics.median(cmd),
        pct(cmd, 0.95),
        statistics.median(floor),
        pct(floor, 0.95),
    )
    print("command: .venv/bin/python bench/facilitation.py " + shlex.join(sys.argv[1:]))
    print(
        f"load: {notes} notes in {busy_s:.0f} s ({notes / busy_s:.1f}/s) over {args.sessions} "
        f"sessions; bot process {busy_cpu[0] / busy_s:.0%} of a core, "
        f"Synapse {busy_cpu[1] / busy_s:.0%}"
    )
    print(f"command -> status edited (p50/p95): {c50 * 1e3:.0f}/{c95 * 1e3:.0f} ms")
    print(f"two-hop relay floor (p50/p95):      {f50 * 1e3:.0f}/{f95 * 1e3:.0f} ms")
    ratio = c95 / f95
    print(
        f"ratio p50 {c50 / f50:.2f}, p95 {ratio:.2f} "
        f"(target <= {TARGET_RATIO}) {verdict(ratio <= TARGET_RATIO)}"
    )
    print(
        f"idle: {edits_per_min:.2f} bot events per minute per session over {args.idle:.0f} s "
        f"(target <= {TARGET_EDITS_PER_MIN}) {verdict(edits_per_min <= TARGET_EDITS_PER_MIN)}; "
        f"bot process CPU {idle_cpu:.2f} %"
    )
    print(f"RSS {rss:.0f} MB (peak {hwm:.0f} MB)")
    print(f"the bot's own figures (its /metrics; `+` is not a command, `!q-` is): {parts}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--rate", type=float, default=5.0, help="notes per second, all rooms")
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--idle", type=float, default=60.0, help="seconds of the idle count")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
