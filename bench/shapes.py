"""The homeserver shapes the benchmarks run on, each started fresh in a temporary directory:

- `sqlite`: the embedded Synapse as `make up` runs it (one process, SQLite);
- `postgres`: the same Synapse on a throw-away PostgreSQL cluster from the wheel
  (`CLUBS_DB=postgres make up`), run by an unprivileged user when we are root.

    with homeserver("postgres", Path(tmp) / "synapse") as hs:
        ...  # hs.url, hs.registration_shared_secret()
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clubs.core.homeserver import Homeserver, Settings
from tests.harness import postgres_cluster

SHAPES = ("sqlite", "postgres")


@contextlib.contextmanager
def homeserver(shape: str, data_dir: Path) -> Iterator[Homeserver]:
    """A started homeserver of `shape` with its data in `data_dir`; stopped on exit."""
    if shape not in SHAPES:
        raise SystemExit(f"--shape: {shape!r} is not one of {', '.join(SHAPES)}")
    with contextlib.ExitStack() as stack:
        postgres = None
        if shape == "postgres":
            postgres = stack.enter_context(postgres_cluster()).synapse_args()
        hs = Homeserver(
            Settings(data_dir=data_dir, server_name="bench.local", port=0, postgres=postgres)
        )
        hs.start()
        try:
            yield hs
        finally:
            hs.stop()
