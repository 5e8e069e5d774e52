"""Benchmark: apply of a generated ~150-room network against the floor set by the same Synapse.

    .venv/bin/python bench/provisioning.py [--clubs 20] [--rooms 6] [--countries 4] [--staff 0]
        [--shape sqlite|postgres]

One fresh Synapse (SQLite by default, loopback) for the whole run:
1. floor: the same number of rooms created with raw sequential createRoom calls, each with the
   exact body the planner produces (initial_state included);
2. `apply_network` of the generated network (creates, space links, invites of `--staff` people
   per club);
3. a no-op re-apply (discovery and planning only; must make 0 writes).
Prints both times, the ratios against the targets (apply ≤ 1.3× floor, no-op ≤ 0.15× apply)
and the peak RSS of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.shapes import SHAPES, homeserver
from clubs.core.admin import ensure_ratelimit_override, register_shared_secret
from clubs.core.homeserver import Homeserver
from clubs.core.http import MatrixHttp, RoomId, path
from clubs.provisioning.apply import apply_network
from clubs.provisioning.plan import Action, _Ids, create_body
from tests.integration.provisioning.networks import make_network

CS = ("_matrix", "client", "v3")


async def floor(http: MatrixHttp, server_name: str, args: argparse.Namespace) -> tuple[float, int]:
    """Sequential createRoom of every room of an equal network, same bodies."""
    net = make_network(
        server_name, n_countries=args.countries, n_clubs=args.clubs, rooms_per_club=args.rooms
    )
    ids: dict[str, RoomId] = {}
    started = time.monotonic()
    for room in net.rooms:
        body = create_body(room, _Ids(ids), server_name)
        # Substitute the ids of rooms created earlier in this loop (parents come first).
        for ev in body["initial_state"]:
            if ev["state_key"].startswith("<ref:"):
                ev["state_key"] = ids[ev["state_key"][5:-1]]
            for allow in ev["content"].get("allow", []) if isinstance(ev["content"], dict) else []:
                allow["room_id"] = (
                    ids[allow["room_id"][5:-1]]
                    if allow["room_id"].startswith("<ref:")
                    else allow["room_id"]
                )
        resp = await http.post(path(*CS, "createRoom"), body)
        ids[room.ref] = RoomId(resp["room_id"])
    return time.monotonic() - started, len(net.rooms)


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="clubs-bench-") as tmp:
        async with homeserver(args.shape, Path(tmp) / "synapse") as hs:
            await measure(hs, args)
    return 0


async def measure(hs: Homeserver, args: argparse.Namespace) -> dict[str, float]:
    """Floor, apply and no-op re-apply on `hs`; prints them and returns the figures."""
    async with MatrixHttp(hs.url) as anon:
        session = await register_shared_secret(
            anon,
            hs.registration_shared_secret(),
            "provisioner",
            secrets.token_urlsafe(16),
            admin=True,
            user_type="bot",
        )
        floor_account = await register_shared_secret(
            anon,
            hs.registration_shared_secret(),
            "floor",
            secrets.token_urlsafe(16),
            admin=True,
            user_type="bot",
        )
        staff = []
        for i in range(args.staff):
            s = await register_shared_secret(
                anon,
                hs.registration_shared_secret(),
                f"staff{i}",
                secrets.token_urlsafe(16),
            )
            staff.append(s.user_id)
    async with MatrixHttp(hs.url, session.access_token) as http:
        await ensure_ratelimit_override(http, session.user_id)
        await ensure_ratelimit_override(http, floor_account.user_id)
        server = hs.settings.server_name
        # The floor uses its own account so that its rooms are not the provisioner's.
        async with MatrixHttp(hs.url, floor_account.access_token) as floor_http:
            floor_s, n_rooms = await floor(floor_http, server, args)

        members = {
            f"c{c}": {u: (50 if i == 0 else 0) for i, u in enumerate(staff)}
            for c in range(args.clubs)
        }
        net = make_network(
            server,
            n_countries=args.countries,
            n_clubs=args.clubs,
            rooms_per_club=args.rooms,
            members=members,
        )
        w0 = http.writes
        started = time.monotonic()
        marks: dict[str, list[float]] = {}

        def progress(done: int, total: int, action: Action) -> None:
            marks.setdefault(action.kind, []).append(time.monotonic() - started)

        first = await apply_network(
            http, net, session.user_id, progress=progress, concurrency=args.concurrency
        )
        apply_s = time.monotonic() - started
        apply_writes = http.writes - w0

        w1 = http.writes
        started = time.monotonic()
        second = await apply_network(http, net, session.user_id)
        noop_s = time.monotonic() - started
        noop_writes = http.writes - w1
    for kind, times in marks.items():
        print(f"  {kind}: {len(times)} done between {times[0]:.2f}s and {times[-1]:.2f}s")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert second.plan.empty
    print(f"rooms: {n_rooms} ({args.clubs} clubs x {args.rooms} rooms + spaces)")
    print(f"staff per club: {args.staff}, concurrency: {args.concurrency}")
    print(f"floor  (raw sequential createRoom): {floor_s:7.2f} s")
    print(f"apply  ({len(first.plan.actions)} actions, {apply_writes} writes): {apply_s:7.2f} s")
    print(f"no-op  re-apply ({noop_writes} writes):        {noop_s:7.2f} s")
    r1 = apply_s / floor_s
    r2 = noop_s / apply_s
    print(f"apply / floor = {r1:.2f}  (target <= 1.30) {'OK' if r1 <= 1.3 else 'MISSED'}")
    ok = r2 <= 0.15 and noop_writes == 0
    print(f"no-op / apply = {r2:.3f} (target <= 0.15, 0 writes) {'OK' if ok else 'MISSED'}")
    print(f"peak RSS of the benchmark process: {rss_mb:.0f} MB (target <= 150)")
    return {
        "rooms": n_rooms,
        "floor_s": floor_s,
        "apply_s": apply_s,
        "noop_s": noop_s,
        "noop_writes": noop_writes,
        "ratio": r1,
    }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--shape", choices=SHAPES, default="sqlite")
    p.add_argument("--clubs", type=int, default=20)
    p.add_argument("--rooms", type=int, default=6)
    p.add_argument("--countries", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--staff", type=int, default=0, help="people invited to every room of each club")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
