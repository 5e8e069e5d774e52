"""Benchmark: the Telegram bridge relaying at a steady rate both ways, against the same Synapse's
one-hop floor in the same run.

    .venv/bin/python bench/bridge.py [--rate 50] [--seconds 60] [--hold 0]

One fresh Synapse (SQLite, loopback, rooms unencrypted as bridged rooms without consent must be)
loading the bridge's registration; Telegram is the in-process fake of tests/faketelegram.py; the
bridge runs as `clubs bridge run` in its own process (so its RSS is its own). Phases, each
`--seconds` long at `--rate` messages a second:

1. floor: a member sends into an unbridged room and an observer's /sync (long poll) receives
   each message: the one hop any relayed message also makes (a client's send to another
   client's delivery, here the homeserver's push to the application service). The same sends
   are also pushed to a second, empty application service (`AsFloor`: it answers every
   transaction at once and only notes when each message arrived): the **push floor**, the hop
   Matrix -> Telegram really makes, measured on the same messages;
1b. in-order floor: the same sends, each awaited before the next (the order a relay into one
   chat must keep); lag from each message's due time, as for a Telegram update; the rate
   achieved is printed (Synapse persists concurrent sends together, in-order ones one by one);
2. Matrix → Telegram: the member sends into the bridged room; lag = her send until the fake
   Telegram is asked to `sendMessage` it. The empty application service is in that room too,
   so the push floor of the very same messages is measured beside it; and the bridge's own
   /metrics split the mean: the homeserver's push (origin time -> transaction) and the
   bridge's part (transaction -> `sendMessage`);
2b. ghost in-order floor: the bench sends as the ghosts themselves, with the bridge's
   `as_token`, into the bridged room, each send awaited before the next: exactly the requests
   the relay makes for Telegram -> Matrix (the homeserver also pushes each one back to the
   bridge and wakes the bridge bot's sync), without the bridge's own work; the rate achieved
   is printed;
3. Telegram → Matrix: ten Telegram users (their ghosts created before, in a warm-up) write into
   the chat through the fake's `getUpdates`; lag = the update is queued until the observer's
   /sync holds the ghost's message.

Prints p50/p95 of each, the ratios to the floor (target p95 ≤ 1.2×) and to the push floor
(Matrix -> Telegram) and the ghost in-order floor (Telegram -> Matrix), messages lost or
doubled (target 0), and the bridge process's RSS (VmRSS now, VmHWM peak).

Two settings differ from a production bridge, both said in the output: the per-chat pace is
raised (`telegram.per_chat_minute`; Telegram allows 20 sends a minute into one group, so at
50 msg/s real Telegram would answer 429 and the bridge would queue: that is Telegram's limit,
not the bridge's), and the moderation hold is `--hold` seconds (production default 2: each
Matrix → Telegram message then waits that long on purpose).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web
from cryptography.fernet import Fernet

from bench.botmetrics import scrape
from clubs.bridge.config import BridgeConfig
from clubs.bridge.registration import (
    TELEGRAM_TOKEN,
    bot_user,
    ensure_tokens,
    ghost_user,
    write_registration,
)
from clubs.core.admin import ensure_ratelimit_override
from clubs.core.homeserver import Settings, find_free_port
from clubs.core.http import MatrixHttp, RoomId, cs
from clubs.core.namespace import LOCATOR
from clubs.core.secrets import MASTER_KEY_ENV, Vault
from tests.faketelegram import FakeTelegram
from tests.harness import Account, SynapseHarness, bootstrap_admin, eventually
from tests.integration.bridge.conftest import _UnencryptedHomeserver

TARGET_RATIO = 1.2
PHASES = ("floor", "order", "m2t", "ghost", "t2m")
STALL_S = 30.0
NETWORK = "bench"
TOKEN = "424242:bench-fake-telegram-bot-token-0000"  # noqa: S105 - the fake's
CHAT = -1001234500001
USERS = [{"id": 7700000 + i, "is_bot": False, "first_name": f"T{i}"} for i in range(10)]


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def verdict(ok: bool) -> str:
    return "OK" if ok else "OVER TARGET"


def cpu_s(pid: int) -> float:
    """The process's CPU time so far (user + system), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class Observer:
    """A client's /sync long poll: when each message body first arrived (monotonic)."""

    def __init__(self, account: Account) -> None:
        self.http = account.http
        self.arrived: dict[str, float] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        since = (await self.http.get(cs("sync"), query={"timeout": "0"}))["next_batch"]
        self.task = asyncio.create_task(self._loop(str(since)))

    async def _loop(self, since: str) -> None:
        filt = json.dumps(
            {"room": {"timeline": {"limit": 500}, "state": {"lazy_load_members": True}}}
        )
        while True:
            resp = await self.http.get(
                cs("sync"), query={"since": since, "timeout": "30000", "filter": filt}
            )
            now = time.monotonic()
            for room in resp.get("rooms", {}).get("join", {}).values():
                for e in room.get("timeline", {}).get("events", []):
                    body = e.get("content", {}).get("body")
                    if e.get("type") == "m.room.message" and isinstance(body, str):
                        self.arrived.setdefault(body, now)
            since = str(resp["next_batch"])

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


class AsFloor:
    """An application service that does nothing: it answers each transaction at once and notes
    when each message body first arrived. Its one user joins the unbridged room only."""

    def __init__(self, tmp: Path, server_name: str) -> None:
        self.port = find_free_port()
        self.as_token = secrets.token_urlsafe(32)
        self.hs_token = secrets.token_urlsafe(32)
        self.user = f"@asfloor:{server_name}"
        self.arrived: dict[str, float] = {}
        self.registration = tmp / "asfloor.yaml"
        self.registration.write_text(
            json.dumps(
                {
                    "id": "bench-push-floor",
                    "url": f"http://127.0.0.1:{self.port}",
                    "as_token": self.as_token,
                    "hs_token": self.hs_token,
                    "sender_localpart": "asfloor",
                    "rate_limited": False,
                    "namespaces": {
                        "users": [{"regex": "@asfloor_.*", "exclusive": True}],
                        "aliases": [],
                        "rooms": [],
                    },
                }
            )
        )
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/_matrix/app/v1/transactions/{txn}", self._transaction)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _transaction(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        body = await request.json()
        for e in body.get("events", []):
            text = e.get("content", {}).get("body")
            if e.get("type") == "m.room.message" and isinstance(text, str):
                self.arrived.setdefault(text, now)
        return web.json_response({})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def room(synapse: SynapseHarness, key: str, members: Sequence[Account], bot: str) -> RoomId:
    locator = {"network": NETWORK, "kind": "club_room", "club": "c", "key": key, "schema": 1,
               "state": "active"}  # fmt: skip
    created = await synapse.admin.http.post(
        cs("createRoom"),
        {
            "preset": "private_chat",
            "initial_state": [{"type": LOCATOR, "state_key": "", "content": locator}],
            "power_level_content_override": {"users": {bot: 50}, "invite": 50},
            "invite": [m.user_id for m in members],
        },
    )
    room_id = RoomId(created["room_id"])
    for m in members:
        await m.http.post(cs("join", room_id), {})
    return room_id


async def paced(rate: float, seconds: float, send: Any) -> dict[str, float]:
    """Call `send(tag)` `rate` times a second for `seconds`; the monotonic time of each."""
    started: dict[str, float] = {}
    n = int(rate * seconds)
    t0 = time.monotonic()
    tasks = []
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tag = f"{i:06d}-{secrets.token_hex(3)}"
        started[tag] = time.monotonic()
        tasks.append(asyncio.create_task(send(tag)))
    await asyncio.gather(*tasks)
    return started


async def in_order(rate: float, seconds: float, send: Any) -> tuple[dict[str, float], float]:
    """Like `paced`, but each send awaits the one before (the order a relay must keep in a
    chat): the due time of each, and the rate achieved."""
    started: dict[str, float] = {}
    n = int(rate * seconds)
    t0 = time.monotonic()
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tag = f"{i:06d}-{secrets.token_hex(3)}"
        started[tag] = due  # queued at its due time, as a Telegram update is
        await send(tag)
    return started, n / (time.monotonic() - t0)


def where_m2t_goes(before: dict[str, float], after: dict[str, float], m2t: list[float]) -> str:
    """Means over the phase, from the bridge's own /metrics: the homeserver's push (a message's
    origin time to the transaction reaching the bridge) and the bridge's part (the transaction
    to the copy sent to Telegram)."""

    def mean_ms(name: str, labels: str = "") -> float:
        key = f"{{{labels}}}" if labels else ""
        count = after.get(f"{name}_count{key}", 0) - before.get(f"{name}_count{key}", 0)
        total = after.get(f"{name}_sum{key}", 0) - before.get(f"{name}_sum{key}", 0)
        return total / count * 1e3 if count else float("nan")

    push = mean_ms("clubs_bridge_push_lag_seconds")
    relay = mean_ms("clubs_bridge_relay_lag_seconds", 'direction="to_telegram"')
    whole = sum(m2t) / len(m2t) * 1e3 if m2t else float("nan")
    return (
        f"where it goes (means): send -> sendMessage {whole:.0f} ms; of it, the origin time -> "
        f"the transaction reaching the bridge {push:.0f} ms, the transaction -> sendMessage "
        f"{relay - push:.0f} ms"
    )


async def until_done(done: Any, total: int, stall_s: float = STALL_S) -> None:
    """Wait while `done()` grows towards `total`: a relay that falls behind is waited for (its
    lag is what is measured), and only what stops arriving for `stall_s` counts as lost."""
    last, since = -1, time.monotonic()
    while (now := done()) < total:
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > stall_s:
            return
        await asyncio.sleep(0.2)


def report(name: str, started: dict[str, float], arrived: dict[str, float]) -> list[float]:
    lags = [arrived[t] - s for t, s in started.items() if t in arrived]
    lost = len(started) - len(lags)
    print(
        f"{name}: {len(started)} sent, {lost} lost; lag p50 {pct(lags, 0.5) * 1e3:.0f} ms, "
        f"p95 {pct(lags, 0.95) * 1e3:.0f} ms, max {max(lags, default=0) * 1e3:.0f} ms"
    )
    return lags


async def run(args: argparse.Namespace) -> int:
    master = Fernet.generate_key()
    os.environ[MASTER_KEY_ENV] = master.decode()
    with tempfile.TemporaryDirectory(prefix="clubs-bench-bridge-") as tmp_dir:
        tmp = Path(tmp_dir)
        port = find_free_port()
        config = BridgeConfig(
            enabled=True, port=port, url=f"http://127.0.0.1:{port}", server_name="bench.local"
        )
        var = tmp / "var"
        vault = Vault(var / "secrets" / "vault", key=master)
        vault.set(TELEGRAM_TOKEN, TOKEN)
        registration = write_registration(config, vault, var)
        push_floor = AsFloor(tmp, "bench.local")
        hs = _UnencryptedHomeserver(
            Settings(
                data_dir=tmp / "synapse",
                server_name="bench.local",
                port=0,
                app_service_config_files=(str(registration), str(push_floor.registration)),
                log_level="WARNING",
            )
        )
        hs.start()
        try:
            synapse = SynapseHarness(hs, await bootstrap_admin(hs))
            try:
                await push_floor.start()
                try:
                    return await measure(synapse, var, config, push_floor, args)
                finally:
                    await push_floor.stop()
            finally:
                await synapse.admin.http.close()
                await synapse.close()
        finally:
            hs.stop()


async def measure(
    synapse: SynapseHarness,
    var: Path,
    config: BridgeConfig,
    push_floor: AsFloor,
    args: argparse.Namespace,
) -> int:
    phases = set(args.phases.split(","))
    telegram = FakeTelegram(TOKEN, poll_cap_s=1.0)
    await telegram.start()
    telegram.add_chat(CHAT)
    anna = await synapse.new_user("anna", displayname="Анна")
    obs = await synapse.new_user("obs")
    for who in (anna, obs):
        await ensure_ratelimit_override(synapse.admin.http, who.user_id)
    bot = bot_user(synapse.server_name)
    (var / "bridge.yaml").write_text(
        "enabled: true\n"
        f"listen: {{host: 127.0.0.1, port: {config.port}}}\n"
        f"homeserver: {synapse.url}\nserver_name: {synapse.server_name}\n"
        f"telegram: {{api: '{telegram.url}', poll_timeout_s: 10, per_chat_minute: 100000}}\n"
        f"hold_s: {args.hold}\n"
    )
    (var / "network.yaml").write_text(
        f"version: 1\nnetwork: {NETWORK}\nname: Сеть\ncountries:\n  - key: kz\n    name: К\n"
        "    clubs:\n      - key: c\n        name: Клуб\n        rooms:\n"
        f"          - {{key: general, name: Общий, bridge: {{telegram: {{chat: {CHAT}, "
        "mode: relay}}}\n"
    )
    log = (var / "bridge.log").open("ab")
    proc = subprocess.Popen(  # noqa: ASYNC220 - the process under test, started once
        [sys.executable, "-m", "clubs.cli", "bridge", "run", "--config", str(var / "bridge.yaml"),
         "--network", str(var / "network.yaml"), "--var-dir", str(var)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    observer = Observer(obs)
    try:

        async def health() -> dict[str, Any] | None:
            try:
                async with aiohttp.ClientSession() as http, http.get(config.url + "/health") as r:
                    body = await r.json()
                    return body if isinstance(body, dict) else None
            except aiohttp.ClientError:
                return None

        await eventually(health, within=60, interval=0.2)
        bridged = await room(synapse, "general", [anna, obs], bot)
        plain = await room(synapse, "plain", [anna, obs], bot)
        async with MatrixHttp(synapse.url, push_floor.as_token) as floor_as:
            for target in (plain, bridged):  # in the bridged room: the same messages' push
                await synapse.admin.http.post(
                    cs("rooms", target, "invite"), {"user_id": push_floor.user}
                )
                await floor_as.post(cs("join", target), {})
        await synapse.admin.http.post(cs("rooms", bridged, "invite"), {"user_id": bot})

        async def portal() -> bool:
            h = await health()
            return h is not None and h.get("portals") == 1

        await eventually(portal, within=30, interval=0.2)
        await observer.start()
        # Warm-up: every Telegram user's ghost exists and has joined before the clock runs.
        for u in USERS:
            await telegram.user_says(CHAT, u, f"warm-{u['id']}")
        await eventually(
            lambda: _holds(all(f"warm-{u['id']}" in observer.arrived for u in USERS)), within=60
        )
        print(
            f"rate {args.rate}/s for {args.seconds} s per phase; per-chat pace raised to "
            f"100000/min (Telegram's is 20); hold {args.hold} s (production default 2)"
        )

        async def send(target: RoomId, prefix: str, tag: str) -> None:
            await anna.http.put(
                cs("rooms", target, "send", "m.room.message", tag),
                {"msgtype": "m.text", "body": f"{prefix}-{tag}"},
            )

        started = await paced(args.rate, args.seconds, lambda t: send(plain, "floor", t))
        await asyncio.sleep(3)
        floor = report(
            "floor (member send -> observer /sync)",
            started,
            {k.removeprefix("floor-"): v for k, v in observer.arrived.items()},
        )
        pushed = report(
            "push floor (the same sends -> an empty application service's transaction)",
            started,
            {k.removeprefix("floor-"): v for k, v in push_floor.arrived.items()},
        )

        # The floor a relay into one chat sits on: the same sends, one after the other.
        ordered: list[float] = []
        m2t: list[float] = []
        m2t_pushed: list[float] = []
        ghost_floor: list[float] = []
        t2m: list[float] = []
        doubled_tg = doubled_mx = 0
        if "order" in phases:
            started, achieved = await in_order(
                args.rate, args.seconds, lambda t: send(plain, "order", t)
            )
            await asyncio.sleep(3)
            ordered = report(
                "in-order floor (member sends one after another -> observer /sync)",
                started,
                {k.removeprefix("order-"): v for k, v in observer.arrived.items()},
            )
            print(f"  in-order sends achieved {achieved:.1f} msg/s (asked {args.rate})")

        seen: dict[str, float] = {}

        def calls_seen() -> dict[str, float]:
            for c in telegram.method_calls("sendMessage"):
                text = str(c.params.get("text", ""))
                if "m2t-" in text:
                    seen.setdefault(text.rsplit("m2t-", 1)[1], c.at)
            return seen

        if "m2t" in phases:
            cpu0 = cpu_s(proc.pid)
            before = await scrape(config.port)
            started = await paced(args.rate, args.seconds, lambda t: send(bridged, "m2t", t))
            await until_done(lambda: len(calls_seen()), len(started))
            m2t = report("Matrix -> Telegram (send -> sendMessage)", started, calls_seen())
            m2t_pushed = report(
                "  push floor on the same messages (send -> the empty service's transaction)",
                started,
                {k.removeprefix("m2t-"): v for k, v in push_floor.arrived.items()},
            )
            per = (cpu_s(proc.pid) - cpu0) / len(started) * 1e3
            print(f"  the bridge process's CPU: {per:.2f} ms per message")
            print("  " + where_m2t_goes(before, await scrape(config.port), m2t))
            doubled_tg = len(
                [c for c in telegram.method_calls("sendMessage") if "m2t-" in str(c.params)]
            ) - len(seen)

        # The floor under Telegram -> Matrix: the relay's own requests, without the relay.
        if "ghost" in phases:
            tokens = ensure_tokens(Vault(var / "secrets" / "vault"))
            # The same ten ghosts in turn, as the Telegram -> Matrix phase's senders.
            ghosts = iter(
                [ghost_user(int(str(u["id"])), synapse.server_name) for u in USERS]
                * (args.rate * args.seconds)
            )
            async with MatrixHttp(synapse.url, tokens.as_token) as as_http:

                async def as_ghost(tag: str) -> None:
                    await as_http.put(
                        cs("rooms", bridged, "send", "m.room.message", tag),
                        {"msgtype": "m.text", "body": f"ghost-{tag}"},
                        query={"user_id": next(ghosts)},
                    )

                started, ghost_rate = await in_order(args.rate, args.seconds, as_ghost)
            await asyncio.sleep(3)
            ghost_floor = report(
                "ghost in-order floor (the relay's sends as a ghost, one after another -> /sync)",
                started,
                {k.removeprefix("ghost-"): v for k, v in observer.arrived.items()},
            )
            print(f"  ghost in-order sends achieved {ghost_rate:.1f} msg/s (asked {args.rate})")

        if "t2m" in phases:
            users = iter(USERS * (args.rate * args.seconds))

            async def tg(tag: str) -> None:
                await telegram.user_says(CHAT, next(users), f"t2m-{tag}")

            cpu0 = cpu_s(proc.pid)
            started = await paced(args.rate, args.seconds, tg)
            expected = {f"t2m-{t}" for t in started}
            await until_done(lambda: len(expected & observer.arrived.keys()), len(expected))
            t2m = report(
                "Telegram -> Matrix (update queued -> observer /sync)",
                started,
                {k.removeprefix("t2m-"): v for k, v in observer.arrived.items()},
            )
            per = (cpu_s(proc.pid) - cpu0) / len(started) * 1e3
            print(f"  the bridge process's CPU: {per:.2f} ms per message")
            events = await _room_bodies(obs, bridged)
            doubled_mx = sum(1 for b in events if b.startswith("t2m-")) - len(
                {b for b in events if b.startswith("t2m-")}
            )
        now, peak = rss_mb(proc.pid)
        f95 = pct(floor, 0.95)
        f50 = pct(floor, 0.5)
        for name, lags in (("Matrix -> Telegram", m2t), ("Telegram -> Matrix", t2m)):
            r50, r95 = pct(lags, 0.5) / f50, pct(lags, 0.95) / f95
            print(
                f"{name}: p50 {r50:.2f}x, p95 {r95:.2f}x the floor "
                f"(target p95 <= {TARGET_RATIO}x) {verdict(r95 <= TARGET_RATIO)}"
            )
        for name, lags, base, what in (
            ("Matrix -> Telegram", m2t, pushed, "the push floor"),
            ("Matrix -> Telegram", m2t, m2t_pushed, "the push floor on the same messages"),
            ("Telegram -> Matrix", t2m, ordered, "the in-order floor"),
            ("Telegram -> Matrix", t2m, ghost_floor, "the ghost in-order floor"),
        ):
            print(
                f"{name} against {what}: p50 {pct(lags, 0.5) / pct(base, 0.5):.2f}x, "
                f"p95 {pct(lags, 0.95) / pct(base, 0.95):.2f}x"
            )
        print(f"doubled: {doubled_tg} in Telegram, {doubled_mx} in Matrix (target 0)")
        print(f"bridge process RSS: {now:.0f} MB now, {peak:.0f} MB peak")
        return 0
    finally:
        await observer.stop()
        proc.terminate()
        proc.wait(10)
        await telegram.stop()


async def _room_bodies(user: Account, room_id: RoomId) -> list[str]:
    bodies: list[str] = []
    token: str | None = None
    http: MatrixHttp = user.http
    for _ in range(200):
        query = {"dir": "b", "limit": "1000", **({"from": token} if token else {})}
        resp = await http.get(cs("rooms", room_id, "messages"), query=query)
        chunk = resp.get("chunk", [])
        bodies += [str(e.get("content", {}).get("body", "")) for e in chunk]
        token = resp.get("end")
        if not chunk or not token:
            break
    return bodies


async def _holds(value: bool) -> bool:
    return value


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rate", type=int, default=50, help="messages a second in each phase")
    p.add_argument("--seconds", type=int, default=60, help="length of each phase")
    p.add_argument("--hold", type=int, default=0, help="the bridge's moderation hold (s)")
    p.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"which phases to run, of {','.join(PHASES)} (floor always runs)",
    )
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
