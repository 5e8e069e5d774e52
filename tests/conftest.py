from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clubs.core.homeserver import Homeserver, Settings
from tests.harness import SynapseHarness, bootstrap_admin


@pytest.fixture(scope="session")
async def synapse(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SynapseHarness]:
    """A real Synapse for the whole session, on a free loopback port."""
    data_dir: Path = tmp_path_factory.mktemp("synapse")
    hs = Homeserver(Settings(data_dir=data_dir, server_name="test.local", port=0))
    hs.start()
    try:
        server = SynapseHarness(hs, await bootstrap_admin(hs))
        yield server
        await server.admin.http.close()
        await server.close()
    finally:
        hs.stop()
