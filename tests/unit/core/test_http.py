"""MatrixHttp's boundary: paths built in one place, transport failures as `Unreachable`.

The failures are real ones on the loopback interface (a port nobody listens on, a server that
never answers), not mocks.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from clubs.core.errors import ClubsError, Unreachable
from clubs.core.http import MatrixHttp, admin_v1, admin_v2, cs, path


def test_paths_are_built_with_every_segment_quoted() -> None:
    room = "!abc:example.org"
    assert cs("rooms", room, "ban") == "/_matrix/client/v3/rooms/%21abc%3Aexample.org/ban"
    assert cs("createRoom") == path("_matrix", "client", "v3", "createRoom")
    assert admin_v1("users", "@a/b:x", "memberships") == (
        "/_synapse/admin/v1/users/%40a%2Fb%3Ax/memberships"
    )
    assert admin_v2("rooms", room) == "/_synapse/admin/v2/rooms/%21abc%3Aexample.org"


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connecting is refused


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_a_refused_connection_is_unreachable(method: str) -> None:
    async with MatrixHttp(f"http://127.0.0.1:{_closed_port()}", "secret-token") as http:
        with pytest.raises(Unreachable) as caught:
            await http.request(method, cs("rooms", "!r:x", "state"), json={}, label="state")
    assert isinstance(caught.value, ClubsError)
    assert str(caught.value) == f"{method} state: ClientConnectorError"
    assert "secret-token" not in str(caught.value)


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A loopback server that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_server_that_never_answers_is_unreachable_after_the_timeout(
    silent_server: int,
) -> None:
    async with MatrixHttp(f"http://127.0.0.1:{silent_server}", timeout_s=0.2) as http:
        with pytest.raises(Unreachable, match=r"^GET /_matrix/client/v3/joined_rooms: "):
            await http.get(cs("joined_rooms"))
