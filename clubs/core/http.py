"""A small, typed HTTP client for the Matrix client-server and Synapse admin APIs.

Used where no end-to-end encryption is involved (the provisioner never reads messages and never
uploads device keys). Paths are built by `cs`, `admin_v1` and `admin_v2` (segments
percent-quoted by construction), the server's errors become the exceptions in
`clubs.core.errors` and a failed connection or a timeout becomes `Unreachable` (no caller sees
an aiohttp error), 429 answers are retried after the server's `retry_after_ms`, and every write
goes through one hook so callers can count writes or inject faults.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from clubs.core.errors import Forbidden, MatrixError, NotFound, RateLimited, Unreachable
from clubs.core.ids import DeviceId, EventId, RoomId, UserId

log = logging.getLogger(__name__)

__all__ = [
    "DeviceId",
    "EventId",
    "JsonDict",
    "MatrixHttp",
    "RoomId",
    "UserId",
    "admin_v1",
    "admin_v2",
    "cs",
    "path",
]

JsonDict = dict[str, Any]
WriteHook = Callable[[str, str], Awaitable[None] | None]
"""Called before every write request with (method, path template); may raise or exit."""

_READ_METHODS = frozenset({"GET", "HEAD"})
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, ConnectionError)
"""What a request can fail with before the homeserver answers: raised as `Unreachable`."""


def path(*segments: str) -> str:
    """Build a URL path from segments, quoting each one completely (`!a:b` → `%21a%3Ab`)."""
    return "/" + "/".join(quote(s, safe="") for s in segments)


def cs(*segments: str) -> str:
    """A client-server API path: `cs("rooms", room, "ban")` → `/_matrix/client/v3/rooms/…/ban`."""
    return path("_matrix", "client", "v3", *segments)


def admin_v1(*segments: str) -> str:
    """A Synapse admin API v1 path: `/_synapse/admin/v1/…` (needs a server admin's token)."""
    return path("_synapse", "admin", "v1", *segments)


def admin_v2(*segments: str) -> str:
    """A Synapse admin API v2 path: `/_synapse/admin/v2/…` (needs a server admin's token)."""
    return path("_synapse", "admin", "v2", *segments)


class MatrixHttp:
    """One account's HTTP view of one homeserver."""

    def __init__(
        self,
        base_url: str,
        access_token: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        max_retries: int = 8,
        timeout_s: float = 60.0,
        on_write: WriteHook | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self._own_session = session is None
        self._session = session
        self._max_retries = max_retries
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.on_write = on_write
        self.writes = 0
        """Count of write requests sent (for tests and benchmarks: a no-op apply makes 0)."""

    async def __aenter__(self) -> MatrixHttp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, url_path: str, **kw: Any) -> JsonDict:
        """Send one request whose answer is a JSON object (see `request_json`)."""
        body = await self.request_json(method, url_path, **kw)
        return body if isinstance(body, dict) else {}

    async def get_list(self, url_path: str, **kw: Any) -> list[Any]:
        """GET an endpoint that answers with a JSON array (e.g. a room's full state)."""
        body = await self.request_json("GET", url_path, **kw)
        return body if isinstance(body, list) else []

    async def request_json(
        self,
        method: str,
        url_path: str,
        *,
        json: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        auth: bool = True,
        label: str | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON body.

        `label` names the request in logs and hooks without its ids (defaults to the path up to
        its first quoted id); bodies and queries are never logged.
        """
        label = label or url_path.split("%")[0]
        headers = (
            {"Authorization": f"Bearer {self.access_token}"} if auth and self.access_token else {}
        )
        return await self._send(method, url_path, label, headers, json=json, params=query)

    async def get(self, url_path: str, **kw: Any) -> JsonDict:
        return await self.request("GET", url_path, **kw)

    async def post(self, url_path: str, json: Mapping[str, Any], **kw: Any) -> JsonDict:
        return await self.request("POST", url_path, json=json, **kw)

    async def put(self, url_path: str, json: Mapping[str, Any], **kw: Any) -> JsonDict:
        return await self.request("PUT", url_path, json=json, **kw)

    async def delete(self, url_path: str, **kw: Any) -> JsonDict:
        return await self.request("DELETE", url_path, **kw)

    async def request_bytes(
        self,
        method: str,
        url_path: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        label: str | None = None,
    ) -> JsonDict:
        """Send `data` as the raw request body (a media upload) and return the JSON answer.

        The same write hook, 429 retries and typed errors as `request_json`; the body is never
        logged. The whole body is sent again on a retry, so a retry is only as idempotent as the
        endpoint (`PUT /_matrix/media/v3/upload/{server}/{id}` answers 409 the second time).
        """
        label = label or url_path.split("%")[0]
        headers = {"Content-Type": content_type}
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        body = await self._send(method, url_path, label, headers, data=data)
        return body if isinstance(body, dict) else {}

    async def _send(
        self, method: str, url_path: str, label: str, headers: Mapping[str, str], **body: Any
    ) -> Any:
        """The one request loop: the write hook and count, then the request (`body`: aiohttp's
        `json`/`params` or `data`) until it is answered, retried after 429s; transport failures
        raise `Unreachable`, error answers the typed errors. Returns the decoded JSON body."""
        if method not in _READ_METHODS:
            if self.on_write is not None:
                maybe = self.on_write(method, label)
                if maybe is not None:
                    await maybe
            self.writes += 1
        attempt = 0
        while True:
            try:
                async with self.session.request(
                    method,
                    self.base_url + url_path,
                    headers=headers,
                    timeout=self._timeout,
                    **body,
                ) as resp:
                    try:
                        answer = await resp.json(content_type=None)
                    except ValueError:
                        answer = None
                    status, reason, resp_headers = resp.status, resp.reason, resp.headers
            except _TRANSPORT_ERRORS as e:
                raise Unreachable(f"{method} {label}: {type(e).__name__}") from None
            if status < 400:
                return answer
            err = answer if isinstance(answer, dict) else {}
            if status == 429 and attempt < self._max_retries:
                attempt += 1
                delay = _retry_after_ms(err, resp_headers) / 1000
                delay += random.uniform(0, 0.05 * attempt)  # noqa: S311
                log.info("rate limited on %s, retrying in %.2fs", label, delay)
                await asyncio.sleep(delay)
                continue
            errcode = str(err.get("errcode", "M_UNKNOWN"))
            message = str(err.get("error", reason or ""))
            raise _error(status, errcode, message, method, label, err)


def _retry_after_ms(err: Mapping[str, Any], headers: Mapping[str, str]) -> int:
    value = err.get("retry_after_ms")
    if isinstance(value, int) and value >= 0:
        return min(value, 60_000)
    header = headers.get("Retry-After")
    if header and header.isdigit():
        return min(int(header) * 1000, 60_000)
    return 1000


def _error(
    status: int, errcode: str, message: str, method: str, label: str, err: Mapping[str, Any]
) -> MatrixError:
    kw: dict[str, Any] = {"method": method, "path": label, "body": err}
    if status in (401, 403):
        return Forbidden(status, errcode, message, **kw)
    if status == 404:
        return NotFound(status, errcode, message, **kw)
    if status == 429:
        retry = err.get("retry_after_ms")
        return RateLimited(
            status, errcode, message, retry_after_ms=retry if isinstance(retry, int) else None, **kw
        )
    return MatrixError(status, errcode, message, **kw)
