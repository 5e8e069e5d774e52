"""The application service's HTTP side: what the homeserver calls (aiohttp).

- `PUT /_matrix/app/v1/transactions/{txnId}`: the events are filtered (`relevant`), then the
  transaction id and the events are stored in one database transaction (`BridgeStore.accept`)
  before the 200 answer: a replayed or retried id is answered 200 and changes nothing. No
  Telegram call happens here; the relay worker is woken and reads the inbox.
- `GET /_matrix/app/v1/users/{userId}`: 200 for the bridge's bot and ghosts it has created, else
  404 (ghosts are created from Telegram's side, never on a query).
- `GET /_matrix/app/v1/rooms/{roomAlias}`: always 404 (the bridge owns no aliases).
- `POST /_matrix/app/v1/ping`: 200 `{}`.
- `GET /health`: no authentication, no details beyond counts and liveness.
- `GET /metrics`: Prometheus text (clubs/bridge/bridgemetrics.py), counts only, like `/health`.

Every `/_matrix/app/` request must carry the `hs_token` as `Authorization: Bearer …`, compared in
constant time: none gives 401, a wrong one 403, and no handler runs. The deprecated
`access_token` query parameter is ignored (counted as no token) unless the deployment allows it
(`accept_query_token`), since tokens in URLs end up in logs; our homeserver template never sends
it. aiohttp's access log is off: it would print paths and queries.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from clubs.bridge.bridgemetrics import PUSH_LAG, TRANSACTIONS
from clubs.bridge.store import BridgeStore
from clubs.core.crash import crashpoint
from clubs.core.ids import as_event_id, as_room_id, as_user_id
from clubs.core.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from clubs.core.metrics import REGISTRY
from clubs.core.namespace import BRIDGE_CONSENT

log = logging.getLogger(__name__)

PREFIX = "/_matrix/app/v1"
MAX_BODY = 16 * 1024 * 1024
MAX_TXN_ID = 255
HANDLED_TYPES = frozenset(
    {
        "m.room.message",
        "m.room.encrypted",
        "m.room.redaction",
        "m.room.member",
        "m.room.encryption",
        "m.room.power_levels",
        BRIDGE_CONSENT,
    }
)

UserQuery = Callable[[str], Awaitable[bool]]
Health = Callable[[], Mapping[str, Any]]


OWN_ECHOES = frozenset({"m.room.message", "m.room.encrypted", "m.room.redaction"})


def relevant(event: object, is_ours: Callable[[str], bool]) -> dict[str, Any] | None:
    """The event if the bridge acts on it and its ids are well formed, else None.

    Kept: messages (encrypted ones too) and redactions (relayed), the encryption event (a room
    becomes encrypted), the consent and the power levels (consent withdrawn, or its writer no
    longer an admin), membership events about the bridge's own users (its invitations), and a
    member's own membership events (a new display name: the relay caches names). Messages and
    redactions of the bridge's own users (its ghosts' relayed messages coming back) are dropped
    here rather than stored: the relay never sends them anywhere.
    Anything malformed is dropped here, so a hostile event never reaches the worker.
    """
    if not isinstance(event, dict):
        return None
    kind = event.get("type")
    if kind not in HANDLED_TYPES:
        return None
    if as_event_id(event.get("event_id")) is None or as_room_id(event.get("room_id")) is None:
        return None
    if as_user_id(event.get("sender")) is None or not isinstance(event.get("content"), dict):
        return None
    if kind in OWN_ECHOES and is_ours(str(event.get("sender"))):
        return None
    if kind == "m.room.member":
        key = event.get("state_key")
        if not isinstance(key, str) or not (is_ours(key) or key == event.get("sender")):
            return None
    return event


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


class AppService:
    def __init__(
        self,
        hs_token: str,
        store: BridgeStore,
        *,
        is_ours: Callable[[str], bool],
        user_exists: UserQuery,
        wake: Callable[[], None],
        health: Health,
        accept_query_token: bool = False,
    ) -> None:
        self._hs_token = hs_token.encode()
        self._store = store
        self._is_ours = is_ours
        self._user_exists = user_exists
        self._wake = wake
        self._health = health
        self._accept_query_token = accept_query_token
        self.transactions_applied = 0

    def __repr__(self) -> str:
        return "AppService(<hs_token>)"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        app.router.add_put(PREFIX + "/transactions/{txn_id}", self._transaction, name="transaction")
        app.router.add_get(PREFIX + "/users/{user_id}", self._user)
        app.router.add_get(PREFIX + "/rooms/{alias}", self._room)
        app.router.add_post(PREFIX + "/ping", self._ping)
        app.router.add_get("/health", self._health_route)
        app.router.add_get("/metrics", self._metrics_route)
        return app

    # --- authentication ------------------------------------------------------------------------

    def _token(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            return value.strip() if scheme.lower() == "bearer" else ""
        if self._accept_query_token:
            return request.query.get("access_token")
        return None

    def authorised(self, request: web.Request) -> web.Response | None:
        """None if the request carries the hs_token, else the 401/403 answer."""
        token = self._token(request)
        if token is None:
            return _error(401, "M_UNAUTHORIZED", "missing token")
        if not hmac.compare_digest(token.encode(), self._hs_token):
            return _error(403, "M_FORBIDDEN", "wrong token")
        return None

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/_matrix/"):
            if request.match_info.http_exception is not None:
                status = request.match_info.http_exception.status
                return _error(405 if status == 405 else 404, "M_UNRECOGNIZED", "unrecognized")
            refused = self.authorised(request)
            if refused is not None:
                if request.match_info.route.name == "transaction":
                    TRANSACTIONS.inc(outcome="refused")
                log.warning(
                    "refused a homeserver request (%d) on %s", refused.status, _route(request)
                )
                return refused
        try:
            return await handler(request)
        except web.HTTPException as e:
            if request.path.startswith("/_matrix/"):
                return _error(e.status, "M_UNRECOGNIZED", "unrecognized")
            raise

    # --- routes --------------------------------------------------------------------------------

    async def _transaction(self, request: web.Request) -> web.Response:
        arrived_ms = time.time() * 1000
        txn_id = request.match_info["txn_id"]
        if not txn_id or len(txn_id) > MAX_TXN_ID:
            return _error(400, "M_INVALID_PARAM", "bad transaction id")
        try:
            body = await request.json(loads=json.loads)
        except ValueError:
            return _error(400, "M_NOT_JSON", "body is not JSON")
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            return _error(400, "M_BAD_JSON", "expected an object with an events list")
        kept = [e for e in (relevant(ev, self._is_ours) for ev in events) if e is not None]
        if await self._store.accept(txn_id, kept):
            for e in kept:
                ts = e.get("origin_server_ts")
                if isinstance(ts, int) and not isinstance(ts, bool):
                    PUSH_LAG.observe(max(0.0, arrived_ms - ts) / 1000)
            crashpoint("bridge_txn_accepted")  # stored, not yet answered
            self.transactions_applied += 1
            TRANSACTIONS.inc(outcome="accepted")
            log.info("transaction accepted: %d events, %d kept", len(events), len(kept))
            if kept:
                self._wake()
        else:
            TRANSACTIONS.inc(outcome="replayed")
            log.info("transaction replayed: ignored")
        return web.json_response({})

    async def _user(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        if self._is_ours(user_id) and await self._user_exists(user_id):
            return web.json_response({})
        return _error(404, "M_NOT_FOUND", "no such user")

    async def _room(self, request: web.Request) -> web.Response:
        return _error(404, "M_NOT_FOUND", "no such room alias")

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _metrics_route(self, request: web.Request) -> web.Response:
        return web.Response(
            body=REGISTRY.render().encode(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    async def _health_route(self, request: web.Request) -> web.Response:
        health = dict(self._health())
        return web.json_response(health, status=200 if health.get("ok") else 503)


def _route(request: web.Request) -> str:
    """The route template, never the path itself (it holds ids)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unknown route"
