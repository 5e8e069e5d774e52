"""Benchmark: the moderation bot end to end, in encrypted rooms, under background load.

    .venv/bin/python bench/moderation.py [--rooms 100] [--runs 3] [--trials 20] [--others 5]
        [--load 20] [--restarts 3] [--profile FILE] [--workdir DIR]

One fresh Synapse (SQLite, loopback, a temp dir unless `--workdir`). `--rooms` managed encrypted
v12 rooms over ten clubs, made as the provisioner makes them. The moderation bot runs in a
process of its own exactly as `clubs bots run` hosts it (`tests/integration/bots/modproc.py`:
`open_runtimes`, the shipped factory and default thresholds, a cross-signed device from the
vault, production long-poll), so its start-up and RSS are its own. Members who act are
independent cross-signed mautrix clients (Element with "exclude insecure devices"); "seen"
figures come from another member of every room, long-polling /sync as a client does.

Background load: a separate process sends `--load` encrypted messages per second, spread over 50
rooms, from three members who stop syncing once set up (senders only, like members who write
without reading along: Synapse's work per message is then to store it and wake the clients that
do sync). It is bounded (a send that would make more than 20 in flight is skipped and counted)
and stops by itself after `--load-max-s`, or when this script goes away.

Measured, always from the trigger event's `origin_server_ts` (stamped: the resulting event's
`origin_server_ts`; seen: when the other member's /sync returned it):
1. network ban: a moderator sends `!ban @x reason` (encrypted) in one room → the last of the
   `--rooms` ban events (read back from each room's state); `--runs` runs, a fresh target each.
   Floors from the same Synapse, load and run: the same bans raw with no checks, all at once,
   and room by room (Draupnir's way, over 25 rooms).
2. flood: a fresh member sends the threshold's number of messages back to back → the mute
   (power levels) event; `--trials` members. After each, a trial of the floor for any one-write
   reaction: a bare /sync client answering a trigger with one write, same room, same moment.
3. join wave → join rules `invite`; personal data (a phone number) → redaction; mention spam →
   redaction; a link from a member who just joined → redaction; `--others` trials each.
4. start-up of the bot process from a stored token to its first sync done (`--restarts`
   restarts, under load), and its peak RSS (VmHWM, the kernel's ru_maxrss) after all of the above.

The peer to beat is Draupnir on the same Synapse (unencrypted rooms, no load): a 100-room ban in
2.99 s, flood action 0.170 s as seen by another member, start-up 0.82 s, RSS 216 MiB. Targets:
ban ≤ 1.5 s; flood ≤ 0.17 s median and ≤ 0.3 s p95. Synapse on SQLite is single-connection: when
its database thread saturates under the load, every figure grows with its queue; the floors in
the same run say how much of a figure is the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import itertools
import json
import logging
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet
from mautrix.types import EventType, RoomID, UserID

from clubs.bots.moderation.detect import Thresholds
from clubs.core.admin import Session
from clubs.core.homeserver import Homeserver, Settings
from clubs.core.http import DeviceId, MatrixHttp, UserId, path
from clubs.core.paths import project_root
from clubs.core.secrets import MASTER_KEY_ENV
from tests.harness import Account, SynapseHarness, bootstrap_admin, eventually
from tests.integration.bots.modproc import ADMIN_TOKEN_ENV, LOG_FILE, READY_FILE
from tests.integration.bots.support import CS, create_bot_account, managed_room, new_network
from tests.mautrix_client import MautrixPeer

DRAUPNIR = {"ban": 2.99, "flood": 0.170, "start": 0.82, "rss": 216.0}
TARGET_BAN_S = 1.5
TARGET_FLOOD_P50_S = 0.17
TARGET_FLOOD_P95_S = 0.3
LOAD_ROOMS = 50
LOAD_SENDERS = 3  # coprime with LOAD_ROOMS: every member writes in every loaded room
LOAD_IN_FLIGHT = 20
SEQUENTIAL_ROOMS = 25
RELAY = "floor: one sync hop + one write"
WAVE_JOINS = Thresholds().join_wave_joins
FLOOD_MESSAGES = Thresholds().flood_messages
CHATTER = (
    "see you at the meeting",
    "спасибо, договорились",
    "who brings the flyers?",
    "я опоздаю минут на десять",
    "the hall is booked",
    "кто ведёт протокол?",
    "sounds good to me",
    "давайте обсудим это в четверг",
)


# --- small helpers ---------------------------------------------------------------------------


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


async def gather_bounded(n: int, coros: Iterable[Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(n)

    async def one(c: Awaitable[Any]) -> Any:
        async with gate:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the kernel SIGTERMs the child when this script dies (no orphan bot or load)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def proc_status_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def event_ts(http: MatrixHttp, room: str, event_id: str) -> int:
    event = await http.get(path(*CS, "rooms", room, "event", event_id))
    return int(event["origin_server_ts"])


async def member_event(http: MatrixHttp, room: str, user: str) -> dict[str, Any]:
    return await http.get(
        path(*CS, "rooms", room, "state", "m.room.member", user), query={"format": "event"}
    )


async def peer_in(peer: MautrixPeer, rooms: Iterable[str], bot: str) -> None:
    """Wait until the peer's sync knows each room is encrypted and has the bot as a member (its
    room keys then go to the bot's device)."""
    store = peer.client.state_store

    async def ready() -> bool:
        for room in rooms:
            if not await store.is_encrypted(RoomID(room)):
                return False
            if not await store.is_joined(RoomID(room), UserID(bot)):
                return False
        return True

    await eventually(ready, within=60, interval=0.05)


async def send(peer: MautrixPeer, room: str, content: dict[str, Any]) -> str:
    return str(await peer.client.send_message_event(RoomID(room), EventType.ROOM_MESSAGE, content))


def text(body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body}


# --- another member's /sync ------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    room_id: str
    event: dict[str, Any]
    wall: float
    """time.time() when this member's /sync returned it."""

    @property
    def ts(self) -> int:
        return int(self.event["origin_server_ts"])


class Observer:
    """A member of every room, long-polling /sync like a client and noting when each state
    change and redaction (what moderation produces; never encrypted) arrived.

    No event-type filter on the timeline: Synapse then pages back through history to fill the
    timeline of every room whose new events were all filtered out, thousands of queries per
    sync under load, which would slow the server for everyone measured here."""

    FILTER = json.dumps(
        {
            "presence": {"types": []},
            "account_data": {"types": []},
            "room": {
                "state": {"lazy_load_members": True},
                "ephemeral": {"types": []},
                "account_data": {"types": []},
                "timeline": {"limit": 50},
            },
        }
    )
    KINDS = frozenset(
        {"m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.redaction"}
    )

    def __init__(self, http: MatrixHttp) -> None:
        self.http = http
        self.seen: list[Seen] = []
        self._changed = asyncio.Event()

    async def run(self) -> None:
        since: str | None = None
        while True:
            query = {"filter": self.FILTER, "timeout": "30000"}
            if since is not None:
                query["since"] = since
            resp = await self.http.get(path(*CS, "sync"), query=query)
            wall = time.time()
            for room_id, room in resp.get("rooms", {}).get("join", {}).items():
                for event in room.get("timeline", {}).get("events", []):
                    if event.get("type") in self.KINDS:
                        self.seen.append(Seen(room_id, event, wall))
            since = resp["next_batch"]
            self._changed.set()

    async def wait(
        self, predicate: Callable[[Seen], bool], count: int = 1, within: float = 30
    ) -> list[Seen]:
        """The first `count` arrivals matching `predicate` (waiting for them)."""
        async with asyncio.timeout(within):
            while True:
                hits = [s for s in self.seen if predicate(s)]
                if len(hits) >= count:
                    return hits[:count]
                self._changed.clear()
                await self._changed.wait()


def redaction_of(room: str, event_id: str, by: str) -> Callable[[Seen], bool]:
    def match(s: Seen) -> bool:
        ev = s.event
        redacts = ev.get("redacts") or ev.get("content", {}).get("redacts")
        return (
            s.room_id == room
            and ev["sender"] == by
            and ev["type"] == "m.room.redaction"
            and redacts == event_id
        )

    return match


def muted(room: str, user: str, by: str) -> Callable[[Seen], bool]:
    def match(s: Seen) -> bool:
        ev = s.event
        if s.room_id != room or ev["sender"] != by or ev["type"] != "m.room.power_levels":
            return False
        content = ev.get("content", {})
        return int(content.get("users", {}).get(user, 0)) < int(content.get("events_default", 0))

    return match


def locked(room: str, by: str) -> Callable[[Seen], bool]:
    def match(s: Seen) -> bool:
        ev = s.event
        return (
            s.room_id == room
            and ev["sender"] == by
            and ev["type"] == "m.room.join_rules"
            and ev.get("content", {}).get("join_rule") == "invite"
        )

    return match


def banned(user: str, rooms: set[str], by: str) -> Callable[[Seen], bool]:
    def match(s: Seen) -> bool:
        ev = s.event
        return (
            s.room_id in rooms
            and ev["sender"] == by
            and ev["type"] == "m.room.member"
            and ev.get("state_key") == user
            and ev.get("content", {}).get("membership") == "ban"
        )

    return match


# --- the figures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reaction:
    trigger_ts: int
    """origin_server_ts of the event that crosses the threshold (or of the command)."""
    action_ts: int
    """origin_server_ts of the (last) resulting event."""
    seen_wall: float
    """When the other member's /sync had it."""

    @property
    def stamped_s(self) -> float:
        return (self.action_ts - self.trigger_ts) / 1000

    @property
    def seen_s(self) -> float:
        return self.seen_wall - self.trigger_ts / 1000


@dataclass
class Results:
    bans: list[Reaction] = field(default_factory=list)
    first_ban_s: list[float] = field(default_factory=list)
    reactions: dict[str, list[Reaction]] = field(default_factory=dict)
    floor_sequential_gap_ms: float = 0.0
    floor_parallel: tuple[float, float] = (0.0, 0.0)
    """(stamped, seen) of the last of the raw bans sent all at once."""
    starts: list[dict[str, float]] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)
    rss_imports_mib: float = 0.0
    load: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    loadavg: tuple[float, float] = (0.0, 0.0)
    failures: list[str] = field(default_factory=list)


# --- the bot and load processes --------------------------------------------------------------


class BotProcess:
    """`tests.integration.bots.modproc` as a child process."""

    def __init__(
        self, url: str, var: Path, bot: str, network: str, provisioner: str, admin_token: str
    ) -> None:
        self.url, self.var, self.bot = url, var, bot
        self.network, self.provisioner, self.admin_token = network, provisioner, admin_token
        self.proc: asyncio.subprocess.Process | None = None
        self.python_args: list[str] = []

    async def start(self) -> float:
        """Spawn; returns the wall time just before the spawn."""
        (self.var / READY_FILE).unlink(missing_ok=True)
        env = {**os.environ, ADMIN_TOKEN_ENV: self.admin_token}
        argv = [
            sys.executable,
            *self.python_args,
            "-m",
            "tests.integration.bots.modproc",
            *("--url", self.url, "--var", str(self.var), "--account", self.bot),
            *("--network", self.network, "--provisioner", self.provisioner),
        ]
        with (self.var / "modproc.console").open("ab") as out:
            wall = time.time()
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=project_root(),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=die_with_parent,
            )
        return wall

    async def wait_ready(self, within: float) -> dict[str, Any]:
        ready = self.var / READY_FILE

        async def probe() -> bool:
            if self.proc is None or self.proc.returncode is not None:
                tail = (self.var / LOG_FILE).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the bot process exited; log tail:\n{tail}")
            return ready.exists()

        await eventually(probe, within=within, interval=0.01)
        facts: dict[str, Any] = json.loads(ready.read_text())
        facts["seen"] = time.time()
        return facts

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.proc = None


class LoadProcess:
    """This script with `--role load`: the background chatter, in a process of its own so that
    its encryption work is not charged to the measuring side."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, within: float = 180) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--role",
            "load",
            "--load-config",
            str(self.config),
            cwd=project_root(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(within):
            line = await self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the load process did not start: {line!r}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> dict[str, Any]:
        if self.proc is None:
            return {}
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write(b"stop\n")
            await self.proc.stdin.drain()
        try:
            async with asyncio.timeout(30):
                line = await self.proc.stdout.readline()
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return {}
        finally:
            self.proc = None
        stats: dict[str, Any] = json.loads(line) if line.strip() else {}
        return stats


def quiet_mautrix() -> None:
    """mautrix warns about every device that is not cross-signed (by design here)."""
    logging.getLogger("mau").setLevel(logging.ERROR)


async def load_role(config_file: Path) -> int:
    """The load process: encrypted chatter at a fixed rate until told to stop, its parent goes
    away (stdin closes) or `max_s` is up, whichever comes first."""
    quiet_mautrix()
    cfg = json.loads(config_file.read_text())
    url, rooms, rate = cfg["url"], cfg["rooms"], float(cfg["rate"])
    peers = []
    for a in cfg["accounts"]:
        session = Session(UserId(a["user_id"]), DeviceId(a["device_id"]), a["token"])
        peer = await MautrixPeer.start(Account(session, "", MatrixHttp(url, a["token"])), url)
        peers.append(peer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.readline()  # "stop", or b"" when the parent is gone
        stop.set()

    watcher = asyncio.create_task(watch_stdin())
    try:
        for peer in peers:
            await peer_in(peer, rooms, cfg["bot"])
            # Senders only, like members who write but are not looking: once the rooms, members
            # and devices are known they stop syncing, so Synapse's work per message is to store
            # it and to wake the clients that do sync (the bot's, the measuring member's).
            peer.client.stop()
        # Each member's room key reaches every device once, before the measured part.
        await gather_bounded(
            4,
            [send(p, r, text(random.choice(CHATTER))) for p in peers for r in rooms],
        )
        print("ready", flush=True)
        stats = await chatter(peers, rooms, rate, stop, float(cfg["max_s"]))
        print(json.dumps(stats), flush=True)
    finally:
        watcher.cancel()
        for peer in peers:
            await peer.stop()
    return 0


async def chatter(
    peers: Sequence[MautrixPeer],
    rooms: Sequence[str],
    rate: float,
    stop: asyncio.Event,
    max_s: float,
) -> dict[str, Any]:
    """Message n goes to room n mod len(rooms) from member n mod len(peers)."""
    started = time.monotonic()
    deadline = started + max_s
    interval = 1 / rate
    next_at = started
    n = sent = failed = skipped = 0
    in_flight: set[asyncio.Task[None]] = set()

    async def one(peer: MautrixPeer, room: str) -> None:
        nonlocal sent, failed
        try:
            await send(peer, room, text(random.choice(CHATTER)))
            sent += 1
        except Exception:
            failed += 1

    while not stop.is_set() and time.monotonic() < deadline:
        if len(in_flight) >= LOAD_IN_FLIGHT:
            skipped += 1
        else:
            task = asyncio.create_task(one(peers[n % len(peers)], rooms[n % len(rooms)]))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        n += 1
        next_at += interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
    elapsed = time.monotonic() - started
    await asyncio.gather(*in_flight, return_exceptions=True)
    return {
        "sent": sent,
        "failed": failed,
        "skipped": skipped,
        "seconds": round(elapsed, 1),
        "rate": round(sent / elapsed, 2) if elapsed else 0.0,
        "cpu_s": round(time.process_time(), 1),
    }


# --- the measurement -------------------------------------------------------------------------


class Relay:
    """The least any bot could do for a one-write reaction, on the same server under the same
    load: a bare client long-polling /sync as the bot does (no filter) that answers a trigger
    message in `room` with one power-levels write (the room creator's token; it raises the
    measuring member to level `i + 1` for trial `i`), measured like the protections. It neither
    decrypts nor reads the power levels before writing them."""

    def __init__(self, url: str, token: str, room: str) -> None:
        self.http = MatrixHttp(url, token)
        self.room = room
        self.pl_url = path(*CS, "rooms", room, "state", "m.room.power_levels", "")
        self.pl: dict[str, Any] = {}
        self.triggers: dict[str, tuple[str, int]] = {}
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Relay:
        first = await self.http.get(
            path(*CS, "sync"),
            query={"timeout": "0", "filter": json.dumps({"room": {"timeline": {"limit": 1}}})},
        )
        self.task = asyncio.create_task(self._run(first["next_batch"]))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.http.close()

    async def _run(self, since: str) -> None:
        while True:
            resp = await self.http.get(
                path(*CS, "sync"), query={"since": since, "timeout": "30000"}
            )
            since = resp["next_batch"]
            joined = resp.get("rooms", {}).get("join", {})
            for event in joined.get(self.room, {}).get("timeline", {}).get("events", []):
                trigger = self.triggers.pop(event.get("content", {}).get("body", ""), None)
                if trigger is not None:
                    who, level = trigger
                    self.pl["users"] = {**self.pl.get("users", {}), who: level}
                    await self.http.put(self.pl_url, self.pl)

    async def trial(
        self, i: int, sender: MatrixHttp, observer: Observer, member: Account
    ) -> Reaction:
        """Like a flood: the threshold's number of messages back to back, the last one the
        trigger."""
        self.pl = await self.http.get(self.pl_url)  # read before the trigger, not timed
        body = f"floor-{i}"
        self.triggers[body] = (member.user_id, i + 1)
        for k in range(FLOOD_MESSAGES):
            sent = await sender.put(
                path(*CS, "rooms", self.room, "send", "m.room.message", f"floor{i}.{k}"),
                {"msgtype": "m.text", "body": body if k == FLOOD_MESSAGES - 1 else f"{body}.{k}"},
            )
        ts = await event_ts(member.http, self.room, sent["event_id"])

        def relayed(s: Seen) -> bool:
            ev = s.event
            return (
                s.room_id == self.room
                and ev["type"] == "m.room.power_levels"
                and ev.get("content", {}).get("users", {}).get(member.user_id) == i + 1
            )

        (action,) = await observer.wait(relayed, within=30)
        return Reaction(ts, action.ts, action.wall)


class Bench:
    def __init__(self, synapse: SynapseHarness, tmp: Path, args: argparse.Namespace) -> None:
        self.synapse = synapse
        self.tmp = tmp
        self.var = tmp / "var"
        self.args = args
        self.results = Results()
        self.peers: list[MautrixPeer] = []

    async def users(self, prefix: str, n: int) -> list[Account]:
        return await gather_bounded(8, [self.synapse.new_user(prefix) for _ in range(n)])

    async def peer(self, account: Account, rooms: Sequence[str]) -> MautrixPeer:
        peer = await MautrixPeer.start(account, self.synapse.url)
        self.peers.append(peer)
        await peer_in(peer, rooms, self.bot.user_id)
        return peer

    async def drop(self, peer: MautrixPeer) -> None:
        self.peers.remove(peer)
        await peer.stop()

    async def setup(self) -> None:
        a = self.args
        s = self.synapse
        t = time.monotonic()
        self.network = new_network()
        self.bot = await create_bot_account(s, self.var, "moderation")
        (
            self.moderator,
            self.observer_account,
            self.spammer,
            self.doxxer,
            self.linker,
        ) = await self.users("member", 5)
        self.loaders = await self.users("load", LOAD_SENDERS)
        self.targets = await self.users("target", a.runs + 2)
        self.flooders = await self.users("flooder", a.trials)
        self.raiders = await self.users("raider", WAVE_JOINS)  # each raids every wave room
        everyone = [self.observer_account.user_id, *(u.user_id for u in self.targets)]
        n_load = min(LOAD_ROOMS, a.rooms)
        self.rooms: list[str] = []
        for i in range(a.rooms):
            invite = [self.bot.user_id, *everyone]
            if i < n_load:
                invite += [u.user_id for u in self.loaders]
            powers = {self.bot.user_id: 100}
            if i == 0:
                invite.append(self.moderator.user_id)
                powers[self.moderator.user_id] = 50
            invite += {
                1: [u.user_id for u in self.flooders],
                2: [self.spammer.user_id],
                3: [self.doxxer.user_id],
                4: [self.linker.user_id],
            }.get(i, [])
            room = await managed_room(
                s, self.network, invite=invite, powers=powers, key=f"r{i}", club=f"c{i % 10}"
            )
            self.rooms.append(room)
        self.cmd_room, self.flood_room, self.mention_room, self.pd_room, self.link_room = (
            self.rooms[:5]
        )
        self.wave_rooms = self.rooms[5 : 5 + a.others]
        self.load_rooms = self.rooms[:n_load]
        joins = [(self.observer_account, r) for r in self.rooms]
        joins += [(u, r) for u in self.targets[:-2] for r in self.rooms]
        joins += [(self.targets[-2], r) for r in self.rooms[:SEQUENTIAL_ROOMS]]
        joins += [(self.targets[-1], r) for r in self.rooms]
        joins += [(u, r) for u in self.loaders for r in self.load_rooms]
        joins += [(u, self.flood_room) for u in self.flooders]
        joins += [
            (self.moderator, self.cmd_room),
            (self.spammer, self.mention_room),
            (self.doxxer, self.pd_room),
        ]
        await gather_bounded(8, [u.http.post(path(*CS, "join", r), {}) for u, r in joins])
        print(
            f"setup: {a.rooms} managed encrypted rooms in 10 clubs, "
            f"{len(joins)} member joins: {time.monotonic() - t:.1f} s",
            flush=True,
        )

    async def measure(self) -> Results:
        a = self.args
        before = os.getloadavg()[0]
        await self.setup()
        s = self.synapse
        self.botproc = BotProcess(
            s.url,
            self.var,
            self.bot.user_id,
            self.network,
            s.admin.user_id,
            s.admin.session.access_token,
        )
        if a.profile:  # the last run (the measured one) leaves its stats there
            self.botproc.python_args = ["-m", "cProfile", "-o", str(Path(a.profile).resolve())]
        assert s.hs.process is not None
        synapse_pid = s.hs.process.pid
        observer = Observer(self.observer_account.http)
        observer_task = asyncio.create_task(observer.run())
        load = LoadProcess(self.tmp / "load.json")
        try:
            t = time.monotonic()
            await self.botproc.start()  # the first start joins every room and makes the policy room
            await self.botproc.wait_ready(within=300)
            print(
                f"setup: the bot's first start (joins, policy room): {time.monotonic() - t:.1f} s"
            )
            t = time.monotonic()
            write_private_json(
                load.config,
                {
                    "url": s.url,
                    "bot": self.bot.user_id,
                    "rooms": self.load_rooms,
                    "rate": a.load,
                    "max_s": a.load_max_s,
                    "accounts": [
                        {
                            "user_id": u.user_id,
                            "device_id": u.session.device_id,
                            "token": u.session.access_token,
                        }
                        for u in self.loaders
                    ],
                },
            )
            if a.load > 0:
                await load.start()
                print(f"setup: load running ({time.monotonic() - t:.1f} s to start)", flush=True)
            await self.startups()
            cpu0 = {"synapse": cpu_seconds(synapse_pid), "bot": cpu_seconds(self.botproc.pid)}
            wall0 = time.monotonic()
            phases = (
                self.bans,
                self.floors,
                self.floods,
                self.redactions,
                self.waves,
            )
            for phase in phases:
                t = time.monotonic()
                try:
                    await phase(observer)
                    print(f"{phase.__name__}: {time.monotonic() - t:.0f} s", flush=True)
                except Exception as e:  # the other phases still say something
                    self.results.failures.append(f"{phase.__name__}: {type(e).__name__}: {e}")
                    print(f"phase {phase.__name__} failed: {type(e).__name__}: {e}", flush=True)
            self.results.rss = proc_status_mib(self.botproc.pid)
            wall = time.monotonic() - wall0
            self.results.cpu = {
                "synapse": (cpu_seconds(synapse_pid) - cpu0["synapse"]) / wall,
                "bot": (cpu_seconds(self.botproc.pid) - cpu0["bot"]) / wall,
            }
        finally:
            self.results.loadavg = (before, os.getloadavg()[0])
            self.results.load = await load.stop()
            await self.botproc.stop()
            observer_task.cancel()
            for peer in self.peers:
                await peer.stop()
        return self.results

    async def startups(self) -> None:
        """Restart the bot from its stored token and position, under load."""
        for _ in range(self.args.restarts):
            await self.botproc.stop()
            await asyncio.sleep(1.0)  # chatter piles up while it is down, as in life
            spawned = await self.botproc.start()
            facts = await self.botproc.wait_ready(within=120)
            self.results.rss_imports_mib = facts["rss_imports_kb"] / 1024
            self.results.starts.append(
                {
                    "ready": facts["ready"] - spawned,
                    "interpreter": facts["started"] - spawned,
                    "imports": facts["imported"] - facts["started"],
                    "device+sync": facts["ready"] - facts["imported"],
                }
            )
        await asyncio.sleep(2.0)  # the backlog of the downtime is worked off

    async def bans(self, observer: Observer) -> None:
        mod = await self.peer(self.moderator, [self.cmd_room])
        await send(mod, self.cmd_room, text("hi all"))  # room key shared before the runs
        await asyncio.sleep(1.0)
        rooms = set(self.rooms)
        for target in self.targets[: self.args.runs]:
            user = target.user_id
            cmd = await send(mod, self.cmd_room, text(f"!ban {user} spam and provocation"))
            cmd_ts = await event_ts(self.observer_account.http, self.cmd_room, cmd)
            seen = await observer.wait(
                banned(user, rooms, self.bot.user_id), count=len(rooms), within=60
            )
            stamps = await gather_bounded(
                16,
                [member_event(self.observer_account.http, r, user) for r in self.rooms],
            )
            assert all(e["content"]["membership"] == "ban" for e in stamps)
            ts = [int(e["origin_server_ts"]) for e in stamps]
            self.results.bans.append(Reaction(cmd_ts, max(ts), max(x.wall for x in seen)))
            self.results.first_ban_s.append((min(ts) - cmd_ts) / 1000)
            print(
                f"ban run: command → last ban stamped {(max(ts) - cmd_ts) / 1000:.3f} s, "
                f"seen {max(x.wall for x in seen) - cmd_ts / 1000:.3f} s",
                flush=True,
            )
            await asyncio.sleep(3.0)  # the bot's reply, audit and its own rule event settle

    async def floors(self, observer: Observer) -> None:
        """The same bans raw from the room creator's token, no checks: room by room (on the
        first `SEQUENTIAL_ROOMS` rooms; Draupnir's way), then all at once."""
        http = self.synapse.admin.http
        seq, par = self.targets[-2].user_id, self.targets[-1].user_id
        some = self.rooms[:SEQUENTIAL_ROOMS]
        for room in some:
            await http.post(path(*CS, "rooms", room, "ban"), {"user_id": seq, "reason": "floor"})
        ts = sorted(
            int(e["origin_server_ts"])
            for e in await gather_bounded(16, [member_event(http, r, seq) for r in some])
        )
        self.results.floor_sequential_gap_ms = statistics.median(
            b - a for a, b in itertools.pairwise(ts)
        )
        await asyncio.sleep(2.0)
        started = time.time()
        await gather_bounded(
            100,
            [
                http.post(path(*CS, "rooms", r, "ban"), {"user_id": par, "reason": "floor"})
                for r in self.rooms
            ],
        )
        seen = await observer.wait(
            banned(par, set(self.rooms), self.synapse.admin.user_id),
            count=len(self.rooms),
            within=60,
        )
        ts = [
            int(e["origin_server_ts"])
            for e in await gather_bounded(16, [member_event(http, r, par) for r in self.rooms])
        ]
        self.results.floor_parallel = (
            max(ts) / 1000 - started,
            max(x.wall for x in seen) - started,
        )
        await asyncio.sleep(2.0)

    async def floods(self, observer: Observer) -> None:
        """Flood trials, each followed by a trial of the floor (same room, same moment)."""
        out = self.results.reactions.setdefault("flood → mute", [])
        floor = self.results.reactions.setdefault(RELAY, [])
        admin = self.synapse.admin
        async with Relay(self.synapse.url, admin.session.access_token, self.flood_room) as relay:
            for i, flooder in enumerate(self.flooders):
                # One member's client at a time (every syncing client costs Synapse per event).
                peer = await self.peer(flooder, [self.flood_room])
                await asyncio.sleep(0.5)  # the bot has fetched the new device's keys
                ids = [
                    await send(peer, self.flood_room, text(f"BUY NOW {k}"))
                    for k in range(FLOOD_MESSAGES)
                ]
                crossing = await event_ts(self.observer_account.http, self.flood_room, ids[-1])
                (mute,) = await observer.wait(
                    muted(self.flood_room, flooder.user_id, self.bot.user_id), within=30
                )
                out.append(Reaction(crossing, mute.ts, mute.wall))
                await self.drop(peer)
                await asyncio.sleep(0.5)  # the audit entry goes out
                floor.append(await relay.trial(i, admin.http, observer, self.observer_account))
                await asyncio.sleep(0.3)

    async def redactions(self, observer: Observer) -> None:
        spammer = await self.peer(self.spammer, [self.mention_room])
        doxxer = await self.peer(self.doxxer, [self.pd_room])
        await self.linker.http.post(path(*CS, "join", self.link_room), {})  # the bot sees it
        linker = await self.peer(self.linker, [self.link_room])
        names = [u.user_id for u in [*self.flooders, *self.targets]][
            : Thresholds().max_mentions + 1
        ]
        for peer, room in ((spammer, self.mention_room), (doxxer, self.pd_room)):
            await send(peer, room, text("hi all"))
        await send(linker, self.link_room, text("hi, I'm new here"))
        await asyncio.sleep(1.5)
        cases: list[tuple[str, MautrixPeer, str, Callable[[int], dict[str, Any]]]] = [
            (
                "personal data → redaction",
                doxxer,
                self.pd_room,
                lambda i: text(f"мой номер +7 916 123-45-{60 + i}, звоните"),
            ),
            (
                "mention spam → redaction",
                spammer,
                self.mention_room,
                lambda i: {
                    **text(f"look {i}: " + " ".join(names)),
                    "m.mentions": {"user_ids": names},
                },
            ),
            (
                "link from a new member → redaction",
                linker,
                self.link_room,
                lambda i: text(f"great deals at https://example.org/offer/{i}"),
            ),
        ]
        for name, peer, room, content in cases:
            out = self.results.reactions.setdefault(name, [])
            for i in range(self.args.others):
                event_id = await send(peer, room, content(i))
                ts = await event_ts(self.observer_account.http, room, event_id)
                (red,) = await observer.wait(
                    redaction_of(room, event_id, self.bot.user_id), within=30
                )
                out.append(Reaction(ts, red.ts, red.wall))
                # The DM to the sender (created on the first) and the audit entry go out.
                await asyncio.sleep(1.5 if i == 0 else 1.0)

    async def waves(self, observer: Observer) -> None:
        # Opened only now: a bot joining a room sees the joins that came before its own as
        # timeline events, and the setup's quick joins would count as a wave.
        for room in self.wave_rooms:
            await self.synapse.admin.http.put(
                path(*CS, "rooms", room, "state", "m.room.join_rules", ""), {"join_rule": "public"}
            )
        await asyncio.sleep(1.0)
        out = self.results.reactions.setdefault("join wave → join rules invite", [])
        for room in self.wave_rooms:
            for raider in self.raiders:
                await raider.http.post(path(*CS, "join", room), {})
            joined = await member_event(self.observer_account.http, room, self.raiders[-1].user_id)
            (lock,) = await observer.wait(locked(room, self.bot.user_id), within=30)
            out.append(Reaction(int(joined["origin_server_ts"]), lock.ts, lock.wall))
            await asyncio.sleep(1.0)  # the alert and the audit entry go out


def write_private_json(file: Path, value: Any) -> None:
    file.touch(mode=0o600)
    file.write_text(json.dumps(value))


# --- the report ------------------------------------------------------------------------------


def report(r: Results, args: argparse.Namespace) -> None:
    load = r.load
    print()
    print(
        f"moderation bot in its own process; {args.rooms} managed encrypted rooms in 10 clubs; "
        f"background load {args.load:g} msg/s asked over {min(LOAD_ROOMS, args.rooms)} rooms "
        f"from {LOAD_SENDERS} members, encrypted: {load.get('rate', 0)} msg/s sent "
        f"({load.get('failed', 0)} failed, {load.get('skipped', 0)} skipped; the load process "
        f"used {load.get('cpu_s', 0)} s of CPU)"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, load average {r.loadavg[0]:.2f} before and "
        f"{r.loadavg[1]:.2f} after (other work on the machine shares them with Synapse); "
        f"CPU during the runs: Synapse {r.cpu.get('synapse', 0):.0%}, "
        f"bot {r.cpu.get('bot', 0):.0%} of one core"
    )
    print()
    head = (
        f"{'from the trigger origin_server_ts to':38} {'n':>3} {'stamped p50':>12} {'p95':>8} "
        f"{'seen p50':>9} {'p95':>8}  target, Draupnir"
    )
    print(head)
    print("-" * (len(head) + 24))

    def row(name: str, rs: list[Reaction], note: str) -> None:
        if not rs:
            print(f"{name:38} {0:>3}  (no result)")
            return
        st = [x.stamped_s * 1000 for x in rs]
        se = [x.seen_s * 1000 for x in rs]
        print(
            f"{name:38} {len(rs):>3} {statistics.median(st):9.0f} ms {pct(st, 0.95):5.0f} ms "
            f"{statistics.median(se):6.0f} ms {pct(se, 0.95):5.0f} ms  {note}"
        )

    if r.bans:
        ban50 = statistics.median(x.stamped_s for x in r.bans)
        ban_note = (
            f"stamped ≤ {TARGET_BAN_S * 1000:.0f} ms {verdict(ban50 <= TARGET_BAN_S)}; "
            f"{DRAUPNIR['ban'] * 1000:.0f} ms ({ban50 / DRAUPNIR['ban']:.2f}×)"
        )
    else:
        ban_note = ""
    row(f"the last of {args.rooms} bans after !ban", r.bans, ban_note)
    flood = r.reactions.get("flood → mute", [])
    flood_note = ""
    if flood:
        f50 = statistics.median(x.seen_s for x in flood)
        f95 = pct([x.seen_s for x in flood], 0.95)
        flood_note = (
            f"seen ≤ {TARGET_FLOOD_P50_S * 1000:.0f}/{TARGET_FLOOD_P95_S * 1000:.0f} ms "
            f"{verdict(f50 <= TARGET_FLOOD_P50_S and f95 <= TARGET_FLOOD_P95_S)}; "
            f"{DRAUPNIR['flood'] * 1000:.0f} ms seen ({f50 / DRAUPNIR['flood']:.2f}×)"
        )
    row("the mute after a flood", flood, flood_note)
    floor = r.reactions.get(RELAY, [])
    if floor and flood:
        ratio = statistics.median(x.seen_s for x in flood) / statistics.median(
            x.seen_s for x in floor
        )
        row(RELAY, floor, f"flood/floor, seen p50: {ratio:.2f}×")
    for name, rs in r.reactions.items():
        if name not in ("flood → mute", RELAY):
            row(name, rs, "")
    print()
    if r.bans:
        print(
            "ban runs, stamped/seen: "
            + ", ".join(f"{x.stamped_s:.3f}/{x.seen_s:.3f}" for x in r.bans)
            + " s; the first ban stamped "
            + ", ".join(f"{x:.3f}" for x in r.first_ban_s)
            + " s after the command"
        )
    if r.floor_parallel[0]:
        gap = r.floor_sequential_gap_ms
        print(
            f"ban floors (same Synapse and load, raw bans with no checks from the creator's "
            f"token): all {args.rooms} at once, the last stamped {r.floor_parallel[0]:.3f} s and "
            f"seen {r.floor_parallel[1]:.3f} s after the first request; room by room (Draupnir's "
            f"way, over {SEQUENTIAL_ROOMS} rooms) {gap:.0f} ms apart, i.e. "
            f"{gap * (args.rooms - 1) / 1000:.1f} s for {args.rooms} (Draupnir: 27 ms apart)"
        )
    lag = [x.seen_wall - x.action_ts / 1000 for rs in r.reactions.values() for x in rs]
    if lag:
        print(
            f"delivery of the actions to the other member's /sync (seen − stamped): "
            f"p50 {statistics.median(lag) * 1000:.0f} ms, p95 {pct(lag, 0.95) * 1000:.0f} ms"
        )
    if r.starts:
        ready = [x["ready"] for x in r.starts]
        start50 = statistics.median(ready)
        last = r.starts[-1]
        print(
            "start-up from a stored token to the first sync done"
            + (" (under load): " if args.load > 0 else ": ")
            + ", ".join(f"{x:.2f}" for x in ready)
            + f" s, median {start50:.2f} s; Draupnir {DRAUPNIR['start']} s "
            f"({start50 / DRAUPNIR['start']:.2f}×). Last: interpreter {last['interpreter']:.2f} s"
            f", imports {last['imports']:.2f} s, device + policy room + first sync "
            f"{last['device+sync']:.2f} s"
        )
    if r.rss:
        hwm = r.rss["VmHWM"]
        print(
            f"bot process peak RSS (VmHWM, = its ru_maxrss) after all runs: {hwm:.0f} MiB "
            f"(now {r.rss['VmRSS']:.0f} MiB; after the imports alone {r.rss_imports_mib:.0f} MiB);"
            f" Draupnir {DRAUPNIR['rss']:.0f} MiB ({hwm / DRAUPNIR['rss']:.2f}×)"
        )
    for failure in r.failures:
        print(f"FAILED phase {failure}")


# --- entry -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    quiet_mautrix()
    os.environ.setdefault(MASTER_KEY_ENV, Fernet.generate_key().decode())
    with contextlib.ExitStack() as stack:
        if args.workdir:  # kept afterwards: Synapse's and the bot's logs, the load's config
            args.workdir.mkdir(parents=True, exist_ok=True)
            tmp = str(args.workdir.resolve())
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="clubs-bench-mod-"))
        hs = Homeserver(Settings(data_dir=Path(tmp) / "synapse", server_name="bench.local", port=0))
        hs.start()
        try:
            synapse = SynapseHarness(hs, await bootstrap_admin(hs))
            try:
                bench = Bench(synapse, Path(tmp), args)
                results = await bench.measure()
            finally:
                await synapse.admin.http.close()
                await synapse.close()
        finally:
            hs.stop()
    report(results, args)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rooms", type=int, default=100)
    p.add_argument("--runs", type=int, default=3, help="network bans (a fresh target each)")
    p.add_argument("--trials", type=int, default=20, help="floods (a fresh member each)")
    p.add_argument("--others", type=int, default=5, help="trials of every other protection")
    p.add_argument("--load", type=float, default=20.0, help="background messages per second")
    p.add_argument("--load-max-s", type=float, default=900.0, help="the load stops by itself")
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--profile", help="run the bot process under cProfile, write the stats here")
    p.add_argument(
        "--workdir", type=Path, help="keep Synapse, logs and stores here (not a temp dir)"
    )
    p.add_argument("--role", choices=("driver", "load"), default="driver", help=argparse.SUPPRESS)
    p.add_argument("--load-config", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "load":
        return asyncio.run(load_role(args.load_config))
    if args.rooms < 5 + args.others:
        p.error(f"--rooms must be at least 5 + --others ({5 + args.others})")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
