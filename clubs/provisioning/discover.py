"""Discovery: read what exists on the homeserver through the admin API. Read-only.

One call lists the provisioner's joined rooms, then one call per room reads its whole current
state (the locator, everything the planner compares, and memberships with who set them), with a
bounded number of calls in flight. Rooms whose locator names another network are skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from clubs.core.errors import NotFound
from clubs.core.http import MatrixHttp, RoomId, admin_v1, admin_v2
from clubs.core.namespace import LOCATOR
from clubs.provisioning.actual import Actual, ActualRoom, Membership, StateKey, TokenStatus
from clubs.provisioning.actual import locator_ref as _locator_ref
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.tokens import TokenRecord, TokenStore

log = logging.getLogger(__name__)

READ_CONCURRENCY = 8

T = TypeVar("T")
R = TypeVar("R")


async def bounded(
    items: Iterable[T], fn: Callable[[T], Awaitable[R]], limit: int = READ_CONCURRENCY
) -> list[R]:
    """`fn` over `items` with at most `limit` calls in flight; results in input order."""
    sem = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with sem:
            return await fn(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


async def joined_rooms(http: MatrixHttp, user_id: str) -> list[RoomId]:
    resp = await http.get(admin_v1("users", user_id, "joined_rooms"), label="admin joined_rooms")
    return [RoomId(r) for r in resp.get("joined_rooms", [])]


async def read_room(http: MatrixHttp, room_id: RoomId, network: str) -> ActualRoom | None:
    """The room's snapshot if it is a managed room of `network`; None otherwise or if gone."""
    try:
        resp = await http.get(admin_v1("rooms", room_id, "state"), label="admin room state")
    except NotFound:
        return None
    return parse_state(room_id, resp.get("state", []), network)


def parse_state(room_id: RoomId, events: Iterable[Any], network: str) -> ActualRoom | None:
    state: dict[StateKey, Mapping[str, Any]] = {}
    members: dict[str, Membership] = {}
    created_ts = 0
    for ev in events:
        if not isinstance(ev, Mapping):
            continue
        etype, skey = ev.get("type"), ev.get("state_key")
        content = ev.get("content")
        if not isinstance(etype, str) or not isinstance(skey, str):
            continue
        content = content if isinstance(content, Mapping) else {}
        if etype == "m.room.member":
            members[skey] = Membership(str(content.get("membership", "")), str(ev.get("sender")))
            continue
        if etype == "m.room.create":
            created_ts = int(ev.get("origin_server_ts") or 0)
        state[(etype, skey)] = content
    locator = state.get((LOCATOR, ""))
    if locator is None or locator.get("network") != network:
        return None
    ref = _locator_ref(locator)
    if ref is None:
        log.warning("room %s has a malformed locator; ignored", room_id)
        return None
    return ActualRoom(room_id, ref, locator, state, members, created_ts)


async def user_exists(http: MatrixHttp, user_id: str) -> bool:
    try:
        await http.get(admin_v2("users", user_id), label="admin user")
    except NotFound:
        return False
    return True


async def server_tokens(http: MatrixHttp) -> dict[str, Mapping[str, Any]]:
    """The server's registration tokens by sha256 (tokens stay in memory, never stored)."""
    resp = await http.get(admin_v1("registration_tokens"), label="admin tokens")
    out: dict[str, Mapping[str, Any]] = {}
    for t in resp.get("registration_tokens", []):
        if isinstance(t, Mapping) and isinstance(t.get("token"), str):
            out[hashlib.sha256(t["token"].encode()).hexdigest()] = t
    return out


def record_status(rec: TokenRecord, server: Mapping[str, Any] | None, now_ms: int) -> TokenStatus:
    if rec.revoked or server is None:
        return "revoked"
    completed = int(server.get("completed") or 0)
    if completed > 0:
        return "used"
    expiry = server.get("expiry_time")
    if expiry is not None and int(expiry) <= now_ms:
        return "expired"
    allowed = server.get("uses_allowed")
    if allowed is not None and int(server.get("pending") or 0) + completed >= int(allowed):
        return "used"
    return "live"


async def token_statuses(
    http: MatrixHttp, store: TokenStore, network: str
) -> dict[str, TokenStatus]:
    """person key → the best status of their tokens (live > used > expired > revoked)."""
    records = store.list(network)
    if not records:
        return {}
    by_hash = await server_tokens(http)
    now_ms = int(time.time() * 1000)
    rank: dict[TokenStatus, int] = {"live": 3, "used": 2, "expired": 1, "revoked": 0}
    out: dict[str, TokenStatus] = {}
    for rec in records:
        status = record_status(rec, by_hash.get(rec.token_sha256), now_ms)
        best = out.get(rec.person)
        if best is None or rank[status] > rank[best]:
            out[rec.person] = status
    return out


async def discover(
    http: MatrixHttp,
    desired: DesiredNetwork,
    provisioner: str,
    *,
    only: Iterable[RoomId] | None = None,
    tokens: TokenStore | None = None,
) -> Actual:
    """Snapshot the network's managed rooms (all joined ones, or just `only`), accounts of the
    people to precreate, and the status of issued registration tokens."""
    started = time.monotonic()
    room_ids = list(only) if only is not None else await joined_rooms(http, provisioner)
    rooms = await bounded(room_ids, lambda rid: read_room(http, rid, desired.network))
    by_ref: dict[str, list[ActualRoom]] = {}
    for room in rooms:
        if room is not None:
            by_ref.setdefault(room.ref, []).append(room)
    chosen: dict[str, ActualRoom] = {}
    duplicates: dict[str, tuple[RoomId, ...]] = {}
    for ref, found in by_ref.items():
        found.sort(key=lambda r: (r.created_ts, r.room_id))
        chosen[ref] = found[0]
        if len(found) > 1:
            duplicates[ref] = tuple(r.room_id for r in found[1:])
            log.warning("%d duplicate room(s) for one ref", len(found) - 1)
    users: frozenset[str] = frozenset()
    statuses: dict[str, TokenStatus] = {}
    if only is None:
        wanted = sorted({p.mxid for p in desired.people if p.onboarding == "precreate" and p.mxid})
        exists = await bounded(wanted, lambda u: user_exists(http, u))
        users = frozenset(u for u, ok in zip(wanted, exists, strict=True) if ok)
        if tokens is not None:
            statuses = await token_statuses(http, tokens, desired.network)
    log.info(
        "discovered %d managed room(s) of %d joined in %.2fs",
        len(chosen),
        len(room_ids),
        time.monotonic() - started,
    )
    return Actual(desired.network, provisioner, chosen, duplicates, users, statuses)
