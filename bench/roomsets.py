"""Benchmark: Synapse CPU per message, every bot in every room vs each bot in its own rooms.

    .venv/bin/python bench/roomsets.py [--clubs 8] [--blocks 12] [--block 200] [--rate 20]
        [--idle 10] [--workdir DIR]

One fresh Synapse (SQLite, loopback, a temp dir unless `--workdir`) with two networks side by
side, provisioned from YAML by `clubs apply`'s code, alike but for the bots:
- "all rooms": its four bots with `rooms: all`, i.e. every bot in every room and space, as
  before per-bot room sets;
- "own rooms": its four bots with the default room sets (moderation everywhere, scheduling in
  announcements and sessions, facilitation in sessions and the cohort rooms, checkins in
  support).
Each network has `--clubs` clubs with the example's rooms (general, announcements, sessions,
support, a staff-only moderators room) and one cohort each (its chat room); three load senders
are the staff of every club of both (so they are in every room, the moderators room included).

The eight bots are plain syncing clients, not the runtime: each long-polls /sync with the
runtime's filter (`clubs.core.e2ee.SYNC_FILTER`), has joined the rooms it was invited to, and
does nothing else (no decryption, no replies), so what is measured is the homeserver's work for
their rooms. All eight sync throughout. The load is the moderation bench's: `--rate` messages a
second, message n from sender n mod 3 into room n mod (the network's club and cohort rooms),
shaped like Megolm messages (`m.room.encrypted` with a ciphertext of a short text's size;
Synapse never reads it), from senders who do not sync.

Measured: Synapse's CPU time (utime + stime from /proc/<pid>/stat) over blocks of `--block`
messages, each block into one network, from its first send until every bot of that network has
received every message of its rooms; blocks alternate all/own/own/all/… (`--blocks` in all),
so that Synapse's drift over the run (its cost per message grows as its database and caches do)
falls on both alike. CPU per message = the CPU of a configuration's blocks / their messages.
Also printed: Synapse's idle CPU (every bot long-polling, no messages) over `--idle` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clubs.core.e2ee import SYNC_FILTER
from clubs.core.homeserver import Homeserver, Settings
from clubs.core.http import path
from clubs.provisioning.apply import apply_network
from clubs.provisioning.compile import compile_network
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.discover import discover
from clubs.provisioning.load import parse_network
from tests.harness import Account, SynapseHarness, bootstrap_admin, eventually

CS = ("_matrix", "client", "v3")
BOT_NAMES = ("moderation", "facilitation", "scheduling", "checkins")
SENDERS = 3
IN_FLIGHT = 20
CIPHERTEXT_CHARS = 320  # a short text message, Megolm-encrypted and base64-encoded
SETTLE_S = 3.0
MEGOLM = "m.megolm.v1.aes-sha2"
CONFIGS = ("all rooms", "own rooms")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def network_yaml(net_id: str, clubs: int, bots: dict[str, str], senders: Sequence[str]) -> str:
    """The network file; `bots` maps a bot name to its entry as written (localpart or mapping)."""
    people = "\n".join(
        f'  - {{key: s{i}, mxid: "{mxid}", onboarding: existing}}' for i, mxid in enumerate(senders)
    )
    staff = ", ".join(f"s{i}" for i in range(len(senders)))
    club_list = "\n".join(
        f"      - key: c{c}\n"
        f'        name: "Клуб {c}"\n'
        f"        staff: {{facilitator: [{staff}]}}\n"
        f'        cohorts: [{{key: g{c}, name: "Группа {c}"}}]'
        for c in range(clubs)
    )
    bot_lines = "\n".join(f"  {name}: {entry}" for name, entry in bots.items())
    return f"""\
version: 1
network: {net_id}
name: "Сеть"
bots:
{bot_lines}
people:
{people}
club_template:
  rooms:
    - {{key: general, name: "Общий"}}
    - {{key: announcements, name: "Объявления", power_levels: {{events_default: 50}}}}
    - {{key: sessions, name: "Встречи"}}
    - {{key: support, name: "Поддержка", join_rule: invite}}
    - {{key: moderators, name: "Модераторы", audience: staff}}
cohort_template:
  rooms:
    - {{key: chat, name: "Группа"}}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
{club_list}
"""


# --- a bot as the homeserver sees it: a long-polling /sync client ------------------------------


@dataclass
class SyncingBot:
    """Long-polls /sync with the runtime's filter, joins what it is invited to, counts the
    messages its syncs deliver and how many sync responses carried any."""

    name: str
    account: Account
    joined: set[str] = field(default_factory=set)
    messages: int = 0
    syncs: int = 0
    since: str | None = None
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        first = {**SYNC_FILTER, "room": {**SYNC_FILTER["room"], "timeline": {"limit": 1}}}
        resp = await self.account.http.get(
            path(*CS, "sync"), query={"filter": json.dumps(first), "timeout": "0"}
        )
        self.joined = set(resp.get("rooms", {}).get("join", {}))
        self.since = resp["next_batch"]
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        sync_filter = json.dumps(SYNC_FILTER)
        http = self.account.http
        while True:
            query = {"filter": sync_filter, "timeout": "30000", "since": self.since or ""}
            resp = await http.get(path(*CS, "sync"), query=query)
            self.since = resp["next_batch"]
            rooms = resp.get("rooms", {})
            got = 0
            for room_id, room in rooms.get("join", {}).items():
                self.joined.add(room_id)
                events = room.get("timeline", {}).get("events", [])
                got += sum(1 for e in events if e.get("type") == "m.room.encrypted")
            for room_id in rooms.get("leave", {}):
                self.joined.discard(room_id)
            if got:
                self.messages += got
                self.syncs += 1
            for room_id in rooms.get("invite", {}):
                await http.post(path(*CS, "join", room_id), {})
            self.changed.set()


# --- the load ----------------------------------------------------------------------------------


async def send_messages(
    senders: Sequence[Account], rooms: Sequence[str], n: int, rate: float, tag: str
) -> tuple[int, float]:
    """`n` Megolm-shaped messages at `rate` per second; returns (sent, seconds)."""
    started = time.monotonic()
    interval = 1 / rate
    gate = asyncio.Semaphore(IN_FLIGHT)
    tasks = []

    async def one(i: int) -> None:
        sender = senders[i % len(senders)]
        content = {
            "algorithm": MEGOLM,
            "ciphertext": secrets.token_urlsafe(CIPHERTEXT_CHARS * 3 // 4),
            "session_id": "s" * 43,
            "sender_key": "k" * 43,
            "device_id": sender.session.device_id,
        }
        async with gate:
            await sender.http.put(
                path(*CS, "rooms", rooms[i % len(rooms)], "send", "m.room.encrypted", f"{tag}.{i}"),
                content,
            )

    for i in range(n):
        await asyncio.sleep(max(0.0, started + i * interval - time.monotonic()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return n, time.monotonic() - started


# --- the measurement ---------------------------------------------------------------------------


@dataclass
class Config:
    """One network of the two: its bots and the rooms the messages go to."""

    name: str
    desired: DesiredNetwork
    bots: list[SyncingBot]
    rooms: list[str] = field(default_factory=list)
    serving: dict[str, set[str]] = field(default_factory=dict)
    """bot name → the room ids it is in."""
    cpu_s: float = 0.0
    messages: int = 0
    bot_deliveries: int = 0
    sync_responses: int = 0
    blocks: list[float] = field(default_factory=list)
    """CPU ms per message of each block."""


async def provision(config: Config, synapse: SynapseHarness, senders: Sequence[Account]) -> None:
    """Apply the network, let the senders join every room, wait for the bots to join theirs."""
    admin, provisioner = synapse.admin.http, synapse.admin.user_id
    result = await apply_network(admin, config.desired, provisioner)
    print(f"  {config.name}: {result.summary()}", flush=True)
    actual = await discover(admin, config.desired, provisioner)
    ids = {ref: str(room_id) for ref, room_id in actual.room_ids().items()}
    for sender in senders:
        for room in config.desired.rooms:
            if sender.user_id in room.members:
                await sender.http.post(path(*CS, "join", ids[room.ref]), {})
    config.serving = {
        b.name: {ids[r.ref] for r in config.desired.rooms if b.account.user_id in r.members}
        for b in config.bots
    }
    config.rooms = [ids[r.ref] for r in config.desired.rooms if not r.is_space]

    async def joined() -> bool:
        return all(b.joined == config.serving[b.name] for b in config.bots)

    await eventually(joined, within=300, interval=0.2)


async def block(
    config: Config, pid: int, senders: Sequence[Account], n: int, rate: float, tag: str
) -> None:
    """`n` messages into the network's rooms; CPU from the first send to the last delivery."""
    targets = [config.rooms[i % len(config.rooms)] for i in range(n)]
    want = {
        b.name: b.messages + sum(t in config.serving[b.name] for t in targets) for b in config.bots
    }
    syncs0 = sum(b.syncs for b in config.bots)
    c0 = cpu_seconds(pid)
    await send_messages(senders, config.rooms, n, rate, tag)

    async def delivered() -> bool:
        return all(b.messages >= want[b.name] for b in config.bots)

    await eventually(delivered, within=120, interval=0.02)
    cpu = cpu_seconds(pid) - c0
    config.cpu_s += cpu
    config.messages += n
    config.bot_deliveries += sum(t in config.serving[b.name] for t in targets for b in config.bots)
    config.sync_responses += sum(b.syncs for b in config.bots) - syncs0
    config.blocks.append(cpu / n * 1000)


# --- entry -------------------------------------------------------------------------------------


async def bench(synapse: SynapseHarness, args: argparse.Namespace) -> tuple[list[Config], float]:
    t = time.monotonic()
    senders = [await synapse.new_user("sender") for _ in range(SENDERS)]
    sender_ids = [s.user_id for s in senders]
    configs = []
    for name in CONFIGS:
        accounts = [await synapse.new_user(f"bot-{b}", user_type="bot") for b in BOT_NAMES]
        localparts = [a.user_id[1:].split(":", 1)[0] for a in accounts]
        entries = {
            b: (f"{{localpart: {lp}, rooms: all}}" if name == "all rooms" else lp)
            for b, lp in zip(BOT_NAMES, localparts, strict=True)
        }
        text = network_yaml(f"roomsets-{secrets.token_hex(3)}", args.clubs, entries, sender_ids)
        desired = compile_network(parse_network(text), synapse.server_name)
        bots = [SyncingBot(b, a) for b, a in zip(BOT_NAMES, accounts, strict=True)]
        configs.append(Config(name, desired, bots))
    everyone = [b for c in configs for b in c.bots]
    for bot in everyone:
        await bot.start()
    try:
        print("provisioning:", flush=True)
        for config in configs:
            await provision(config, synapse, senders)
        first = configs[0].desired
        print(
            f"setup: two networks of {args.clubs} clubs, {len(first.rooms)} rooms and spaces "
            f"each, {len(configs[0].rooms)} rooms messages go to; {time.monotonic() - t:.1f} s",
            flush=True,
        )
        assert synapse.hs.process is not None
        pid = synapse.hs.process.pid
        for config in configs:  # warm-up, not counted: caches, every room's first messages
            await send_messages(senders, config.rooms, 2 * len(config.rooms), args.rate, "w")
        await asyncio.sleep(SETTLE_S)
        t0, c0 = time.monotonic(), cpu_seconds(pid)
        await asyncio.sleep(args.idle)
        idle = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        for i in range(args.blocks):
            config = configs[(i + i // 2) % 2]  # all, own, own, all, all, own, …
            await block(config, pid, senders, args.block, args.rate, f"b{i}")
            print(
                f"  block {i + 1:2}/{args.blocks} {config.name}: "
                f"{config.blocks[-1]:.2f} ms CPU per message",
                flush=True,
            )
        return configs, idle
    finally:
        for bot in everyone:
            await bot.stop()


def report(configs: Sequence[Config], idle: float, args: argparse.Namespace) -> None:
    print()
    print(f"command: .venv/bin/python bench/roomsets.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"Synapse CPU per message: {args.blocks} blocks of {args.block} messages at "
        f"{args.rate:g}/s, alternating between two networks of {args.clubs} clubs (6 rooms each) "
        "in one Synapse, 8 bots syncing with the runtime's filter; Synapse idle "
        f"{idle * 1000:.1f} ms CPU/s:"
    )
    per_message = {}
    for c in configs:
        per_message[c.name] = c.cpu_s / c.messages * 1000
        print(
            f"  {c.name:9}: {per_message[c.name]:.2f} ms CPU per message "
            f"(blocks: {', '.join(f'{x:.1f}' for x in c.blocks)}); "
            f"{c.bot_deliveries / c.messages:.2f} bots in a message's room; "
            f"{c.sync_responses / c.messages:.2f} bot sync responses per message"
        )
    before, after = per_message["all rooms"], per_message["own rooms"]
    all_rooms, own_rooms = configs
    fewer = (
        all_rooms.bot_deliveries / all_rooms.messages
        - own_rooms.bot_deliveries / own_rooms.messages
    )
    print(
        f"  own rooms / all rooms: {after / before:.2f}× "
        f"({before - after:.2f} ms less Synapse CPU per message; "
        f"{(before - after) / fewer:.2f} ms per bot no longer in the message's room)"
    )


async def run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
            tmp = str(args.workdir.resolve())
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="clubs-bench-roomsets-"))
        hs = Homeserver(Settings(data_dir=Path(tmp) / "synapse", server_name="bench.local", port=0))
        hs.start()
        try:
            synapse = SynapseHarness(hs, await bootstrap_admin(hs))
            try:
                configs, idle = await bench(synapse, args)
            finally:
                await synapse.admin.http.close()
                await synapse.close()
        finally:
            hs.stop()
    report(configs, idle, args)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clubs", type=int, default=8, help="clubs of 6 rooms each (and 3 spaces)")
    p.add_argument("--blocks", type=int, default=12, help="measured blocks, alternating")
    p.add_argument("--block", type=int, default=200, help="messages per block")
    p.add_argument("--rate", type=float, default=20.0, help="messages per second")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured")
    p.add_argument("--workdir", type=Path, help="keep Synapse and its log here (not a temp dir)")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
