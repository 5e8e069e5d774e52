"""The application service's HTTP side, without a homeserver: authentication, exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet

from clubs.bridge.appservice import AppService, relevant
from clubs.bridge.store import BridgeStore
from clubs.core.db import Database
from clubs.core.sealed import Sealer

TOKEN = "hs-token-" + "x" * 40
TXN = "/_matrix/app/v1/transactions/"


def message(n: int, room: str = "!room:test.local") -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "event_id": f"$event{n}",
        "room_id": room,
        "sender": "@anna:test.local",
        "content": {"msgtype": "m.text", "body": f"hello {n}"},
    }


@dataclass
class Service:
    client: TestClient[Any, Any]
    store: BridgeStore
    service: AppService
    wakes: list[int] = field(default_factory=list)

    def auth(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


async def make(tmp_path: Path, *, accept_query_token: bool = False) -> AsyncIterator[Service]:
    db = await Database.open(tmp_path / "bridge.db")
    store = await BridgeStore.open(db, Sealer(Fernet.generate_key()))
    wakes: list[int] = []
    service = AppService(
        TOKEN,
        store,
        is_ours=lambda u: u.startswith("@tg_") and u.endswith(":test.local"),
        user_exists=lambda u: _async(u == "@tg_bridge:test.local"),
        wake=lambda: wakes.append(1),
        health=lambda: {"ok": True, "inbox": 0},
        accept_query_token=accept_query_token,
    )
    client = TestClient(TestServer(service.app()))
    await client.start_server()
    try:
        yield Service(client, store, service, wakes)
    finally:
        await client.close()
        await db.close()


async def _async(value: bool) -> bool:
    return value


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Service]:
    async for s in make(tmp_path):
        yield s


async def test_a_transaction_without_a_token_is_401_and_nothing_runs(svc: Service) -> None:
    resp = await svc.client.put(TXN + "1", json={"events": [message(1)]})
    assert resp.status == 401
    assert (await resp.json())["errcode"] == "M_UNAUTHORIZED"
    assert not await svc.store.txn_seen("1")
    assert await svc.store.inbox_size() == 0
    assert svc.wakes == []


@pytest.mark.parametrize("header", ["Bearer wrong", "Bearer " + TOKEN[:-1], "Basic " + TOKEN, ""])
async def test_a_wrong_token_is_403_and_nothing_runs(svc: Service, header: str) -> None:
    resp = await svc.client.put(
        TXN + "1", json={"events": [message(1)]}, headers={"Authorization": header}
    )
    assert resp.status == 403
    assert (await resp.json())["errcode"] == "M_FORBIDDEN"
    assert not await svc.store.txn_seen("1")
    assert svc.wakes == []


async def test_a_token_in_the_query_string_is_not_a_token(svc: Service) -> None:
    resp = await svc.client.put(
        TXN + "1", params={"access_token": TOKEN}, json={"events": [message(1)]}
    )
    assert resp.status == 401
    assert not await svc.store.txn_seen("1")


async def test_the_legacy_query_token_when_the_deployment_allows_it(tmp_path: Path) -> None:
    async for s in make(tmp_path, accept_query_token=True):
        wrong = await s.client.put(TXN + "1", params={"access_token": "x"}, json={"events": []})
        assert wrong.status == 403
        right = await s.client.put(TXN + "1", params={"access_token": TOKEN}, json={"events": []})
        assert right.status == 200
        assert await s.store.txn_seen("1")


async def test_every_route_is_guarded(svc: Service) -> None:
    for method, url in [
        ("GET", "/_matrix/app/v1/users/@tg_bridge:test.local"),
        ("GET", "/_matrix/app/v1/rooms/%23a:test.local"),
        ("POST", "/_matrix/app/v1/ping"),
    ]:
        assert (await svc.client.request(method, url)).status == 401
        assert (await svc.client.request(method, url, headers=svc.auth("no"))).status == 403
        assert (await svc.client.request(method, url, headers=svc.auth())).status in (200, 404)


async def test_a_replayed_transaction_is_applied_once(svc: Service) -> None:
    body = {"events": [message(1), message(2)]}
    for _ in range(3):
        resp = await svc.client.put(TXN + "7", json=body, headers=svc.auth())
        assert resp.status == 200
        assert await resp.json() == {}
    assert svc.service.transactions_applied == 1
    assert await svc.store.inbox_size() == 2
    assert svc.wakes == [1]
    # The same event in a later transaction is not queued twice either.
    await svc.client.put(TXN + "8", json={"events": [message(2)]}, headers=svc.auth())
    assert await svc.store.inbox_size() == 2


async def test_queued_events_are_sealed_in_the_database(svc: Service, tmp_path: Path) -> None:
    event = message(1)
    event["content"]["body"] = "canary-7f3a"
    await svc.client.put(TXN + "1", json={"events": [event]}, headers=svc.auth())
    [item] = await svc.store.due(now=1e12)
    assert item.event["content"]["body"] == "canary-7f3a"
    for f in tmp_path.iterdir():
        assert b"canary-7f3a" not in f.read_bytes()


async def test_hostile_bodies_are_refused_and_hostile_events_dropped(svc: Service) -> None:
    bad = await svc.client.put(TXN + "1", data=b"{not json", headers=svc.auth())
    assert bad.status == 400
    no_list = await svc.client.put(TXN + "2", json={"events": {"a": 1}}, headers=svc.auth())
    assert no_list.status == 400
    events: list[Any] = [
        "a string",
        {"type": "m.room.message"},
        {**message(3), "room_id": "not a room"},
        {**message(4), "content": "text"},
        {**message(5), "type": "m.room.member", "state_key": "@boris:test.local"},  # of another
        {**message(6), "type": "m.reaction"},
        message(7),
    ]
    ok = await svc.client.put(TXN + "3", json={"events": events}, headers=svc.auth())
    assert ok.status == 200
    assert [i.event["event_id"] for i in await svc.store.due(now=1e12)] == ["$event7"]


async def test_unknown_routes_and_methods_are_unrecognized(svc: Service) -> None:
    missing = await svc.client.get("/_matrix/app/v1/thirdparty/protocol/x", headers=svc.auth())
    assert missing.status == 404
    assert (await missing.json())["errcode"] == "M_UNRECOGNIZED"
    wrong = await svc.client.post(TXN + "1", json={"events": []}, headers=svc.auth())
    assert wrong.status == 405
    assert (await wrong.json())["errcode"] == "M_UNRECOGNIZED"


async def test_user_query_ping_and_health(svc: Service) -> None:
    users = "/_matrix/app/v1/users/"
    assert (await svc.client.get(users + "@tg_bridge:test.local", headers=svc.auth())).status == 200
    assert (await svc.client.get(users + "@tg_5:test.local", headers=svc.auth())).status == 404
    assert (await svc.client.get(users + "@anna:test.local", headers=svc.auth())).status == 404
    ping = await svc.client.post("/_matrix/app/v1/ping", json={}, headers=svc.auth())
    assert (ping.status, await ping.json()) == (200, {})
    health = await svc.client.get("/health")
    assert (health.status, await health.json()) == (200, {"ok": True, "inbox": 0})


def test_member_events_are_kept_only_for_the_bridges_users() -> None:
    def ours(u: str) -> bool:
        return u.startswith("@tg_")

    invite = {**message(1), "type": "m.room.member", "state_key": "@tg_bridge:test.local"}
    assert relevant(invite, ours) == invite
    assert relevant({**invite, "state_key": "@boris:test.local"}, ours) is None
    renamed = {**invite, "state_key": "@anna:test.local"}  # her own: her name may have changed
    assert relevant(renamed, ours) == renamed
    # What the bridge's own ghosts and bot sent comes back in transactions: never stored.
    for kind in ("m.room.message", "m.room.encrypted", "m.room.redaction"):
        echo = {**message(2), "type": kind, "sender": "@tg_5550001:test.local"}
        assert relevant(echo, ours) is None
    assert relevant({**message(3), "sender": "@tg_bridge:test.local"}, ours) is None
    ghost_joins = {
        **invite,
        "sender": "@tg_5550001:test.local",
        "state_key": "@tg_5550001:test.local",
    }
    assert relevant(ghost_joins, ours) == ghost_joins  # memberships of ours still count
    assert relevant({**invite, "state_key": None}, ours) is None
