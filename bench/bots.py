"""Benchmark: `!ping` through the bot runtime against the floor set by the same Synapse.

    .venv/bin/python bench/bots.py [--rooms 100] [--bots 4] [--samples 40] [--restarts 3]
        [--shape sqlite|postgres]

One fresh Synapse (SQLite by default, loopback) for the whole run; a member runs the independent
cross-signed-only client (mautrix), the bots run in one process of their own
(`tests/integration/bots/botproc.py`: `open_runtimes`, each bot on its own cross-signed device,
production long-poll), every bot joined to `--rooms` managed encrypted rooms:

1. floor: the member's own encrypted message round trip — send, until it comes back decrypted
   through the member's own /sync — in the room where it will ping;
2. ping: `!ping` until the member holds the decrypted reply (one bot answers built-ins);
   both with their parts from the homeserver's stamps (send; stamp → decrypted; for the ping,
   stamp → the reply's stamp, which holds everything the bot does);
3. the bot process's RSS (VmRSS now, VmHWM peak) with every bot in every room;
4. the relay floor (`--no-relay` skips it): a bare cross-signed client answering `!relay` in a
   loop in the same room while the bots run — the two-hop floor any reply has;
5. start-up from a stored token: the process is stopped, a `!ping` is sent while it is down,
   the process is started; the time to its first sync of every bot, and to the answer;
6. warm start: right after that answer, the first `!ping` in each of `--warm-rooms` other rooms
   (rooms the restarted process has not touched yet, all within 5 s of the restart), against
   the steady `!ping` p50 (target ≤ 3×).

Prints p50/p95 of 1 and 2, their ratio (target p95 ≤ 1.5× floor), the ping against the relay
floor, RSS (target ≤ 150 MB) and start-up (target ≤ 1 s to answering). `--profile FILE` runs the
bot process under cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet
from mautrix.types import RoomID

from bench.shapes import SHAPES, synapse_harness
from clubs.core.e2ee import E2eeClient
from clubs.core.http import RoomId, path
from clubs.core.secrets import MASTER_KEY_ENV, Vault
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    BotProcess,
    create_bot_account,
    managed_room,
    new_network,
    send_text,
)
from tests.mautrix_client import MautrixPeer, Received, mautrix_peer

TARGET_RATIO = 1.5
TARGET_RSS_MB = 150
TARGET_START_S = 1.0
TARGET_WARM_RATIO = 3.0


class Arrivals(list[Received]):
    """The peer's `received` list, waking waiters on every append (no polling delay)."""

    def __init__(self, items: list[Received]) -> None:
        super().__init__(items)
        self.changed = asyncio.Event()

    def append(self, item: Received) -> None:
        super().append(item)
        self.changed.set()

    async def wait_for(self, predicate: Any, within: float = 30) -> Received:
        async with asyncio.timeout(within):
            while True:
                for item in reversed(self):
                    if predicate(item):
                        return item
                self.changed.clear()
                await self.changed.wait()


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


class Parts(dict[str, list[float]]):
    """Where each round trip's time went, by part (seconds), from the homeserver's stamps."""

    def add(self, part: str, seconds: float) -> None:
        self.setdefault(part, []).append(seconds)

    def summary(self) -> str:
        return ", ".join(f"{k} {statistics.median(v) * 1e3:.0f}" for k, v in self.items())


async def floor(
    peer: MautrixPeer, arrivals: Arrivals, room: str, n: int, parts: Parts | None = None
) -> list[float]:
    """The member's own message, from send to decrypted in its own sync."""
    out = []
    for i in range(n):
        started = time.monotonic()
        event_id = await send_text(peer, room, f"floor {i}")
        sent = time.monotonic()
        own = await arrivals.wait_for(lambda r, e=event_id: r.event_id == e)
        out.append(time.monotonic() - started)
        if parts is not None:
            parts.add("send", sent - started)
            parts.add("stamped->decrypted", own.arrived_at - own.origin_server_ts / 1e3)
    return out


async def pings(
    peer: MautrixPeer,
    arrivals: Arrivals,
    room: str,
    bot: str,
    n: int,
    parts: Parts | None = None,
) -> list[float]:
    out = []
    for _ in range(n):
        started = time.monotonic()
        event_id = await send_text(peer, room, "!ping")
        sent = time.monotonic()
        reply = await arrivals.wait_for(lambda r, e=event_id: r.sender == bot and r.reply_to == e)
        out.append(time.monotonic() - started)
        if parts is not None:
            ping = await arrivals.wait_for(lambda r, e=event_id: r.event_id == e)
            parts.add("send", sent - started)
            parts.add(
                "ping stamped->reply stamped",
                (reply.origin_server_ts - ping.origin_server_ts) / 1e3,
            )
            parts.add("stamped->decrypted", reply.arrived_at - reply.origin_server_ts / 1e3)
    return out


def start_phases(log: str, wall_start: float) -> list[str]:
    """Seconds from exec to each INFO milestone of one run of the bot process."""
    out = []
    for line in log.splitlines():
        if "opened device" in line or "ready" in line:
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            what = "device opened" if "opened device" in line else "all synced"
            out.append(f"{what} {at - wall_start:.2f}")
    return out


async def relay_floor(
    synapse: SynapseHarness,
    var: Path,
    member: Account,
    peer: MautrixPeer,
    arrivals: Arrivals,
    room: str,
    args: argparse.Namespace,
) -> list[float]:
    """`!ping` answered by the least a bot can be: one cross-signed E2eeClient in a bare loop
    (sync, see the ping, send a reply), no runtime — the two-hop floor a bot's reply has,
    measured while the bots run (their syncs wake for these messages too)."""
    relay_var = var / "relay"
    account = await create_bot_account(synapse, relay_var, "relay")
    await synapse.admin.http.post(path(*CS, "rooms", room, "invite"), {"user_id": account.user_id})
    client = await E2eeClient.open(
        synapse.url, Vault(relay_var / "secrets" / "vault"), account.user_id, relay_var / "store"
    )
    await client.join(RoomId(room))

    async def loop() -> None:
        since = (await client.sync(None, timeout_ms=0)).next_batch
        while True:
            batch = await client.sync(since, timeout_ms=30_000)
            since = batch.next_batch
            for ev in batch.events:
                if ev.sender == member.user_id and ev.content.get("body") == "!relay":
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

    task = asyncio.create_task(loop())
    try:
        out = []
        for i in range(args.samples + 3):
            started = time.monotonic()
            event_id = await send_text(peer, room, "!relay")
            await arrivals.wait_for(
                lambda r, e=event_id: r.sender == account.user_id and r.reply_to == e
            )
            if i >= 3:  # the first ones share keys
                out.append(time.monotonic() - started)
        return out
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


async def join_all(synapse: SynapseHarness, bots: Sequence[str], rooms: Sequence[str]) -> None:
    """Wait until every bot is joined to every room (read with the admin API)."""

    async def done() -> bool:
        for bot in bots:
            joined = await synapse.admin.http.get(
                path("_synapse", "admin", "v1", "users", bot, "joined_rooms")
            )
            if not set(rooms) <= set(joined.get("joined_rooms", [])):
                return False
        return True

    await eventually(done, within=600, interval=1)


async def run(args: argparse.Namespace) -> int:
    os.environ.setdefault(MASTER_KEY_ENV, Fernet.generate_key().decode())
    with tempfile.TemporaryDirectory(prefix="clubs-bench-bots-") as tmp:
        async with synapse_harness(args.shape, Path(tmp) / "var" / "synapse") as synapse:
            await measure(synapse, Path(tmp) / "var", args)
    return 0


async def measure(synapse: SynapseHarness, var: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of the module docstring on `synapse`; printed, and returned."""
    network = new_network()
    names = ["moderation", "facilitation", "scheduling", "checkins"][: args.bots]
    accounts = [await create_bot_account(synapse, var, name) for name in names]
    bots = [a.user_id for a in accounts]
    member = await synapse.new_user("member")
    t = time.monotonic()
    rooms = [
        await managed_room(synapse, network, invite=bots, key=f"r{i}") for i in range(args.rooms)
    ]
    ping_room = rooms[0]
    await synapse.admin.http.post(
        path(*CS, "rooms", ping_room, "invite"), {"user_id": member.user_id}
    )
    await member.http.post(path(*CS, "join", ping_room), {})
    warm_rooms = rooms[1 : 1 + args.warm_rooms]
    for room in warm_rooms:
        await synapse.admin.http.post(
            path(*CS, "rooms", room, "invite"), {"user_id": member.user_id}
        )
        await member.http.post(path(*CS, "join", room), {})
    print(f"setup: {args.rooms} managed rooms created in {time.monotonic() - t:.1f} s")

    bp = BotProcess(
        synapse.url,
        var,
        accounts,
        network,
        synapse.admin.user_id,
        sync_timeout_ms=30_000,  # as in production: long-poll, INFO logs
        verbosity=0,  # (the per-user command rate limit is lifted: pings come back to back)
    )
    if args.profile:
        bp.python_args = ["-m", "cProfile", "-o", str(Path(args.profile).resolve())]
    try:
        t = time.monotonic()
        await bp.start()
        await bp.wait_ready(within=600)
        await join_all(synapse, bots, rooms)
        took = time.monotonic() - t
        print(f"setup: {args.bots} bots joined {args.rooms} rooms each in {took:.1f} s")
        await bp.stop()  # the measured runs start from stored tokens and positions
        await bp.start()
        await bp.wait_ready(within=120)

        async with mautrix_peer(member, synapse.url) as peer:
            arrivals = Arrivals(peer.received)
            peer.received = arrivals
            await pings(peer, arrivals, ping_room, bots[0], 3)  # keys shared, caches warm
            for room in warm_rooms:  # the member's keys reach the bots there before the restarts
                await pings(peer, arrivals, room, bots[0], 1)
            await floor(peer, arrivals, ping_room, 3)
            floor_parts, ping_parts = Parts(), Parts()
            floor_s = await floor(peer, arrivals, ping_room, args.samples, floor_parts)
            ping_s = await pings(peer, arrivals, ping_room, bots[0], args.samples, ping_parts)
            assert bp.proc is not None
            rss, hwm = rss_mb(bp.proc.pid)
            relay_s: list[float] = []
            if args.relay:  # while the bots run: the same load on the server as the pings had
                relay_s = await relay_floor(synapse, var, member, peer, arrivals, ping_room, args)

            ready_s: list[float] = []
            answer_s: list[float] = []
            phases: list[str] = []
            warm_s: list[float] = []
            warm_since: list[float] = []
            for _ in range(args.restarts):
                await bp.stop()
                event_id = await send_text(peer, ping_room, "!ping")
                log_from = len(bp.log_text())
                started, wall = time.monotonic(), time.time()
                await bp.start()
                await bp.wait_ready(within=60)
                ready_s.append(time.monotonic() - started)
                await arrivals.wait_for(lambda r, e=event_id: r.reply_to == e)
                answer_s.append(time.monotonic() - started)
                phases = start_phases(bp.log_text()[log_from:], wall)
                for room in warm_rooms:
                    warm_s += await pings(peer, arrivals, room, bots[0], 1)
                    warm_since.append(time.monotonic() - started)
            await bp.stop()
    finally:
        await bp.kill()
        if os.environ.get("BENCH_KEEP_LOG"):
            Path(os.environ["BENCH_KEEP_LOG"]).write_text(bp.log_text())
    asked = {RoomID(room) for room in (ping_room, *warm_rooms)}
    assert all(r.room_id in asked for r in peer.received if r.sender in bots)

    f50, f95 = statistics.median(floor_s), pct(floor_s, 0.95)
    p50, p95 = statistics.median(ping_s), pct(ping_s, 0.95)
    ratio = p95 / f95
    start = statistics.median(answer_s)
    ms = "p50 {:6.0f} ms  p95 {:6.0f} ms"
    print(f"bots: {args.bots} in one process, each joined to {args.rooms} managed encrypted rooms")
    print("floor (own encrypted message back through sync): " + ms.format(f50 * 1e3, f95 * 1e3))
    print("!ping -> decrypted reply:                        " + ms.format(p50 * 1e3, p95 * 1e3))
    print(f"  floor parts, median ms: {floor_parts.summary()}")
    print(f"  !ping parts, median ms: {ping_parts.summary()}")
    print(f"p95 ratio = {ratio:.2f} (target <= {TARGET_RATIO}) {verdict(ratio <= TARGET_RATIO)}")
    print(f"p50 ratio = {p50 / f50:.2f}")
    if relay_s:
        r50, r95 = statistics.median(relay_s), pct(relay_s, 0.95)
        print("relay floor (bare E2eeClient loop answering):   " + ms.format(r50 * 1e3, r95 * 1e3))
        print(f"!ping / relay floor: p50 {p50 / r50:.2f}, p95 {p95 / r95:.2f}")
    print(
        f"bot process RSS: {rss:.0f} MB now, {hwm:.0f} MB peak "
        f"(target <= {TARGET_RSS_MB}) {verdict(hwm <= TARGET_RSS_MB)}"
    )
    print("last start-up, seconds after exec: " + ", ".join(phases))
    print(
        "start-up from a stored token to answering: "
        + ", ".join(f"{s:.2f}" for s in answer_s)
        + f" s (all bots synced: {', '.join(f'{s:.2f}' for s in ready_s)} s); "
        + f"median {start:.2f} s (target <= {TARGET_START_S}) {verdict(start <= TARGET_START_S)}"
    )
    if warm_s:
        w50, w95 = statistics.median(warm_s), pct(warm_s, 0.95)
        warm_ratio = w50 / p50
        print(
            f"warm start: first !ping in each of {len(warm_rooms)} rooms after a restart "
            f"(the last sent {max(warm_since):.1f} s after it): p50 {w50 * 1e3:.0f} ms, p95 "
            f"{w95 * 1e3:.0f} ms; p50 / steady p50 = {warm_ratio:.2f} "
            f"(target <= {TARGET_WARM_RATIO}) {verdict(warm_ratio <= TARGET_WARM_RATIO)}"
        )
    figures: dict[str, Any] = {
        "rooms": args.rooms,
        "bots": args.bots,
        "floor_p50": f50,
        "floor_p95": f95,
        "ping_p50": p50,
        "ping_p95": p95,
        "rss_mb": rss,
        "rss_peak_mb": hwm,
        "start_s": start,
        "ready_s": statistics.median(ready_s),
        "rooms_list": rooms,
        "accounts": accounts,
    }
    if relay_s:
        figures["relay_p50"] = statistics.median(relay_s)
        figures["relay_p95"] = pct(relay_s, 0.95)
    return figures


def main() -> int:
    logging.basicConfig(level=logging.ERROR)  # the member's client chats about its key shares
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--shape", choices=SHAPES, default="sqlite")
    p.add_argument("--rooms", type=int, default=100)
    p.add_argument("--bots", type=int, default=4)
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--warm-rooms", type=int, default=5, help="rooms pinged first after a restart")
    p.add_argument("--profile", help="write a cProfile of the bot process's last run here")
    p.add_argument(
        "--no-relay", dest="relay", action="store_false", help="skip the bare-client relay floor"
    )
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
