"""The front of a worker deployment: one HTTP port that sends each request to the right Synapse.

Synapse's worker docs leave routing to a reverse proxy. `route()` is that routing as a pure
function (the table is docs/workers.md's): the client traffic a generic worker may serve goes to
the `client` worker — sync, room history, sending, joins and leaves, room state, key queries —
and everything else to main. `/_synapse/admin` is served only to loopback peers: the admin API
never leaves the machine through the front, whatever address it binds.

`Front` is a small aiohttp proxy applying it: bodies and answers pass through untouched (no
decompression), the long-polling `/sync` is never cut by a timeout of ours, an upstream that is
down (a worker being restarted) is a 502 with a Matrix error, which clients retry. It logs
neither paths nor query strings (access tokens may travel in them).
"""

from __future__ import annotations

import io
import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from yarl import URL

log = logging.getLogger(__name__)

MAIN = "main"
CLIENT = "client"
MAX_BODY = 64 * 1024 * 1024
"""Above Synapse's default max_upload_size (50M): the homeserver refuses larger media itself."""

_V = r"(?:api/v1|r0|v3|unstable)"
_ROOM = rf"^/_matrix/client/{_V}/rooms/[^/]+"
CLIENT_WORKER_PATHS: tuple[str, ...] = (
    # sync
    rf"^/_matrix/client/{_V}/sync$",
    rf"^/_matrix/client/{_V}/events$",
    rf"^/_matrix/client/{_V}/initialSync$",
    rf"{_ROOM}/initialSync$",
    # reading rooms (one client worker: a room's /messages always reaches the same process)
    rf"{_ROOM}/messages$",
    rf"{_ROOM}/(?:members|joined_members)$",
    rf"{_ROOM}/state$",
    rf"{_ROOM}/context/",
    rf"{_ROOM}/event/",
    rf"^/_matrix/client/{_V}/joined_rooms$",
    # sending events (handed to the events stream's writer)
    rf"{_ROOM}/send/",
    rf"{_ROOM}/state/",
    rf"{_ROOM}/redact/",
    rf"{_ROOM}/(?:join|invite|leave|ban|unban|kick)$",
    rf"^/_matrix/client/{_V}/join/",
    rf"^/_matrix/client/{_V}/createRoom$",
    # encryption reads (uploads stay on main, the device_lists writer)
    rf"^/_matrix/client/{_V}/keys/(?:query|changes|claim)$",
    rf"^/_matrix/client/{_V}/room_keys/",
    rf"^/_matrix/client/{_V}/account/whoami$",
)
_CLIENT_WORKER = re.compile("|".join(f"(?:{p})" for p in CLIENT_WORKER_PATHS))
_ADMIN = re.compile(r"^/+_synapse/+admin(?:/|$)")
"""The admin API, however many slashes a request puts in its path."""

# Hop-by-hop headers (RFC 9110 §7.6.1) and what aiohttp sets itself.
_DROP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
        "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length",
    )
)  # fmt: skip


@dataclass(frozen=True)
class Refused:
    status: int
    errcode: str
    error: str


def route(path: str, peer: str | None, *, has_client_worker: bool) -> str | Refused:
    """Which process serves `path` (the raw path, no query): "client" or "main"."""
    if _ADMIN.match(path) and not is_loopback(peer):
        return Refused(403, "M_FORBIDDEN", "the admin API is served on the machine itself only")
    if has_client_worker and _CLIENT_WORKER.match(path):
        return CLIENT
    return MAIN


def is_loopback(peer: str | None) -> bool:
    if not peer:
        return False
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False  # a Unix socket peer or garbage: not trusted


_FORWARDED = ("x-forwarded-for", "x-forwarded-proto")


def forwarded_headers(
    given: Mapping[str, str], peer: str | None, scheme: str, behind_proxy: bool
) -> dict[str, str]:
    """The headers passed upstream: hop-by-hop ones dropped; X-Forwarded-For/-Proto are the
    peer's, unless a reverse proxy of ours set them (`behind_proxy`): Synapse's rate limits and
    its one-day IP record read them, so a client must not choose them."""
    headers = {k: v for k, v in given.items() if k.lower() not in _DROP}
    kept = {k.lower(): v for k, v in headers.items() if k.lower() in _FORWARDED}
    headers = {k: v for k, v in headers.items() if k.lower() not in _FORWARDED}
    trusted = behind_proxy and "x-forwarded-for" in kept
    headers["X-Forwarded-For"] = kept["x-forwarded-for"] if trusted else (peer or "")
    headers["X-Forwarded-Proto"] = kept.get("x-forwarded-proto", scheme) if trusted else scheme
    return headers


class Front:
    """Serve `host:port`, forwarding to `upstreams` ({"main": url, "client": url})."""

    def __init__(
        self, host: str, port: int, upstreams: Mapping[str, str], *, behind_proxy: bool = False
    ) -> None:
        self.host = host
        self.behind_proxy = behind_proxy
        """Keep the X-Forwarded-For a reverse proxy in front of us set (else: the peer's own
        address, whatever the client claimed)."""
        self.port = port
        self.upstreams = {k: v.rstrip("/") for k, v in upstreams.items()}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            # /sync long-polls for as long as its client asked: no read timeout of ours.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None),
            connector=aiohttp.TCPConnector(limit=0),
        )
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("the front listens on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        target = route(request.path, request.remote, has_client_worker=CLIENT in self.upstreams)
        if isinstance(target, Refused):
            return web.json_response(
                {"errcode": target.errcode, "error": target.error}, status=target.status
            )
        headers = forwarded_headers(
            request.headers, request.remote, request.scheme, self.behind_proxy
        )
        # A file object, not bytes: aiohttp sends it in chunks (an upload may be megabytes).
        body = io.BytesIO(await request.read()) if request.body_exists else None
        url = URL(self.upstreams[target] + request.raw_path, encoded=True)
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            ) as upstream:
                return await _relay(request, upstream)
        except _ClientGone:
            # The client went away (a /sync it gave up on): nothing left to answer.
            return web.Response(status=499)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
            log.warning("the %s process did not answer: %s", target, type(e).__name__)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=502)
            return web.json_response(
                {"errcode": "M_UNKNOWN", "error": f"the {target} process is not answering"},
                status=502,
            )


class _ClientGone(Exception):
    pass


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """Copy the upstream's answer to the client as it comes. An upstream cut mid-answer raises
    (the client sees a cut connection and retries); a client gone raises `_ClientGone`."""
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    for key, value in upstream.headers.items():
        if key.lower() not in _DROP or key.lower() == "content-length":
            response.headers.add(key, value)
    try:
        await response.prepare(request)
    except ConnectionResetError:
        raise _ClientGone from None
    async for chunk in upstream.content.iter_chunked(64 * 1024):
        try:
            await response.write(chunk)
        except ConnectionResetError:
            raise _ClientGone from None
    try:
        await response.write_eof()
    except ConnectionResetError:
        raise _ClientGone from None
    return response
