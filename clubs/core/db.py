"""SQLite storage with numbered migrations (one file per service).

Each component (the runtime, each bot, the bridge…) registers its own ordered migrations under a
name; one `schema_version` table holds every component's version, so several components can
share a file. Each migration runs in one transaction together with its version bump; a database
newer than the code is refused. Parametrised SQL only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from clubs.core.errors import ClubsError

log = logging.getLogger(__name__)


class DatabaseError(ClubsError):
    """The database cannot be used by this version of the code."""


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
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception."""
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            await self._conn.execute("ROLLBACK")
            raise
        await self._conn.execute("COMMIT")

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one statement; returns the number of rows changed."""
        cursor = await self._conn.execute(sql, tuple(params))
        return cursor.rowcount

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        async with self._conn.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchone()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._conn.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())


def _statements(sql: str) -> list[str]:
    """Split a migration script on semicolons (migrations are ours: no semicolons in literals)."""
    return [s.strip() for s in sql.split(";") if s.strip()]
