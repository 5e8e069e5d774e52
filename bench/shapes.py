"""The homeserver shapes the benchmarks run on, each started fresh in a temporary directory:

- `sqlite`: the embedded Synapse as `make up` runs it (one process, SQLite);
- `postgres`: the same Synapse on a throw-away PostgreSQL cluster from the wheel
  (`CLUBS_DB=postgres make up`), run by an unprivileged user when we are root;
- `workers`: main, event persister, client worker and federation sender on that PostgreSQL,
  with Valkey, behind the routing front (`CLUBS_WORKERS=1 make up`, docs/workers.md).

    async with homeserver("workers", Path(tmp) / "synapse") as hs:
        ...  # hs.url (the front's for workers), hs.registration_shared_secret()
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clubs.core.homeserver import Homeserver, Settings
from tests.harness import SynapseHarness, bootstrap_admin, postgres_cluster

SHAPES = ("sqlite", "postgres", "workers")


@contextlib.asynccontextmanager
async def homeserver(shape: str, data_dir: Path) -> AsyncIterator[Homeserver]:
    """A started homeserver of `shape` with its data in `data_dir`; stopped on exit."""
    if shape not in SHAPES:
        raise SystemExit(f"--shape: {shape!r} is not one of {', '.join(SHAPES)}")
    with contextlib.ExitStack() as stack:
        postgres = None
        if shape in ("postgres", "workers"):
            postgres = stack.enter_context(postgres_cluster()).synapse_args()
        settings = Settings(data_dir=data_dir, server_name="bench.local", port=0, postgres=postgres)
        if shape == "workers":
            from clubs.core.workers import load_shape
            from clubs.workersrun import worker_stack

            async with worker_stack(settings, load_shape()) as running:
                yield running.main
            return
        hs = Homeserver(settings)
        hs.start()
        try:
            yield hs
        finally:
            hs.stop()


@contextlib.asynccontextmanager
async def synapse_harness(shape: str, data_dir: Path) -> AsyncIterator[SynapseHarness]:
    """`homeserver(shape, data_dir)` with its admin account, as the test harness has it."""
    async with homeserver(shape, data_dir) as hs:
        synapse = SynapseHarness(hs, await bootstrap_admin(hs))
        try:
            yield synapse
        finally:
            await synapse.admin.http.close()
            await synapse.close()
