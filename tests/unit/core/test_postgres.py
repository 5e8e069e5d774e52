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
        "CLUBS_DB=postgres would start an empty server beside it."
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
