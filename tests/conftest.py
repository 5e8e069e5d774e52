from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.harness import (
    PG_OS_USER,
    SynapseHarness,
    passable_dir,
    postgres_cluster,
    synapse_on,
)


@pytest.fixture(scope="session")
async def synapse(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SynapseHarness]:
    """A real Synapse for the whole session, on a free loopback port: on SQLite, or on a
    PostgreSQL cluster of its own when CLUBS_DB=postgres."""
    data_dir: Path = tmp_path_factory.mktemp("synapse")
    with contextlib.ExitStack() as stack:
        pg = (
            stack.enter_context(postgres_cluster())
            if os.environ.get("CLUBS_DB") == "postgres"
            else None
        )
        async with synapse_on(data_dir, pg) as server:
            yield server


@pytest.fixture
def server_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where a test that starts its own `clubs up` or `clubs homeserver run` puts its var
    directory: `tmp_path`, except with CLUBS_DB=postgres, where the city's own cluster must be
    reachable by its unprivileged user (`nobody` when we are root, as in the harness), so the
    directory is a `passable_dir` in /tmp instead."""
    if os.environ.get("CLUBS_DB") != "postgres":
        yield tmp_path
        return
    if PG_OS_USER is not None:
        monkeypatch.setenv("CLUBS_PG_OS_USER", PG_OS_USER)
    with passable_dir("clubs-var-") as base:
        yield base
