"""`clubs serve`: validate, plan and apply a posted network document over HTTP (aiohttp).

- Every route but `/openapi.json` needs `Authorization: Bearer <token>`, compared in constant
  time (`hmac.compare_digest`): 401 when missing, 403 when wrong. The token is
  `$CLUBS_SERVICE_TOKEN`, else one kept in the vault (created on first use). It is never
  printed by the service, whose output may be persisted: `clubs serve --show-token` prints it,
  and only to a terminal.
- Bodies over `max_body` are refused with 413 from their Content-Length, before being read
  (and aiohttp's `client_max_size` stops chunked ones).
- A bad document is a 400 with every located error (`<posted>:12:5: clubs[0].key: …`).
- The access log has method, path (no query string), status, size and duration: never a header,
  a token or a body.
- One apply at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from clubs.core.errors import ClubsError
from clubs.core.http import MatrixHttp
from clubs.core.metrics import CONTENT_TYPE, REGISTRY
from clubs.core.secrets import Vault
from clubs.core.yamlconf import ConfigError
from clubs.provisioning.apply import apply_network
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.discover import discover
from clubs.provisioning.plan import plan
from clubs.provisioning.source import Checked, check, compile_desired
from clubs.provisioning.tokens import TokenStore

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
TOKEN_ENV = "CLUBS_SERVICE_TOKEN"  # noqa: S105 - the variable name, not a token
VAULT_KEY = "service/provisioning/token"
POSTED = "<posted>"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HTTP_KEY = web.AppKey("http", MatrixHttp)
PROVISIONER_KEY = web.AppKey("provisioner", str)
TOKEN_KEY = web.AppKey("token", str)
MAX_BODY_KEY = web.AppKey("max_body", int)
LOCK_KEY = web.AppKey("lock", asyncio.Lock)
STORE_KEY = web.AppKey("store", object)


class ServiceStatus:
    """What GET /v1/status reports beyond the connection: the last apply (ids and counts)."""

    def __init__(self) -> None:
        self.last_apply: dict[str, Any] | None = None


STATUS_KEY = web.AppKey("status", ServiceStatus)


class AccessLogger(AbstractAccessLogger):
    """Method, path without its query string, status, size, duration. Nothing else."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %d %.3fs",
            request.method,
            request.path,
            response.status,
            response.body_length,
            time,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def _error(status: int, errcode: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message, **extra}, status=status)


REQUESTS = REGISTRY.counter(
    "clubs_provisioning_requests_total",
    "Requests to the provisioning service, by route and HTTP status.",
    ("route", "status"),
)
PENDING = REGISTRY.gauge(
    "clubs_provisioning_pending_changes",
    "Changes the last plan found between the network file and the server (drift after apply).",
    ("network",),
)
APPLY_SECONDS = REGISTRY.histogram(
    "clubs_provisioning_apply_seconds", "Duration of an apply.", (), (1, 5, 15, 60, 300, 1800)
)
APPLY_WRITES = REGISTRY.counter(
    "clubs_provisioning_apply_writes_total", "Writes to the homeserver made by applies."
)
LAST_APPLY = REGISTRY.gauge(
    "clubs_provisioning_last_apply_timestamp_seconds", "Unix time of the last successful apply."
)
ROUTES = ("/v1/validate", "/v1/plan", "/v1/apply", "/v1/status", "/openapi.json", "/metrics")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await _guarded(request, handler)
    route = request.path if request.path in ROUTES else "other"
    REQUESTS.inc(route=route, status=str(response.status))
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/openapi.json":
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _error(401, "M_MISSING_TOKEN", "missing bearer token")
    expected = request.app[TOKEN_KEY]
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return _error(403, "M_FORBIDDEN", "wrong token")
    length = request.content_length
    if length is not None and length > request.app[MAX_BODY_KEY]:
        return _error(413, "M_TOO_LARGE", f"body over {request.app[MAX_BODY_KEY]} bytes")
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "M_TOO_LARGE", f"body over {request.app[MAX_BODY_KEY]} bytes")


async def _document(request: web.Request) -> Checked | web.Response:
    body = await request.read()
    try:
        return check(body, POSTED)
    except ConfigError as e:
        return _error(
            400,
            "M_BAD_JSON",
            "the network document is not valid",
            errors=[str(p) for p in e.problems],
        )


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


async def _desired(request: web.Request, checked: Checked) -> DesiredNetwork:
    provisioner = request.app[PROVISIONER_KEY]
    return compile_desired(checked.network, provisioner.split(":", 1)[1])


async def validate(request: web.Request) -> web.Response:
    checked = await _document(request)
    if isinstance(checked, web.Response):
        return checked
    return web.json_response(
        {"valid": True, "network": checked.network.key, "warnings": list(checked.warnings)}
    )


async def plan_route(request: web.Request) -> web.Response:
    checked = await _document(request)
    if isinstance(checked, web.Response):
        return checked
    try:
        desired = await _desired(request, checked)
        store = request.app[STORE_KEY]
        actual = await discover(
            request.app[HTTP_KEY],
            desired,
            request.app[PROVISIONER_KEY],
            tokens=store if isinstance(store, TokenStore) else None,
        )
    except ClubsError as e:
        return _error(502, "M_UNKNOWN", str(e))
    p = plan(
        desired,
        actual,
        reinvite=_flag(request, "reinvite"),
        prune=_flag(request, "prune"),
    )
    PENDING.set(len(p.actions), network=desired.network)
    return web.json_response({**p.to_json(), "pending": not p.empty})


async def apply_route(request: web.Request) -> web.Response:
    checked = await _document(request)
    if isinstance(checked, web.Response):
        return checked
    lock = request.app[LOCK_KEY]
    if lock.locked():
        return _error(409, "M_LIMIT_EXCEEDED", "another apply is running")
    async with lock:
        try:
            desired = await _desired(request, checked)
            store = request.app[STORE_KEY]
            result = await apply_network(
                request.app[HTTP_KEY],
                desired,
                request.app[PROVISIONER_KEY],
                tokens=store if isinstance(store, TokenStore) else None,
                reinvite=_flag(request, "reinvite"),
                prune=_flag(request, "prune"),
                expected_hash=request.query.get("hash") or None,
            )
        except ClubsError as e:
            return _error(409 if "changed since" in str(e) else 502, "M_UNKNOWN", str(e))
    APPLY_SECONDS.observe(result.seconds)
    APPLY_WRITES.inc(result.writes)
    LAST_APPLY.set(time.time())
    PENDING.set(0, network=desired.network)
    request.app[STATUS_KEY].last_apply = {
        "network": desired.network,
        "at": int(time.time()),
        "changes": len(result.plan.actions),
        "writes": result.writes,
        "seconds": round(result.seconds, 3),
    }
    return web.json_response(
        {
            "summary": result.summary(),
            "writes": result.writes,
            "plan": result.plan.to_json(),
            "issued": [
                {"person": t.person, "token": t.token, "expiry_ms": t.expiry_ms}
                for t in result.issued
            ],
        }
    )


async def status(request: web.Request) -> web.Response:
    body: dict[str, Any] = {
        "ok": True,
        "homeserver": request.app[HTTP_KEY].base_url,
        "provisioner": request.app[PROVISIONER_KEY],
    }
    last = request.app[STATUS_KEY].last_apply
    if last is not None:
        body["last_apply"] = last
    return web.json_response(body)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text, behind the same bearer token as the API (monitoring has one)."""
    return web.Response(body=REGISTRY.render().encode(), headers={"Content-Type": CONTENT_TYPE})


def build_app(
    http: MatrixHttp,
    provisioner: str,
    token: str,
    *,
    tokens: TokenStore | None = None,
    max_body: int = MAX_BODY,
) -> web.Application:
    """The service: everything passed in (the provisioner's client, its id, the API token)."""
    if len(token) < 16:
        raise ClubsError("the service token must be at least 16 characters")
    app = web.Application(middlewares=[guard], client_max_size=max_body)
    app[HTTP_KEY] = http
    app[PROVISIONER_KEY] = provisioner
    app[TOKEN_KEY] = token
    app[MAX_BODY_KEY] = max_body
    app[LOCK_KEY] = asyncio.Lock()
    app[STORE_KEY] = tokens if tokens is not None else object()
    app[STATUS_KEY] = ServiceStatus()
    app.router.add_post("/v1/validate", validate)
    app.router.add_post("/v1/plan", plan_route)
    app.router.add_post("/v1/apply", apply_route)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/metrics", metrics)
    return app


def service_token(vault: Vault) -> tuple[str, bool]:
    """The API token, `$CLUBS_SERVICE_TOKEN` or else the vault's (created there on first use,
    once even if two services start together), and whether this call created it."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token, False
    token = vault.get(VAULT_KEY)
    if token is not None:
        return token, False
    fresh = secrets.token_urlsafe(32)
    token = vault.setdefault(VAULT_KEY, fresh)
    return token, token == fresh


def show_token(var_dir: Path, out: TextIO | None = None) -> int:
    """`clubs serve --show-token`: print the API token, only when `out` is a terminal (a pipe
    or a file may end up in persisted logs). Creates the token if the service never ran."""
    out = out or sys.stdout
    if os.environ.get(TOKEN_ENV):
        print(f"the service token is the value of ${TOKEN_ENV}", file=sys.stderr)
        return 0
    if not out.isatty():
        raise ClubsError(
            "not printing the service token: standard output is not a terminal and may be "
            f"logged; run `clubs serve --show-token` in a terminal, or set ${TOKEN_ENV}"
        )
    token, _ = service_token(Vault(var_dir / "secrets" / "vault"))
    print(token, file=out, flush=True)
    return 0


async def serve(args: argparse.Namespace) -> int:
    from clubs.provisioning.commands import connect

    async with connect(args) as conn:
        token, created = service_token(conn.vault())
        if created:
            print(
                "New service token kept in the vault; "
                f"`clubs serve --show-token --var-dir {conn.var_dir}` prints it",
                flush=True,
            )
        store = conn.tokens()
        app = build_app(conn.http, conn.provisioner, token, tokens=store)
        runner = web.AppRunner(app, access_log_class=AccessLogger)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        print(f"Provisioning API on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            store.close()
    return 0


_YAML_BODY = {
    "required": True,
    "content": {"application/yaml": {"schema": {"type": "string"}}},
}
_ERR = {"$ref": "#/components/schemas/Error"}


def _responses(ok: str, *extra: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": {"description": ok, "content": {"application/json": {"schema": {"type": "object"}}}},
        "401": {
            "description": "missing bearer token",
            "content": {"application/json": {"schema": _ERR}},
        },
        "403": {"description": "wrong token", "content": {"application/json": {"schema": _ERR}}},
    }
    for code in extra:
        out[str(code)] = {
            "description": {
                400: "invalid document; `errors` lists each located problem",
                409: "the homeserver changed since the plan, or an apply is running",
                413: "body too large",
                502: "the homeserver failed",
            }[code],
            "content": {"application/json": {"schema": _ERR}},
        }
    return out


_FLAGS = [
    {"name": n, "in": "query", "required": False, "schema": {"type": "boolean"}, "description": d}
    for n, d in (
        ("reinvite", "invite again people who left on their own"),
        ("prune", "archive managed rooms that are not declared"),
    )
]

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Matrix Clubs provisioning", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["errcode", "error"],
                "properties": {
                    "errcode": {"type": "string"},
                    "error": {"type": "string"},
                    "errors": {"type": "array", "items": {"type": "string"}},
                },
            }
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/validate": {
            "post": {
                "summary": "Check a network document (nothing is sent to the homeserver)",
                "requestBody": _YAML_BODY,
                "responses": _responses("valid; warnings listed", 400, 413),
            }
        },
        "/v1/plan": {
            "post": {
                "summary": "What apply would change; `pending` is false when nothing",
                "parameters": _FLAGS,
                "requestBody": _YAML_BODY,
                "responses": _responses("the plan (actions, notes, hash)", 400, 413, 502),
            }
        },
        "/v1/apply": {
            "post": {
                "summary": "Make the homeserver match the document, then verify",
                "parameters": [
                    *_FLAGS,
                    {
                        "name": "hash",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "refuse (409) unless the fresh plan has this hash",
                    },
                ],
                "requestBody": _YAML_BODY,
                "responses": _responses("applied; summary, writes, plan", 400, 409, 413, 502),
            }
        },
        "/v1/status": {"get": {"summary": "Service status", "responses": _responses("status")}},
        "/openapi.json": {
            "get": {
                "summary": "This description",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3 document"}},
            }
        },
    },
}
