"""Registration tokens issued to people: only a sha256 of each token is kept, never the token.

Synapse does not record which account used a token, so the store keeps (network, person key,
hash, expiry) to answer "has this person been sent a token, and did they use it?" by hashing
the server's token list. One SQLite file in the var directory, with numbered migrations.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from clubs.core.errors import ClubsError

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        network TEXT NOT NULL,
        person TEXT NOT NULL,
        token_sha256 TEXT NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        expiry_ms INTEGER,
        uses_allowed INTEGER,
        revoked_ms INTEGER
    );
    CREATE INDEX tokens_by_person ON tokens (network, person);
    """,
)


class TokenStoreError(ClubsError):
    """The token database cannot be used."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    id: int
    network: str
    person: str
    token_sha256: str
    created_ms: int
    expiry_ms: int | None
    uses_allowed: int | None
    revoked_ms: int | None

    @property
    def revoked(self) -> bool:
        return self.revoked_ms is not None

    def expired(self, now_ms: int | None = None) -> bool:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return self.expiry_ms is not None and self.expiry_ms <= now_ms


class TokenStore:
    def __init__(self, file: Path) -> None:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.file = file
        self._db = sqlite3.connect(file, isolation_level=None)
        file.chmod(0o600)
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise TokenStoreError(
                f"{self.file}: database version {version} is newer than this code "
                f"({len(MIGRATIONS)}); upgrade Matrix Clubs"
            )
        for number in range(version, len(MIGRATIONS)):
            self._db.execute("BEGIN")
            try:
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number + 1}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def add(
        self,
        network: str,
        person: str,
        token: str,
        *,
        expiry_ms: int | None,
        uses_allowed: int | None,
    ) -> TokenRecord:
        now = int(time.time() * 1000)
        cur = self._db.execute(
            "INSERT INTO tokens (network, person, token_sha256, created_ms, expiry_ms,"
            " uses_allowed) VALUES (?, ?, ?, ?, ?, ?)",
            (network, person, token_hash(token), now, expiry_ms, uses_allowed),
        )
        return TokenRecord(
            int(cur.lastrowid or 0),
            network,
            person,
            token_hash(token),
            now,
            expiry_ms,
            uses_allowed,
            None,
        )

    def list(self, network: str, person: str | None = None) -> list[TokenRecord]:
        sql = (
            "SELECT id, network, person, token_sha256, created_ms, expiry_ms, uses_allowed,"
            " revoked_ms FROM tokens WHERE network = ?"
        )
        args: tuple[str, ...] = (network,)
        if person is not None:
            sql += " AND person = ?"
            args = (network, person)
        rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [TokenRecord(*row) for row in rows]

    def get(self, record_id: int) -> TokenRecord | None:
        row = self._db.execute(
            "SELECT id, network, person, token_sha256, created_ms, expiry_ms, uses_allowed,"
            " revoked_ms FROM tokens WHERE id = ?",
            (record_id,),
        ).fetchone()
        return TokenRecord(*row) if row else None

    def mark_revoked(self, record_id: int) -> None:
        self._db.execute(
            "UPDATE tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
            (int(time.time() * 1000), record_id),
        )
