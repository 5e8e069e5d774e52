"""The real-Synapse test harness: one homeserver per test session, fresh users per test.

No mocks of Matrix: tests talk HTTP to a Synapse from PyPI started on a free loopback port from
the project's own template (the same code `make up` runs), so another homeserver on 8008 does
not matter. Users and rooms are never shared between tests: every `new_user()` is unique.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from clubs.core.admin import (
    Session,
    ensure_ratelimit_override,
    register_shared_secret,
    silence_push,
)
from clubs.core.homeserver import Homeserver, Settings
from clubs.core.http import MatrixHttp, path
from clubs.core.postgres import EmbeddedPostgres

if TYPE_CHECKING:
    from clubs.workersrun import Stack

T = TypeVar("T")


@dataclass
class Account:
    session: Session
    password: str
    http: MatrixHttp

    @property
    def user_id(self) -> str:
        return self.session.user_id


@dataclass
class SynapseHarness:
    hs: Homeserver
    admin: Account
    _clients: list[MatrixHttp] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.hs.url

    @property
    def server_name(self) -> str:
        return self.hs.settings.server_name

    def client(self, token: str | None = None) -> MatrixHttp:
        c = MatrixHttp(self.url, token)
        self._clients.append(c)
        return c

    async def new_user(
        self, prefix: str = "u", *, admin: bool = False, exempt: bool = True, **kw: Any
    ) -> Account:
        """Register a fresh, uniquely named account (rate-limit exempt unless told otherwise)."""
        localpart = f"{prefix}-{secrets.token_hex(5)}"
        password = secrets.token_urlsafe(12)
        session = await register_shared_secret(
            self.client(),
            self.hs.registration_shared_secret(),
            localpart,
            password,
            admin=admin,
            **kw,
        )
        if exempt:
            await ensure_ratelimit_override(self.admin.http, session.user_id)
        return Account(session, password, self.client(session.access_token))

    async def close(self) -> None:
        for c in self._clients:
            await c.close()


async def bootstrap_admin(hs: Homeserver) -> Account:
    http = MatrixHttp(hs.url)
    password = secrets.token_urlsafe(12)
    session = await register_shared_secret(
        http,
        hs.registration_shared_secret(),
        hs.settings.provisioner_localpart,
        password,
        admin=True,
        user_type="bot",
    )
    await http.close()
    admin_http = MatrixHttp(hs.url, session.access_token)
    await ensure_ratelimit_override(admin_http, session.user_id)
    await silence_push(admin_http)  # it stands in for the provisioner, a service account
    return Account(session, password, admin_http)


async def eventually(
    probe: Callable[[], Awaitable[T]], *, within: float = 10.0, interval: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s (last value: {last!r})")


async def room_state(user: Account, room_id: str, event_type: str, state_key: str = "") -> Any:
    return await user.http.get(
        path("_matrix", "client", "v3", "rooms", room_id, "state", event_type, state_key)
    )


PG_OS_USER = "nobody" if os.geteuid() == 0 else None
"""Who runs the tests' PostgreSQL clusters: the stock `nobody` when we are root (PostgreSQL
refuses root), else ourselves."""


@contextlib.contextmanager
def passable_dir(prefix: str) -> Iterator[Path]:
    """A directory of its own in /tmp (0755), removed afterwards, that the PostgreSQL server's
    unprivileged user can pass through: pytest's temporary tree is private to root (0700)."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def postgres_cluster() -> Iterator[EmbeddedPostgres]:
    """A throw-away PostgreSQL cluster from the wheel (`nobody` runs it when we are root), in
    a `passable_dir` of its own."""
    with passable_dir("clubs-pg-") as base:
        pg = EmbeddedPostgres(base / "postgres", base / "secrets", os_user=PG_OS_USER)
        try:
            pg.start()
            yield pg
        finally:
            pg.stop()


@contextlib.asynccontextmanager
async def synapse_on(
    data_dir: Path, postgres: EmbeddedPostgres | None = None
) -> AsyncIterator[SynapseHarness]:
    """A started Synapse with its admin account, on SQLite or on `postgres`."""
    hs = Homeserver(
        Settings(
            data_dir=data_dir,
            server_name="test.local",
            port=0,
            postgres=postgres.synapse_args() if postgres is not None else None,
        )
    )
    hs.start()
    try:
        server = SynapseHarness(hs, await bootstrap_admin(hs))
        yield server
        await server.admin.http.close()
        await server.close()
    finally:
        hs.stop()


@contextlib.asynccontextmanager
async def synapse_workers_on(
    data_dir: Path, postgres: EmbeddedPostgres
) -> AsyncIterator[tuple[SynapseHarness, Stack]]:
    """Synapse as main + workers + Redis behind the front (config/synapse/workers.yaml), with its
    admin account; also yields the running stack (`clubs.workersrun.Stack`)."""
    from clubs.core.workers import load_shape
    from clubs.workersrun import worker_stack

    settings = Settings(
        data_dir=data_dir, server_name="test.local", port=0, postgres=postgres.synapse_args()
    )
    async with worker_stack(settings, load_shape()) as stack:
        server = SynapseHarness(stack.main, await bootstrap_admin(stack.main))
        try:
            yield server, stack
        finally:
            await server.admin.http.close()
            await server.close()
