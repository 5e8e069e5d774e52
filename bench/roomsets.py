"""Benchmark: Synapse CPU per message, every bot in every room vs each bot in its own rooms.

    .venv/bin/python bench/roomsets.py [--clubs 8] [--messages 1200] [--rate 20] [--rounds 2]
        [--idle 10] [--workdir DIR]

One fresh Synapse (SQLite, loopback, a temp dir unless `--workdir`). The network is provisioned
from YAML by `clubs apply`'s code: `--clubs` clubs with the example's rooms (general,
announcements, sessions, support, a staff-only moderators room) and one cohort each (its chat
room), four bot accounts, and three load senders who are the staff of every club (so they are in
every room, the moderators room included).

The bots are plain syncing clients, not the runtime: each long-polls /sync with the runtime's
filter (`clubs.core.e2ee.SYNC_FILTER`) and joins the rooms it is invited to, and nothing else
(no decryption, no replies), so what is measured is the homeserver's work for their rooms. The
load is the moderation bench's: `--rate` messages per second, message n from sender n mod 3 into
room n mod (number of club and cohort rooms), shaped like Megolm messages (`m.room.encrypted`
with a ciphertext of a short text's size; Synapse never reads it), from senders who do not sync.

Two configurations, alternated `--rounds` times in the same run on the same Synapse, switched by
applying the network again (which kicks the bots from the rooms they no longer serve, or invites
them back):
- all rooms: every bot with `rooms: all` (before per-bot room sets: four bots in every room);
- own rooms: the default room sets (moderation everywhere, scheduling in announcements and
  sessions, facilitation in sessions and the cohort rooms, checkins in support).
In each, once every bot has joined exactly its rooms: Synapse's CPU time (utime + stime from
/proc/<pid>/stat) over `--idle` seconds of no messages (the bots' idle long-polls), then over
`--messages` messages sent at the steady rate until every bot's sync has delivered every
message of its rooms; CPU per message = the second difference / messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
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
class Figures:
    config: str
    bots_per_message: float
    idle_cpu_per_s: float
    cpu_per_message_ms: float
    sync_responses_per_message: float
    rate: float


async def bots_settled(bots: Iterable[SyncingBot], expected: dict[str, set[str]]) -> None:
    """Until every bot's sync has joined exactly the rooms it should be in."""

    async def done() -> bool:
        return all(b.joined == expected[b.name] for b in bots)

    await eventually(done, within=180, interval=0.2)


async def measure(
    config: str,
    synapse: SynapseHarness,
    desired: DesiredNetwork,
    bots: Sequence[SyncingBot],
    senders: Sequence[Account],
    args: argparse.Namespace,
    tag: str,
) -> Figures:
    """Apply `desired`, wait for the bots to be in exactly their rooms, then measure."""
    admin, provisioner = synapse.admin.http, synapse.admin.user_id
    result = await apply_network(admin, desired, provisioner)
    print(f"  {config}: {result.summary()}", flush=True)
    actual = await discover(admin, desired, provisioner)
    ids = {ref: str(room_id) for ref, room_id in actual.room_ids().items()}
    expected = {
        b.name: {ids[r.ref] for r in desired.rooms if b.account.user_id in r.members} for b in bots
    }
    await bots_settled(bots, expected)
    rooms = [ids[r.ref] for r in desired.rooms if not r.is_space]
    targets = [rooms[i % len(rooms)] for i in range(args.messages)]
    await asyncio.sleep(SETTLE_S)  # the joins' own work (push rules, caches) done

    assert synapse.hs.process is not None
    pid = synapse.hs.process.pid
    t0, c0 = time.monotonic(), cpu_seconds(pid)
    await asyncio.sleep(args.idle)
    idle = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)

    want = {b.name: b.messages + sum(t in expected[b.name] for t in targets) for b in bots}
    syncs0 = sum(b.syncs for b in bots)
    c0 = cpu_seconds(pid)
    sent, seconds = await send_messages(senders, rooms, args.messages, args.rate, tag)

    async def delivered() -> bool:
        return all(b.messages >= want[b.name] for b in bots)

    await eventually(delivered, within=120, interval=0.02)
    cpu = cpu_seconds(pid) - c0
    figures = Figures(
        config,
        bots_per_message=sum(t in expected[b.name] for t in targets for b in bots) / sent,
        idle_cpu_per_s=idle,
        cpu_per_message_ms=cpu / sent * 1000,
        sync_responses_per_message=(sum(b.syncs for b in bots) - syncs0) / sent,
        rate=sent / seconds,
    )
    print(
        f"  {config}: {figures.bots_per_message:.2f} bots per message; Synapse idle "
        f"{figures.idle_cpu_per_s * 1000:.1f} ms CPU/s; {sent} messages at {figures.rate:.1f}/s:"
        f" {figures.cpu_per_message_ms:.2f} ms CPU per message, "
        f"{figures.sync_responses_per_message:.2f} bot sync responses per message",
        flush=True,
    )
    return figures


# --- entry -------------------------------------------------------------------------------------


async def bench(synapse: SynapseHarness, args: argparse.Namespace) -> list[Figures]:
    t = time.monotonic()
    accounts = [await synapse.new_user(f"bot-{name}", user_type="bot") for name in BOT_NAMES]
    senders = [await synapse.new_user("sender") for _ in range(SENDERS)]
    localparts = {
        name: a.user_id[1:].split(":", 1)[0] for name, a in zip(BOT_NAMES, accounts, strict=True)
    }
    net_id = f"roomsets-{secrets.token_hex(3)}"
    sender_ids = [s.user_id for s in senders]
    every = {name: f"{{localpart: {lp}, rooms: all}}" for name, lp in localparts.items()}
    networks = {
        "all rooms": network_yaml(net_id, args.clubs, every, sender_ids),
        "own rooms": network_yaml(net_id, args.clubs, localparts, sender_ids),
    }
    desired = {
        config: compile_network(parse_network(text), synapse.server_name)
        for config, text in networks.items()
    }
    bots = [SyncingBot(name, a) for name, a in zip(BOT_NAMES, accounts, strict=True)]
    for bot in bots:
        await bot.start()
    print(f"setup: accounts and bot syncs in {time.monotonic() - t:.1f} s", flush=True)
    try:
        first = desired["all rooms"]
        await apply_network(synapse.admin.http, first, synapse.admin.user_id)
        actual = await discover(synapse.admin.http, first, synapse.admin.user_id)
        for sender in senders:
            for ref, room in actual.rooms.items():
                if sender.user_id in first.room(ref).members:
                    await sender.http.post(path(*CS, "join", room.room_id), {})
        rooms = [r for r in first.rooms if not r.is_space]
        print(
            f"network: {args.clubs} clubs, {len(first.rooms)} rooms and spaces, "
            f"{len(rooms)} rooms messages go to; {time.monotonic() - t:.1f} s",
            flush=True,
        )
        # A warm-up round that is not counted: caches, the first sync of every room.
        await send_messages(senders, [actual.rooms[r.ref].room_id for r in rooms], 60, 20, "w")
        figures = []
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}:", flush=True)
            for config in CONFIGS:
                tag = f"r{round_}{config[0]}"
                figures.append(
                    await measure(config, synapse, desired[config], bots, senders, args, tag)
                )
        return figures
    finally:
        for bot in bots:
            await bot.stop()


def report(figures: Sequence[Figures], args: argparse.Namespace) -> None:
    print()
    print(f"command: .venv/bin/python bench/roomsets.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"Synapse CPU per message ({args.messages} messages at {args.rate:g}/s into "
        f"{args.clubs} clubs' rooms, 4 bots syncing with the runtime's filter, "
        f"{args.rounds} round(s) alternating):"
    )
    by_config = {c: [f for f in figures if f.config == c] for c in CONFIGS}
    means = {}
    for config, fs in by_config.items():
        per_message = [f.cpu_per_message_ms for f in fs]
        idle_ms = statistics.mean(f.idle_cpu_per_s for f in fs) * 1000
        means[config] = statistics.mean(per_message)
        print(
            f"  {config:9}: {means[config]:.2f} ms CPU per message (runs: "
            + ", ".join(f"{x:.2f}" for x in per_message)
            + f"); {fs[0].bots_per_message:.2f} bots in a message's room; "
            f"{statistics.mean(f.sync_responses_per_message for f in fs):.2f} bot sync "
            f"responses per message; idle {idle_ms:.1f} ms CPU/s"
        )
    before, after = means["all rooms"], means["own rooms"]
    fewer = by_config["all rooms"][0].bots_per_message - by_config["own rooms"][0].bots_per_message
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
                figures = await bench(synapse, args)
            finally:
                await synapse.admin.http.close()
                await synapse.close()
        finally:
            hs.stop()
    report(figures, args)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clubs", type=int, default=8, help="clubs of 6 rooms each (and 3 spaces)")
    p.add_argument("--messages", type=int, default=1200, help="messages per measurement")
    p.add_argument("--rate", type=float, default=20.0, help="messages per second")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two configurations")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU per measurement")
    p.add_argument("--workdir", type=Path, help="keep Synapse and its log here (not a temp dir)")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
