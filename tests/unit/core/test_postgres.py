"""Choosing Synapse's database and the pieces of the embedded PostgreSQL that need no server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from clubs.core.homeserver import Settings, render_config
from clubs.core.postgres import (
    EmbeddedPostgres,
    OsUser,
    PostgresError,
    choose_database,
    pgpass_line,
    unreachable_ancestor,
    write_record,
)


def test_sqlite_is_the_default(tmp_path: Path) -> None:
    assert choose_database(tmp_path, {}).postgres is None


def test_postgres_is_our_own_cluster_under_var(tmp_path: Path) -> None:
    db = choose_database(tmp_path, {"CLUBS_DB": "postgres"})
    assert db.embedded is not None
    assert db.postgres == {
        "host": str(tmp_path / "postgres" / "run"),
        "port": "5432",
        "user": "synapse",
        "dbname": "synapse",
        "passfile": str(tmp_path / "secrets" / "postgres" / "postgres_synapse.pgpass"),
    }


def test_an_external_server_from_the_environment(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    db = choose_database(tmp_path, {"CLUBS_PG_HOST": "db", "CLUBS_PG_PASSWORD_FILE": str(pw)})
    assert db.embedded is None
    assert db.postgres == {
        "host": "db",
        "user": "synapse",
        "dbname": "synapse",
        "password": "s3cret",
        "password_file": str(pw),
    }
    config = yaml.safe_load(render_config(Settings(tmp_path, postgres=db.postgres), 8008))
    assert config["database"] == {
        "name": "psycopg2",
        "args": {
            "user": "synapse",
            "dbname": "synapse",
            "host": "db",
            "password": "s3cret",
            "cp_min": 5,
            "cp_max": 10,
        },
    }


def test_a_missing_password_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PostgresError) as err:
        choose_database(tmp_path, {"CLUBS_PG_HOST": "db", "CLUBS_PG_PASSWORD_FILE": "/nope/pw"})
    assert str(err.value) == (
        "/nope/pw: cannot read the database password named by $CLUBS_PG_PASSWORD_FILE "
        "(No such file or directory)"
    )


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PostgresError) as err:
        choose_database(tmp_path, {"CLUBS_DB": "mysql"})
    assert str(err.value) == "$CLUBS_DB: expected sqlite or postgres; got 'mysql'"


def test_switching_a_city_with_data_is_refused_both_ways(tmp_path: Path) -> None:
    (tmp_path / "synapse").mkdir()
    (tmp_path / "synapse" / "homeserver.db").write_bytes(b"SQLite format 3\x00")
    with pytest.raises(PostgresError) as err:
        choose_database(tmp_path, {"CLUBS_DB": "postgres"})
    assert str(err.value).startswith(
        f"{tmp_path}/synapse/homeserver.db: this homeserver's database is SQLite; "
        "CLUBS_DB=postgres would start an empty server beside it. Move the city with "
        "`clubs db migrate-to-postgres`"
    )
    other = tmp_path / "other"
    (other / "postgres" / "data").mkdir(parents=True)
    (other / "postgres" / "data" / "PG_VERSION").write_text("18\n")
    with pytest.raises(PostgresError) as err:
        choose_database(other, {})
    assert str(err.value) == (
        f"{other}/postgres: this homeserver's database is PostgreSQL; set CLUBS_DB=postgres "
        "(or use another var directory for SQLite)"
    )


def test_pgpass_escapes_separators() -> None:
    assert pgpass_line("synapse", r"a:b\c") == "*:*:*:synapse:a\\:b\\\\c\n"


def test_names_that_would_need_quoting_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PostgresError) as err:
        EmbeddedPostgres(tmp_path, tmp_path, dbname='x"; DROP')
    assert str(err.value) == "PostgreSQL database name 'x\"; DROP': use a-z, 0-9 and _"


def test_the_directory_a_server_user_cannot_pass_is_found(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs another uid to judge by: only root chooses one")
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    locked.chmod(0o700)
    nobody = OsUser("nobody", 65534, 65534)
    found = unreachable_ancestor(locked / "inner" / "pg", nobody)
    assert found is not None
    assert found in (locked, *locked.parents)  # pytest's own tmp tree is 0700 too
    assert unreachable_ancestor(Path("/tmp/x/y"), nobody) is None
    assert unreachable_ancestor(locked / "pg", OsUser("me")) is None


def test_the_record_keeps_a_migrating_city_on_sqlite(tmp_path: Path) -> None:
    """While `clubs db migrate-to-postgres` builds var/postgres, the city starts on SQLite."""
    (tmp_path / "postgres" / "data").mkdir(parents=True)
    (tmp_path / "postgres" / "data" / "PG_VERSION").write_text("18\n")
    write_record(tmp_path, {"database": "sqlite"})
    assert choose_database(tmp_path, {}).postgres is None
    assert choose_database(tmp_path, {"CLUBS_PG_HOST": "db"}).postgres is None


def test_after_the_switch_the_record_chooses_postgres_without_the_environment(
    tmp_path: Path,
) -> None:
    (tmp_path / "synapse").mkdir()
    (tmp_path / "synapse" / "homeserver.db").write_bytes(b"SQLite format 3\x00")
    write_record(tmp_path, {"database": "postgres"})
    db = choose_database(tmp_path, {})
    assert db.embedded is not None
    assert db.postgres is not None
    assert db.postgres["host"] == str(tmp_path / "postgres" / "run")
    with pytest.raises(PostgresError) as err:
        choose_database(tmp_path, {"CLUBS_DB": "sqlite"})
    assert str(err.value) == (
        f"{tmp_path}/database.json: this homeserver's database is PostgreSQL; $CLUBS_DB=sqlite "
        "contradicts it: unset $CLUBS_DB"
    )


def test_a_recorded_external_server_needs_no_environment(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    write_record(
        tmp_path,
        {"database": "postgres", "host": "db", "dbname": "city", "password_file": str(pw)},
    )
    assert choose_database(tmp_path, {}).postgres == {
        "host": "db",
        "user": "synapse",
        "dbname": "city",
        "password": "s3cret",
        "password_file": str(pw),
    }
    pw.unlink()
    with pytest.raises(PostgresError) as err:
        choose_database(tmp_path, {})
    assert str(err.value) == (
        f"{pw}: cannot read the database password named by {tmp_path}/database.json: "
        "password_file (No such file or directory)"
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{", "not JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
              "(char 1))"),
        ('{"database": "mysql"}', "database: expected sqlite or postgres"),
        ('{"database": "postgres", "hots": "db"}',
         "hots: unknown key (expected one of database, host, port, user, dbname, password_file)"),
        ('{"database": "postgres", "port": 5432}', "port: expected a string; got 5432"),
    ],
)  # fmt: skip
def test_a_damaged_record_is_a_located_error(tmp_path: Path, text: str, error: str) -> None:
    (tmp_path / "database.json").write_text(text)
    with pytest.raises(PostgresError) as err:
        choose_database(tmp_path, {})
    assert str(err.value) == f"{tmp_path}/database.json: {error}"
