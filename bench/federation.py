"""Benchmark: a network-wide ban issued on server A, seen by a member on server B.

    .venv/bin/python bench/federation.py [--rooms 4] [--trials 15] [--no-admin] [--workdir DIR]
    .venv/bin/python bench/federation.py --restart [--down-s 2]

Two Synapses of the network on loopback (tests/federation.py: different server names, TLS from
a network CA made for the run, allow-lists naming only each other), SQLite each. `--rooms`
encrypted v12 rooms, half hosted on A and half on B. The moderation bot is an account on A with
power 50 in all of them (the network's one moderation bot, in the rooms of every server through
federation, docs/federation.md); a reader is an account on B in every room, long-polling /sync
as a client does; every trial has a fresh target, an account on B in every room.

Per trial, in alternating order:
- ban: the bot's `ban_everywhere` (the fan-out `!ban` runs), set up as `clubs bots run` sets it
  up: power levels from the bot's room cache (kept by its sync; here read once at set-up), the
  target's memberships in one admin request on A (the bot host's admin view; `--no-admin`: one
  membership read per room instead), then the bans at once; from the call until the reader's
  /sync has the ban in every room;
- floor: the bot sends one plain message to every room at once, from the call until the reader's
  /sync has all of them: what A → B delivery costs for the same number of events.

Printed: median and p95 of both, and their ratio. Target: ban ≤ 1.3× the floor (p50).

`--restart [--down-s S]` measures something else: B is stopped, the bot on A sends a message to
a room of A that the reader on B is in, B stays down S seconds and starts again, and the bot
sends a second message. Printed: when each reached the reader's /sync, counted from B's
restart. A short outage is covered by the retries of A's own transaction; once those are spent
(minutes), A backs off from B, and the template makes it try again after 30 s
(`federation.destination_min_retry_interval`; Synapse's default is 10 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bots import pct, verdict
from bench.moderation import Observer, Seen, banned
from clubs.bots.moderation.moderator import Moderator
from clubs.bots.moderation.store import ModerationStore
from clubs.core.adminview import AdminView
from clubs.core.clock import SystemClock
from clubs.core.db import Database
from clubs.core.http import RoomId, UserId, path
from clubs.core.txn import txn_id
from tests.federation import federated_servers
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.moderation.helpers import membership
from tests.integration.test_federation import create_room, join

CS = ("_matrix", "client", "v3")
TARGET = 1.3


class Reader(Observer):
    """The member on B: also notes plain messages (the floor)."""

    KINDS = Observer.KINDS | {"m.room.message"}


def message_from(sender: str, rooms: set[str], marker: str) -> Callable[[Seen], bool]:
    def match(s: Seen) -> bool:
        ev = s.event
        return (
            s.room_id in rooms
            and ev["sender"] == sender
            and ev["type"] == "m.room.message"
            and ev.get("content", {}).get("body") == marker
        )

    return match


async def timed(action: Callable[[], Awaitable[Any]], seen: Callable[[], Awaitable[Any]]) -> float:
    started = time.monotonic()
    await action()
    await seen()
    return time.monotonic() - started


async def setup(
    a: SynapseHarness, b: SynapseHarness, rooms: int
) -> tuple[Account, Account, dict[RoomId, str]]:
    """The bot (on A), the reader (on B) and the rooms, each with the server it lives on."""
    owner_a, bot = await a.new_user("owner"), await a.new_user("bot", user_type="bot")
    owner_b, reader = await b.new_user("owner"), await b.new_user("reader")
    made: dict[RoomId, str] = {}
    for i in range(rooms):
        owner, host = (owner_a, a) if i % 2 == 0 else (owner_b, b)
        room = await create_room(
            owner, invite=[bot.user_id, reader.user_id], users={bot.user_id: 50}
        )
        await join(bot, room, host.server_name)
        await join(reader, room, host.server_name)
        made[room] = host.server_name
    return bot, reader, made


async def new_target(b: SynapseHarness, rooms: dict[RoomId, str], bot: Account) -> Account:
    """A fresh account on B, invited by the bot into every room and joined there."""
    target = await b.new_user("target")
    for room, via in rooms.items():
        await bot.http.post(path(*CS, "rooms", room, "invite"), {"user_id": target.user_id})
        await join(target, room, via)
    for room in rooms:

        async def in_room(room: RoomId = room) -> bool:
            return await membership(bot.http, room, target.user_id) == "join"

        await eventually(in_room, within=30)
    return target


async def room_power(bot: Account, room: RoomId) -> tuple[dict[str, Any], frozenset[str]]:
    """What the bot's room cache holds: the power levels, and the creators (room v12)."""
    levels = await bot.http.get(path(*CS, "rooms", room, "state", "m.room.power_levels", ""))
    create = await bot.http.get(
        path(*CS, "rooms", room, "state", "m.room.create", ""), query={"format": "event"}
    )
    creators = {create["sender"], *create.get("content", {}).get("additional_creators", [])}
    return levels, frozenset(creators)


async def restart(args: argparse.Namespace) -> int:
    base = Path(args.workdir or tempfile.mkdtemp(prefix="clubs-bench-fed-"))
    async with federated_servers(base, ("a", "b")) as net:
        a, b = net["a"], net["b"]
        bot, reader_account, hosts = await setup(a, b, 1)
        room = next(iter(hosts))

        async def say(marker: str) -> None:
            await bot.http.put(
                path(*CS, "rooms", room, "send", "m.room.message", txn_id("bench", marker)),
                {"msgtype": "m.text", "body": marker},
            )

        b.hs.stop()
        await say("while B was down")
        await asyncio.sleep(args.down_s)  # A tries, fails, and retries
        await asyncio.to_thread(b.hs.start)
        started = time.monotonic()
        await say("after B came back")
        reader = Reader(reader_account.http)
        observe = asyncio.create_task(reader.run())
        try:
            for marker in ("after B came back", "while B was down"):
                await reader.wait(message_from(bot.user_id, {room}, marker), within=900)
                print(f"{marker!r}: seen on B {time.monotonic() - started:.1f} s after its restart")
        finally:
            observe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await observe
    return 0


async def run(args: argparse.Namespace) -> int:
    if args.restart:
        return await restart(args)
    base = Path(args.workdir or tempfile.mkdtemp(prefix="clubs-bench-fed-"))
    async with federated_servers(base, ("a", "b")) as net:
        a, b = net["a"], net["b"]
        bot, reader_account, hosts = await setup(a, b, args.rooms)
        rooms = list(hosts)
        reader = Reader(reader_account.http)
        observe = asyncio.create_task(reader.run())
        db = await Database.open(base / "mod.db")
        cache = {room: await room_power(bot, room) for room in rooms}

        async def power_source(room: RoomId) -> tuple[dict[str, Any], frozenset[str]]:
            return cache[room]

        mod = Moderator(
            bot.http,
            UserId(bot.user_id),
            await ModerationStore.open(db),
            clock=SystemClock(),
            admin=None if args.no_admin else AdminView(a.admin.http),
            power_source=power_source,
        )
        bans: list[float] = []
        floors: list[float] = []
        room_set = set(rooms)
        try:
            for trial in range(args.trials):
                target = await new_target(b, hosts, bot)
                if trial == 0 and not args.no_admin:
                    seen = await AdminView(a.admin.http).memberships(UserId(target.user_id))
                    known = sum(1 for r in rooms if (seen or {}).get(r) == "join")
                    print(f"A's admin view sees the target (on B) in {known} of {len(rooms)} rooms")
                marker = f"floor {trial}"

                async def send_all(marker: str = marker) -> None:
                    await asyncio.gather(
                        *(
                            bot.http.put(
                                path(
                                    *CS,
                                    "rooms",
                                    r,
                                    "send",
                                    "m.room.message",
                                    txn_id("bench", marker, r),
                                ),
                                {"msgtype": "m.text", "body": marker},
                            )
                            for r in rooms
                        )
                    )

                async def floor_seen(marker: str = marker) -> None:
                    await reader.wait(message_from(bot.user_id, room_set, marker), len(rooms))

                async def ban(target: Account = target) -> None:
                    report = await mod.ban_everywhere(UserId(target.user_id), "", rooms)
                    if not report.ok or len(report.done) != len(rooms):
                        raise RuntimeError(f"ban incomplete: {report}")

                async def ban_seen(target: Account = target) -> None:
                    await reader.wait(banned(target.user_id, room_set, bot.user_id), len(rooms))

                pair = [("floor", send_all, floor_seen), ("ban", ban, ban_seen)]
                if trial % 2:
                    pair.reverse()
                for kind, action, seen in pair:
                    took = await timed(action, seen)
                    (bans if kind == "ban" else floors).append(took)
                print(
                    f"trial {trial + 1}/{args.trials}: ban {bans[-1] * 1000:.0f} ms, "
                    f"floor {floors[-1] * 1000:.0f} ms",
                    flush=True,
                )
        finally:
            observe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await observe
            await db.close()
    ratio50 = statistics.median(bans) / statistics.median(floors)
    ratio95 = pct(bans, 95) / pct(floors, 95)
    print(
        f"\n{args.rooms} rooms ({(args.rooms + 1) // 2} on A, {args.rooms // 2} on B), "
        f"{args.trials} trials; reader and target on B, bot on A; "
        f"{'no admin view' if args.no_admin else 'admin view on A'}"
    )
    print(
        f"ban seen on B:   p50 {statistics.median(bans) * 1000:.0f} ms, "
        f"p95 {pct(bans, 95) * 1000:.0f} ms"
    )
    print(
        f"floor seen on B: p50 {statistics.median(floors) * 1000:.0f} ms, "
        f"p95 {pct(floors, 95) * 1000:.0f} ms"
    )
    print(f"ratio: p50 {ratio50:.2f}x, p95 {ratio95:.2f}x (target <= {TARGET}x at p50)")
    print(verdict(ratio50 <= TARGET))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rooms", type=int, default=4)
    p.add_argument("--trials", type=int, default=15)
    p.add_argument(
        "--no-admin", action="store_true", help="no admin view: one membership read per room"
    )
    p.add_argument(
        "--restart", action="store_true", help="delivery to B after B restarts (see above)"
    )
    p.add_argument("--down-s", type=float, default=2.0, help="with --restart: B's outage")
    p.add_argument("--workdir", help="keep the servers' files here (default: a temp dir)")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
