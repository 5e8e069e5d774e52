"""Which handling failures retry the batch (the homeserver's fault) and which skip the event."""

from __future__ import annotations

import pytest

from clubs.bots.runtime import is_transient
from clubs.core.errors import Forbidden, MatrixError, NotFound, RateLimited, Unreachable


def _error(cls: type[MatrixError], status: int) -> MatrixError:
    return cls(status, "M_X", "x", method="PUT", path="send")


@pytest.mark.parametrize(
    "error",
    [
        Unreachable("send: ServerDisconnectedError"),
        TimeoutError(),
        ConnectionResetError(),
        _error(RateLimited, 429),
        _error(MatrixError, 502),
    ],
)
def test_the_homeservers_failures_are_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        _error(Forbidden, 403),
        _error(NotFound, 404),
        _error(MatrixError, 400),
        ValueError("hostile content"),
        KeyError("body"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    ],
)
def test_the_events_own_failures_are_not(error: BaseException) -> None:
    assert not is_transient(error)
