"""Benchmark: our overhead on each homeserver shape, the bots' cost as rooms grow, backup size
and time. Every ratio is against a floor measured on the same homeserver in the same run.

    .venv/bin/python bench/scale.py [--shapes sqlite,postgres,workers]
        [--parts overhead,growth,backup] [--clubs 100] [--club-rooms 9] [--ping-rooms 100]
        [--samples 30]
        [--growth 100,500,1000] [--growth-bots 4] [--messages 10000]

1. **overhead**, for each shape (`bench/shapes.py`: SQLite as `make up` runs it; PostgreSQL
   from the wheel as `CLUBS_DB=postgres make up` runs it), each on a fresh homeserver:
   - provisioning `--clubs` clubs of `--club-rooms` rooms (about 1,000 rooms with spaces) against
     the raw sequential createRoom floor (`bench/provisioning.py`; target ≤ 1.3×), and the no-op
     re-apply's writes (target 0);
   - the bots' `!ping` reply against the two-hop relay floor, a bare client answering in the
     same room while the bots run (`bench/bots.py`; target p95 ≤ 1.1×).
   The floors of the shapes are printed side by side: the cost of each shape itself. The
   `workers` shape (main, persister, client worker, federation sender, Valkey, the front) is
   measured the same way; on 2 cores it is expected to be slower, not faster (docs/workers.md).
2. **growth** (SQLite): the bot process's RSS and its start-up from a stored token to the first
   answer with `--growth-bots` bots each in 100, 500 and 1,000 rooms (targets at 1,000: RSS ≤
   250 MB, start-up ≤ 2 s).
3. **backup** (SQLite): after the largest growth run, `--messages` messages are sent into its
   rooms; `clubs backup` of that var directory (time, size) and `clubs restore` into an empty
   one (time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet

from bench import bots as bots_bench
from bench import provisioning as provisioning_bench
from bench.shapes import SHAPES, homeserver, synapse_harness
from clubs.backup import backup, restore
from clubs.core.http import path
from clubs.core.secrets import MASTER_KEY_ENV
from tests.harness import SynapseHarness

CS = ("_matrix", "client", "v3")
TARGET_PING = 1.1
TARGET_PROVISION = 1.3
TARGET_RSS_MB = 250
TARGET_START_S = 2.0


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def bots_args(args: argparse.Namespace, rooms: int, bots: int, *, relay: bool) -> Any:
    return argparse.Namespace(
        rooms=rooms,
        bots=bots,
        samples=args.samples,
        restarts=args.restarts,
        warm_rooms=0,
        profile=None,
        relay=relay,
    )


async def with_synapse(shape: str, tmp: Path, work: Any) -> Any:
    """`work(synapse, var)` on a fresh homeserver of `shape` whose data is `tmp/var/synapse`."""
    async with synapse_harness(shape, tmp / "var" / "synapse") as synapse:
        return await work(synapse, tmp / "var")


async def overhead(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for shape in args.shapes:
        print(f"\n=== {shape}: provisioning ===")
        with tempfile.TemporaryDirectory(prefix=f"clubs-scale-{shape}-") as tmp:
            async with homeserver(shape, Path(tmp) / "synapse") as hs:
                prov = await provisioning_bench.measure(
                    hs,
                    argparse.Namespace(
                        clubs=args.clubs, rooms=args.club_rooms, countries=4, concurrency=4, staff=0
                    ),
                )
        print(f"\n=== {shape}: !ping ===")
        with tempfile.TemporaryDirectory(prefix=f"clubs-scale-{shape}-") as tmp:
            ping = await with_synapse(
                shape,
                Path(tmp),
                lambda s, v: bots_bench.measure(
                    s, v, bots_args(args, args.ping_rooms, args.bots, relay=True)
                ),
            )
        results[shape] = {"provisioning": prov, "ping": ping}
    return results


async def send_messages(synapse: SynapseHarness, rooms: list[str], count: int) -> float:
    """`count` messages of ~200 bytes from the rooms' creator, spread over the rooms."""
    http = synapse.admin.http
    started = time.monotonic()
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        room = rooms[i % len(rooms)]
        body = {"msgtype": "m.text", "body": secrets.token_urlsafe(150)}
        async with sem:
            await http.put(path(*CS, "rooms", room, "send", "m.room.message", f"b{i}"), body)

    await asyncio.gather(*(one(i) for i in range(count)))
    return time.monotonic() - started


async def growth_and_backup(args: argparse.Namespace) -> dict[str, Any]:
    curve: list[dict[str, Any]] = []
    backup_figures: dict[str, Any] = {}
    for n, rooms in enumerate(args.growth):
        last = n == len(args.growth) - 1
        print(f"\n=== growth: {args.growth_bots} bots x {rooms} rooms ===")
        with tempfile.TemporaryDirectory(prefix="clubs-scale-growth-") as tmp_name:
            tmp = Path(tmp_name)

            async def work(
                synapse: SynapseHarness,
                var: Path,
                rooms: int = rooms,
                last: bool = last,
                tmp: Path = tmp,
            ) -> Any:
                figures = await bots_bench.measure(
                    synapse, var, bots_args(args, rooms, args.growth_bots, relay=False)
                )
                if last and "backup" in args.parts:
                    sent = await send_messages(synapse, figures["rooms_list"], args.messages)
                    print(f"{args.messages} messages sent in {sent:.1f} s")
                    took = time.monotonic()
                    summary = backup(var, tmp / "city.backup")
                    backup_figures["backup_s"] = time.monotonic() - took
                    backup_figures["size_mb"] = summary.size / 1e6
                    backup_figures["files"] = summary.files
                return figures

            curve.append(await with_synapse("sqlite", tmp, work))
            if backup_figures:
                took = time.monotonic()
                (tmp / "restored").mkdir()
                restore(tmp / "city.backup", tmp / "restored")
                backup_figures["restore_s"] = time.monotonic() - took
    return {"curve": curve, "backup": backup_figures}


def report(
    args: argparse.Namespace, shapes: dict[str, dict[str, Any]], grown: dict[str, Any]
) -> None:
    print("\n================ summary ================")
    if shapes:
        print("floors of each shape (the cost of the shape itself):")
        print(f"  {'shape':10} {'createRoom x N':>15} {'relay p50':>10} {'relay p95':>10}")
        for shape, r in shapes.items():
            prov, ping = r["provisioning"], r["ping"]
            print(
                f"  {shape:10} {prov['floor_s']:13.1f} s {ping['relay_p50'] * 1e3:8.0f} ms"
                f" {ping['relay_p95'] * 1e3:8.0f} ms"
            )
        print("our overhead on each shape, against that shape's floor:")
        for shape, r in shapes.items():
            prov, ping = r["provisioning"], r["ping"]
            ratio = ping["ping_p95"] / ping["relay_p95"]
            print(
                f"  {shape:10} provisioning {prov['rooms']} rooms: {prov['apply_s']:.1f} s ="
                f" {prov['ratio']:.2f}x (target <= {TARGET_PROVISION})"
                f" {verdict(prov['ratio'] <= TARGET_PROVISION)}; no-op re-apply"
                f" {prov['noop_writes']} writes {verdict(prov['noop_writes'] == 0)}"
            )
            print(
                f"  {'':10} !ping p50/p95 {ping['ping_p50'] * 1e3:.0f}/{ping['ping_p95'] * 1e3:.0f}"
                f" ms = {ping['ping_p50'] / ping['relay_p50']:.2f}x / {ratio:.2f}x at p95"
                f" (target <= {TARGET_PING}) {verdict(ratio <= TARGET_PING)}"
            )
    if grown.get("curve"):
        print(f"cost growth (SQLite, {args.growth_bots} bots in one process):")
        print(f"  {'rooms/bot':>9} {'RSS MB':>7} {'peak MB':>8} {'start s':>8}")
        for g in grown["curve"]:
            print(
                f"  {g['rooms']:9d} {g['rss_mb']:7.0f} {g['rss_peak_mb']:8.0f} {g['start_s']:8.2f}"
            )
        top = grown["curve"][-1]
        print(
            f"  at {top['rooms']}: RSS peak {top['rss_peak_mb']:.0f} MB (target <= {TARGET_RSS_MB})"
            f" {verdict(top['rss_peak_mb'] <= TARGET_RSS_MB)}, start-up {top['start_s']:.2f} s"
            f" (target <= {TARGET_START_S}) {verdict(top['start_s'] <= TARGET_START_S)}"
        )
    b = grown.get("backup")
    if b:
        print(
            f"backup of {args.growth[-1]} rooms x {args.growth_bots} bots + {args.messages}"
            f" messages: {b['backup_s']:.1f} s, {b['size_mb']:.1f} MB, {b['files']} files;"
            f" restore {b['restore_s']:.1f} s"
        )


async def run(args: argparse.Namespace) -> int:
    os.environ.setdefault(MASTER_KEY_ENV, Fernet.generate_key().decode())
    shapes = await overhead(args) if "overhead" in args.parts else {}
    grown: dict[str, Any] = {}
    if "growth" in args.parts or "backup" in args.parts:
        grown = await growth_and_backup(args)
    report(args, shapes, grown)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--parts", default="overhead,growth,backup")
    p.add_argument("--clubs", type=int, default=100)
    p.add_argument("--club-rooms", type=int, default=9, help="rooms per club (plus its space)")
    p.add_argument("--ping-rooms", type=int, default=100, help="rooms per bot for the !ping")
    p.add_argument("--bots", type=int, default=4)
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--restarts", type=int, default=2)
    p.add_argument("--growth", default="100,500,1000", help="rooms per bot")
    p.add_argument("--growth-bots", type=int, default=4)
    p.add_argument("--messages", type=int, default=10_000)
    args = p.parse_args()
    args.shapes = [s for s in args.shapes.split(",") if s]
    args.parts = set(args.parts.split(","))
    args.growth = [int(n) for n in args.growth.split(",")]
    for shape in args.shapes:
        if shape not in SHAPES:
            p.error(f"--shapes: {shape!r} is not one of {', '.join(SHAPES)}")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
