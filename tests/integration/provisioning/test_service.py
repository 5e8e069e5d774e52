"""The provisioning HTTP service: auth, size cap, located errors, plan/apply, quiet access log."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from clubs.core.http import MatrixHttp
from clubs.provisioning.discover import joined_rooms
from clubs.provisioning.service import AccessLogger, build_app
from tests.harness import SynapseHarness
from tests.integration.provisioning.helpers import Provisioner, new_provisioner

TOKEN = "t0k-" + secrets.token_hex(16)
MAX_BODY = 4096


def _doc(net_id: str) -> str:
    return "\n".join(
        [
            "version: 1",
            f"network: {net_id}",
            'name: "Сеть"',
            "countries:",
            "  - key: kz",
            '    name: "Казахстан"',
            "    clubs:",
            "      - key: almaty",
            '        name: "Алматы"',
            "        rooms:",
            '          - {key: general, name: "Общий"}',
            "",
        ]
    )


@dataclass
class Service:
    url: str
    prov: Provisioner
    http: MatrixHttp


@pytest.fixture
async def service(synapse: SynapseHarness) -> AsyncIterator[Service]:
    prov = await new_provisioner(synapse)
    http = prov.http()
    app = build_app(http, prov.user_id, TOKEN, max_body=MAX_BODY)
    runner = web.AppRunner(app, access_log_class=AccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Service(f"http://127.0.0.1:{port}", prov, http)
    finally:
        await runner.cleanup()
        await http.close()


async def _post(
    s: Service, route: str, body: str | bytes, token: str | None = TOKEN, query: str = ""
) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/yaml"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{s.url}{route}{query}", data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def test_missing_or_wrong_token_or_oversize_body_applies_nothing(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    doc = _doc(f"svc-{secrets.token_hex(4)}")
    status, body = await _post(service, "/v1/apply", doc, token=None)
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    status, body = await _post(service, "/v1/apply", doc, token="wrong-" + TOKEN)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await _post(service, "/v1/apply", doc + "#" * MAX_BODY)
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
    assert service.http.writes == 0
    assert await joined_rooms(service.http, service.prov.user_id) == []
    logged = caplog.text
    assert "/v1/apply 401" in logged
    assert "/v1/apply 403" in logged
    assert TOKEN not in logged
    assert "network:" not in logged


async def test_bad_document_is_400_with_located_errors(service: Service) -> None:
    status, body = await _post(service, "/v1/validate", "version: 1\nnetwork: [x\n")
    assert status == 400
    errors = body["errors"]
    assert isinstance(errors, list)
    assert errors
    assert all(str(e).startswith("<posted>:") for e in errors)
    assert service.http.writes == 0


async def test_plan_apply_status_and_openapi(service: Service) -> None:
    doc = _doc(f"svc-{secrets.token_hex(4)}")
    status, body = await _post(service, "/v1/validate", doc)
    assert (status, body["valid"]) == (200, True)
    status, body = await _post(service, "/v1/plan", doc)
    assert (status, body["pending"]) == (200, True)
    status, body = await _post(service, "/v1/apply", doc, query="?hash=" + "0" * 64)
    assert status == 409
    status, body = await _post(service, "/v1/apply", doc)
    assert status == 200, body
    status, body = await _post(service, "/v1/plan", doc)
    assert (status, body["pending"]) == (200, False)
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{service.url}/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp:
            assert resp.status == 200
            status_body = await resp.json()
        async with session.get(f"{service.url}/openapi.json") as resp:
            spec = await resp.json()
        async with session.get(f"{service.url}/metrics") as resp:
            assert resp.status == 401  # monitoring holds the token like any other client
        async with session.get(
            f"{service.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            scraped = await resp.text()
    assert status_body["last_apply"]["writes"] > 0
    # What was just done shows in the service's metrics: the requests by route and status,
    # an apply with its writes, and no drift left on this network after the second plan.
    net = doc.split("network: ", 1)[1].split("\n", 1)[0]
    values = dict(line.rsplit(" ", 1) for line in scraped.splitlines() if line[:1] != "#")
    # The registry is the process's: other tests in this run may have added to the counters.
    assert float(values['clubs_provisioning_requests_total{route="/v1/apply",status="409"}']) >= 1
    assert values[f'clubs_provisioning_pending_changes{{network="{net}"}}'] == "0"
    assert float(values["clubs_provisioning_apply_writes_total"]) > 0
    assert float(values["clubs_provisioning_last_apply_timestamp_seconds"]) > 1.7e9
    assert TOKEN not in scraped
    assert "Сеть" not in scraped
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {
        "/v1/validate",
        "/v1/plan",
        "/v1/apply",
        "/v1/status",
        "/openapi.json",
    }
