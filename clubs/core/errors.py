"""Exceptions raised at the core/ boundary. Callers never see nio or aiohttp error objects."""

from __future__ import annotations


class ClubsError(Exception):
    """An error meant for a person: its message is one clear line saying what and where."""


class HomeserverError(ClubsError):
    """The embedded homeserver could not be prepared, started or reached."""


class MatrixError(ClubsError):
    """The homeserver answered a request with an error."""

    def __init__(self, status: int, errcode: str, message: str, *, method: str, path: str) -> None:
        super().__init__(f"{method} {path}: {status} {errcode}: {message}")
        self.status = status
        self.errcode = errcode
        self.error = message


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
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(status, errcode, message, method=method, path=path)
        self.retry_after_ms = retry_after_ms
