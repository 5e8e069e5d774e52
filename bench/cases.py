"""Benchmark: `!cases` over a large case library, against the same run's two-hop relay floor.

    .venv/bin/python bench/cases.py [--cases 10000] [--clubs 50] [--samples 30]

One fresh Synapse (SQLite, loopback). The shipped facilitation bot (with the case library, as
the catalog wires it) runs in a process of its own (`tests/integration/bots/schedproc.py`: the
production composition, long-poll, INFO logs). `--clubs` clubs each have their managed
encrypted cases room with the bot. With the bot process stopped, `--cases` cases are put into
the bot's own store, spread evenly over the clubs (sealed, with pseudonymous authors and keyed
search terms exactly as `!case send` stores them: `CaseStore.seal_case`, `CaseBox.term`; one
transaction per club instead of one per case), one in ten shared with the network. Typing
10,000 cases through DMs would take hours of Synapse time and measure nothing of the search.

Then, in the first club's cases room, a cross-signed member client (the project's
`E2eeClient`):

1. `!cases <relation> <tag>` (a relation and a tag drawn from the seeded ones, so each search
   matches a few dozen cases of the club and the shared ones of every club) until its own sync
   holds the bot's reply — two hops (the member's message, the bot's answer); commands are
   paced (production's per-member rate limit is 5 per 10 s);
2. the floor, interleaved with 1: a bare cross-signed client in the same room answering
   `relay?` with one message (the two-hop floor any reply has);
3. RSS of the bot's process (VmRSS, VmHWM) with the cases loaded and searched.

Prints p50/p95 of 1 and 2, their ratio (target p95 ≤ 1.1×), the search's own time in SQLite
(median of the same queries run on the database file after the run), and RSS (target ≤ 150 MB).
A quick run: `--cases 2000 --clubs 10 --samples 10`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet

from bench.botmetrics import scrape, where_time_goes
from bench.bots import pct, rss_mb, verdict
from bench.facilitation import Seen, sync_forever
from bench.scheduling import new_client
from bench.shapes import synapse_harness
from clubs.bots.cases.box import CaseBox
from clubs.bots.cases.cases import month_of
from clubs.bots.cases.parse import terms_of
from clubs.bots.cases.store import CaseStore
from clubs.bots.host import BotAccount
from clubs.core.db import Database
from clubs.core.homeserver import find_free_port
from clubs.core.http import RoomId, path
from clubs.core.secrets import MASTER_KEY_ENV, Vault
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.schedhost import SchedProcess
from tests.integration.bots.support import create_bot_account, managed_room, new_network

TARGET_RATIO = 1.1
TARGET_RSS_MB = 150
RELATIONS = ("мама", "папа", "брат", "сестра", "бабушка", "коллега", "сосед", "друг")
TAGS = ("тв", "мобилизация", "санкции", "эмиграция", "цены", "фронт", "выборы", "религия")
BOT = "facilitation"


async def seed(var: Path, clubs: list[str], n: int, rng: random.Random) -> None:
    """`n` posted cases over the clubs, as `!case send` stores them (the process stopped)."""
    db = await Database.open(var / "bots" / "bots.db")
    try:
        store = await CaseStore.open(db, BOT, CaseBox.from_vault(Vault(var / "secrets" / "vault")))
        month, now, k = month_of(time.time()), time.time(), 0
        for c, club in enumerate(clubs):
            async with db.transaction():
                for _ in range(n // len(clubs) + (c < n % len(clubs))):
                    k += 1
                    relation = rng.choice(RELATIONS)
                    tags = tuple(rng.sample(TAGS, rng.randint(1, 3)))
                    shared = rng.random() < 0.1
                    source = f"$seed{k}"
                    answers = {
                        "relation": relation,
                        "topic": f"разговор {k}",
                        "tried": "вопросы о её опыте " * 5,
                        "happened": "задумалась " * 5,
                        "tags": ", ".join(tags),
                    }
                    await db.execute(
                        "INSERT INTO cs_cases (id, bot, club, owner, state, shared, month, room, "
                        "event, sealed, source, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?, 'posted', ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            k,
                            BOT,
                            club,
                            store.owner(f"@author{k % 997}:bench.local"),
                            int(shared),
                            month,
                            "!seeded:bench.local",
                            f"$seeded{k}",
                            store.seal_case(
                                source, f"@author{k % 997}:bench.local", False, answers, tags
                            ),
                            source,
                            now,
                            now,
                        ),
                    )
                    for term in terms_of(relation, tags):
                        await db.execute(
                            "INSERT INTO cs_terms (bot, term, club, shared, case_id) "
                            "VALUES (?, ?, ?, ?, ?)",
                            (BOT, store.box.term(term), club, int(shared), k),
                        )
    finally:
        await db.close()


async def query_ms(var: Path, club: str, queries: list[list[str]]) -> float:
    """The median time of the store's search itself (no Matrix), on the run's database."""
    db = await Database.open(var / "bots" / "bots.db")
    try:
        store = await CaseStore.open(db, BOT, CaseBox.from_vault(Vault(var / "secrets" / "vault")))
        took = []
        for words in queries:
            t = time.perf_counter()
            await store.search({club}, words)
            took.append(time.perf_counter() - t)
        return statistics.median(took) * 1e3
    finally:
        await db.close()


async def run(args: argparse.Namespace) -> int:
    os.environ.setdefault(MASTER_KEY_ENV, Fernet.generate_key().decode())
    with tempfile.TemporaryDirectory(prefix="clubs-bench-cases-") as tmp:
        async with synapse_harness("sqlite", Path(tmp) / "synapse") as synapse:
            return await measure(synapse, Path(tmp), args)


async def measure(synapse: SynapseHarness, tmp: Path, args: argparse.Namespace) -> int:
    rng = random.Random(14)
    var = tmp / "var"
    network = new_network()
    account = await create_bot_account(synapse, var, BOT)
    bot = account.user_id
    member = await new_client(synapse, tmp / "member", "member")
    relay = await new_client(synapse, tmp / "relay", "relay")
    clubs = [f"c{i}" for i in range(args.clubs)]
    rooms = []
    t0 = time.monotonic()
    for i, club in enumerate(clubs):
        extra = [member.user_id, relay.user_id] if i == 0 else []
        rooms.append(
            await managed_room(
                synapse,
                network,
                invite=[bot, *extra],
                key="cases",
                club=club,
                language="ru",
                powers={bot: 50},
            )
        )
    await member.join(RoomId(rooms[0]))
    await relay.join(RoomId(rooms[0]))
    t1 = time.monotonic()
    await seed(var, clubs, args.cases, rng)
    print(
        f"setup: {args.clubs} cases rooms in {t1 - t0:.1f} s; {args.cases} cases seeded in "
        f"{time.monotonic() - t1:.1f} s"
    )
    bp = SchedProcess(
        synapse.url,
        var,
        [BotAccount(account.name, bot)],
        network,
        synapse.admin.user_id,
        sync_timeout_ms=30_000,
        verbosity=0,
        http_port=find_free_port(),
    )
    seen = {c.user_id: Seen() for c in (member, relay)}
    tasks: list[asyncio.Task[None]] = []
    queries = [[rng.choice(RELATIONS), rng.choice(TAGS)] for _ in range(args.samples + 2)]
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
        tasks.append(asyncio.create_task(sync_forever(member, seen[member.user_id])))
        tasks.append(
            asyncio.create_task(sync_forever(relay, seen[relay.user_id], answer=member.user_id))
        )
        for s in seen.values():
            await asyncio.wait_for(s.synced.wait(), 300)
        mseen = seen[member.user_id]
        search: list[float] = []
        floor: list[float] = []
        found: list[int] = []
        for i, words in enumerate(queries):
            started = time.monotonic()
            event_id = await member.send(
                RoomId(rooms[0]),
                "m.room.message",
                {"msgtype": "m.text", "body": "!cases " + " ".join(words)},
            )
            got = await mseen.wait_for(replied(bot, event_id), started)
            started_f = time.monotonic()
            event_id = await member.send(
                RoomId(rooms[0]), "m.room.message", {"msgtype": "m.text", "body": "relay?"}
            )
            got_f = await mseen.wait_for(replied(relay.user_id, event_id), started_f)
            body = next(
                str(c.get("body", ""))
                for _, _, s, c in reversed(mseen.items)
                if s == bot and _reply_to(c) is not None
            )
            if body.startswith("Найдено случаев: "):
                found.append(int(body.split(":", 1)[1].split()[0]))
            await asyncio.sleep(2.1)  # production's per-member command rate limit
            if i >= 2:  # the first ones share keys
                search.append(got - started)
                floor.append(got_f - started_f)
        rss, hwm = rss_mb(pid)
        assert bp.http_port is not None
        parts = where_time_goes(await scrape(bp.http_port), BOT, "cases")
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await bp.stop()
        for c in (member, relay):
            await c.close()

    sql_ms = await query_ms(var, clubs[0], queries)
    s50, s95, f50, f95 = (
        statistics.median(search),
        pct(search, 0.95),
        statistics.median(floor),
        pct(floor, 0.95),
    )
    ratio = s95 / f95
    print("command: .venv/bin/python bench/cases.py " + shlex.join(sys.argv[1:]))
    print(
        f"library: {args.cases} cases in {args.clubs} clubs; each search matched "
        f"{min(found, default=0)}..{max(found, default=0)} cases (the club's and shared ones)"
    )
    print(f"!cases -> reply (p50/p95):     {s50 * 1e3:.0f}/{s95 * 1e3:.0f} ms")
    print(f"two-hop relay floor (p50/p95): {f50 * 1e3:.0f}/{f95 * 1e3:.0f} ms")
    print(
        f"ratio p50 {s50 / f50:.2f}, p95 {ratio:.2f} "
        f"(target <= {TARGET_RATIO}) {verdict(ratio <= TARGET_RATIO)}"
    )
    print(f"the search itself in SQLite (median): {sql_ms:.1f} ms")
    print(f"the bot's own figures (its /metrics): {parts}")
    print(
        f"RSS {rss:.0f} MB (peak {hwm:.0f} MB; target <= {TARGET_RSS_MB}) "
        f"{verdict(hwm <= TARGET_RSS_MB)}"
    )
    return 0


def _reply_to(content: dict[str, object]) -> object:
    rel = content.get("m.relates_to")
    return (rel.get("m.in_reply_to") or {}).get("event_id") if isinstance(rel, dict) else None


def replied(sender: str, event_id: str):  # type: ignore[no-untyped-def]
    def match(room: str, s: str, content: dict[str, object]) -> bool:
        return s == sender and _reply_to(content) == event_id

    return match


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--clubs", type=int, default=50)
    p.add_argument("--samples", type=int, default=30)
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
