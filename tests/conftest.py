from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness import SynapseHarness, postgres_cluster, synapse_on


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
