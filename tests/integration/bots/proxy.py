"""A TCP proxy that counts what a client tries while its homeserver is away.

It runs its own event loop in a thread, so it keeps accepting (and counting) even while the
test's loop is blocked, e.g. in `Homeserver.start()`. Every accepted connection and every HTTP
request head (a chunk starting with a method) is timestamped; when the upstream refuses, the
proxy reads the request, counts it, and closes the connection — what a client sees when the
server behind a reverse proxy is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

_ERROR_BODY = b'{"errcode":"M_UNKNOWN","error":"upstream failed"}'
BAD_GATEWAY = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
    b"Content-Length: "
    + str(len(_ERROR_BODY)).encode()
    + b"\r\nConnection: close\r\n\r\n"
    + _ERROR_BODY
)
_REQUEST_HEAD = re.compile(rb"^(?:GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH) /")


@dataclass
class CountingProxy:
    upstream_host: str
    upstream_port: int
    host: str = "127.0.0.1"
    port: int = 0
    connections: list[float] = field(default_factory=list)
    """Monotonic times of accepted connections."""
    requests: list[float] = field(default_factory=list)
    """Monotonic times of request heads seen (refused ones included)."""
    refused: list[float] = field(default_factory=list)
    """Monotonic times of connections the upstream refused."""
    drop: Callable[[bytes], bool] | None = None
    """When set, a request whose head it accepts is dropped: the connection is closed before
    the request reaches the homeserver (a fault for just some endpoints)."""
    dropped: list[float] = field(default_factory=list)
    """Monotonic times of dropped requests."""
    reject: Callable[[bytes], bool] | None = None
    """When set, a request whose head it accepts is answered `502 Bad Gateway` (a Matrix error
    body) by the proxy itself: what a client sees when a reverse proxy's upstream fails. Unlike
    a dropped connection, which HTTP clients retry by themselves, the error reaches the caller."""
    rejected: list[float] = field(default_factory=list)
    """Monotonic times of rejected requests."""
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def requests_between(self, start: float, end: float) -> int:
        return sum(1 for t in list(self.requests) if start <= t <= end)

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, self.host, self.port)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="counting-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the proxy did not start")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            loop = self._loop

            def shutdown() -> None:
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.stop()

            loop.call_soon_threadsafe(shutdown)
            self._thread.join(10)
            self._loop = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(time.monotonic())
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            self.refused.append(time.monotonic())
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(2):
                    self._count(await reader.read(65536))
            writer.close()
            return
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, count=True, peer=writer),
                self._pipe(up_reader, writer, count=False),
            )
        finally:
            for w in (writer, up_writer):
                w.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        count: bool,
        peer: asyncio.StreamWriter | None = None,
    ) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                if count:
                    self._count(chunk)
                    reject = self.reject
                    if reject is not None and _REQUEST_HEAD.match(chunk) and reject(chunk):
                        self.rejected.append(time.monotonic())
                        if peer is not None:
                            peer.write(BAD_GATEWAY)
                            with contextlib.suppress(OSError):
                                await peer.drain()
                            peer.close()
                        break
                    drop = self.drop
                    if drop is not None and _REQUEST_HEAD.match(chunk) and drop(chunk):
                        self.dropped.append(time.monotonic())
                        if peer is not None:
                            peer.close()
                        break
                writer.write(chunk)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    def _count(self, chunk: bytes) -> None:
        if _REQUEST_HEAD.match(chunk):
            self.requests.append(time.monotonic())


@contextlib.contextmanager
def counting_proxy(upstream_host: str, upstream_port: int) -> Iterator[CountingProxy]:
    proxy = CountingProxy(upstream_host, upstream_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
