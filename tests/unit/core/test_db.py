"""Migrations are numbered, transactional, per component, and never run backwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from clubs.core.db import Database, DatabaseError, Migration

V1 = Migration(1, "notes", "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
V2 = Migration(2, "tags", "ALTER TABLE notes ADD COLUMN tag TEXT; CREATE INDEX i ON notes (tag)")


async def test_migrates_once_and_keeps_data(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "s.db")
    assert await db.migrate("notes", [V1]) == 1
    await db.execute("INSERT INTO notes (text) VALUES (?)", ("a",))
    assert await db.migrate("notes", [V1, V2]) == 2
    assert await db.migrate("notes", [V1, V2]) == 2
    row = await db.fetchone("SELECT text, tag FROM notes")
    assert row is not None
    assert (row["text"], row["tag"]) == ("a", None)
    await db.close()


async def test_failed_migration_changes_nothing(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "s.db")
    await db.migrate("notes", [V1])
    broken = Migration(2, "broken", "ALTER TABLE notes ADD COLUMN x TEXT; SELECT * FROM nowhere")
    with pytest.raises(Exception, match="nowhere"):
        await db.migrate("notes", [V1, broken])
    columns = [r["name"] for r in await db.fetchall("PRAGMA table_info(notes)")]
    assert columns == ["id", "text"]
    row = await db.fetchone("SELECT version FROM schema_version WHERE component = 'notes'")
    assert row is not None
    assert row["version"] == 1
    await db.close()


async def test_database_newer_than_code_is_refused(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "s.db")
    await db.migrate("notes", [V1, V2])
    with pytest.raises(DatabaseError, match="notes schema is version 2, newer than this code"):
        await db.migrate("notes", [V1])
    await db.close()


async def test_components_are_versioned_separately(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "s.db")
    await db.migrate("notes", [V1])
    other = Migration(1, "other", "CREATE TABLE other (k TEXT PRIMARY KEY)")
    assert await db.migrate("other", [other]) == 1
    await db.close()


async def test_file_is_private(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "d" / "s.db")
    assert (tmp_path / "d" / "s.db").stat().st_mode & 0o077 == 0
    await db.close()
