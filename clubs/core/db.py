"""SQLite storage with numbered migrations (one file per service).

Each component (the runtime, each bot, the bridge…) registers its own ordered migrations under a
name; one `schema_version` table holds every component's version, so several components can
share a file. Each migration runs in one transaction together with its version bump; a database
newer than the code is refused. Parametrised SQL only.

Several bots share one file and one connection, so statements are serialised by an asyncio lock:
a transaction holds it from BEGIN to COMMIT, and a statement from another task waits instead of
landing inside someone else's transaction. A write the disk refuses (full, read-only, failing)
raises `StoreUnavailable`, which callers treat as "stop and retry later", never as "skip".
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from clubs.core.crash import store_fault
from clubs.core.errors import ClubsError

log = logging.getLogger(__name__)


class DatabaseError(ClubsError):
    """The database cannot be used by this version of the code."""


class StoreUnavailable(DatabaseError):
    """A write failed because of the storage (disk full, read-only, I/O error): nothing of
    it was recorded; try again later rather than treat the work as done or skipped."""


_STORAGE_FAULTS = ("full", "readonly", "read-only", "disk i/o", "unable to open")


def _storage_fault(error: sqlite3.Error) -> bool:
    text = str(error).lower()
    return isinstance(error, sqlite3.OperationalError) and any(m in text for m in _STORAGE_FAULTS)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str
    """One or more statements; run with executescript semantics inside the transaction."""


class Database:
    """One SQLite file, opened in WAL mode with foreign keys on and a busy timeout."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task[object] | None = None
        self.failing_writes = False
        """Tests set this to make every write fail as on a full disk."""

    @classmethod
    async def open(cls, path: Path) -> Database:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        for pragma in (
            "journal_mode=WAL",
            "foreign_keys=ON",
            "busy_timeout=5000",
            "synchronous=NORMAL",
            "secure_delete=ON",
        ):
            await conn.execute(f"PRAGMA {pragma}")
        path.chmod(0o600)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        return cls(conn, path)

    async def close(self) -> None:
        await self._conn.close()

    async def migrate(self, component: str, migrations: Sequence[Migration]) -> int:
        """Bring `component` to the newest migration. Returns the version now in force."""
        versions = [m.version for m in migrations]
        if versions != list(range(1, len(migrations) + 1)):
            raise DatabaseError(f"{component}: migrations must be numbered 1..n, got {versions}")
        row = await self.fetchone(
            "SELECT version FROM schema_version WHERE component = ?", (component,)
        )
        current = int(row["version"]) if row else 0
        if current > len(migrations):
            raise DatabaseError(
                f"{self.path}: {component} schema is version {current}, newer than this code "
                f"knows ({len(migrations)}); upgrade Matrix Clubs or restore a backup"
            )
        for m in migrations[current:]:
            async with self.transaction():
                for statement in _statements(m.sql):
                    await self._conn.execute(statement)
                await self._conn.execute(
                    "INSERT INTO schema_version (component, version) VALUES (?, ?) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (component, m.version),
                )
            log.info("%s: migrated to version %d (%s)", component, m.version, m.description)
        return len(migrations)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception. Statements of this task
        inside the block belong to the transaction; other tasks wait for it to end."""
        me = asyncio.current_task()
        if me is not None and me is self._holder:
            raise DatabaseError("nested transactions are not supported")
        async with self._lock:
            self._holder = me
            try:
                await self._run(self._write_check, "BEGIN IMMEDIATE", ())
                try:
                    yield
                except BaseException:
                    await self._conn.execute("ROLLBACK")
                    raise
                await self._run(None, "COMMIT", ())
            finally:
                self._holder = None

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """The lock, unless this task already holds it through a transaction."""
        if self._holder is not None and self._holder is asyncio.current_task():
            yield
            return
        async with self._lock:
            yield

    def _write_check(self) -> None:
        if self.failing_writes:
            raise sqlite3.OperationalError("database or disk is full (injected)")
        store_fault()

    async def _run(self, check: object, sql: str, params: tuple[Any, ...]) -> aiosqlite.Cursor:
        try:
            if callable(check):
                check()
            return await self._conn.execute(sql, params)
        except sqlite3.Error as e:
            if _storage_fault(e):
                raise StoreUnavailable(f"{self.path}: {e}") from None
            raise

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one write statement; returns the number of rows changed."""
        async with self._turn():
            cursor = await self._run(self._write_check, sql, tuple(params))
            return cursor.rowcount

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        async with self._turn():
            cursor = await self._run(None, sql, tuple(params))
            try:
                return await cursor.fetchone()
            finally:
                await cursor.close()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._turn():
            cursor = await self._run(None, sql, tuple(params))
            try:
                return list(await cursor.fetchall())
            finally:
                await cursor.close()


def _statements(sql: str) -> list[str]:
    """Split a migration script on semicolons (migrations are ours: no semicolons in literals)."""
    return [s.strip() for s in sql.split(";") if s.strip()]
