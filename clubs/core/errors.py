"""Exceptions raised at the core/ boundary. Callers never see nio or aiohttp error objects."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any


class ClubsError(Exception):
    """An error meant for a person: its message is one clear line saying what and where."""


class HomeserverError(ClubsError):
    """The embedded homeserver could not be prepared, started or reached."""


class MatrixError(ClubsError):
    """The homeserver answered a request with an error."""

    def __init__(
        self,
        status: int,
        errcode: str,
        message: str,
        *,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{method} {path}: {status} {errcode}: {message}")
        self.status = status
        self.errcode = errcode
        self.error = message
        self.body: Mapping[str, Any] = body or {}
        """The decoded error body (e.g. the flows and session of a user-interactive auth 401)."""


class Forbidden(MatrixError):
    """403, or 401 for a missing/unknown token."""


class NotFound(MatrixError):
    """404."""


class RateLimited(MatrixError):
    """429 that we gave up retrying."""

    def __init__(
        self,
        status: int,
        errcode: str,
        message: str,
        *,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(status, errcode, message, method=method, path=path, body=body)
        self.retry_after_ms = retry_after_ms


class Unreachable(ClubsError):
    """The homeserver could not be reached (connection refused or reset, or a timeout)."""


def is_transient(error: BaseException) -> bool:
    """Whether a request failed for the homeserver's reasons (away, overloaded, rate limiting)
    rather than the request's: then it is worth trying again, with the same transaction id."""
    if isinstance(error, MatrixError):
        return isinstance(error, RateLimited) or error.status >= 500
    return isinstance(error, (Unreachable, TimeoutError, ConnectionError, asyncio.TimeoutError))
