"""Synapse with workers, running: Redis, main, the workers and the front, supervised.

`worker_stack(settings)` is what `clubs homeserver run` does when `CLUBS_WORKERS=1` (and what the
test harness starts): it checks the worker file and the database first, writes every process's
files (clubs/core/workers.py), then starts Redis, main and each worker in that order under
`clubs.supervisor` — each waited for before the next, a process that dies before it is ready
stops everything — and finally the front (clubs/core/front.py) on the homeserver's port. A
process that dies later is restarted with backoff; the others keep running and reconnect (Synapse
re-subscribes to Redis and re-asks replication by itself). Leaving the block stops the front,
then the workers, main and Redis, the last started first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from clubs.core.errors import HomeserverError
from clubs.core.front import Front
from clubs.core.homeserver import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Settings,
    check_port_free,
)
from clubs.core.workers import (
    LOOPBACK,
    MAIN,
    Layout,
    MainProcess,
    Ports,
    Shape,
    launches,
    quiet_port,
)
from clubs.supervisor import ChildSpec, Supervisor

log = logging.getLogger(__name__)


@dataclass
class Stack:
    main: MainProcess
    supervisor: Supervisor
    front: Front

    @property
    def url(self) -> str:
        return self.main.url

    def pid(self, name: str) -> int | None:
        """The running process `name` (redis, main or a worker's name), if it runs."""
        return self.supervisor.pid(name)


def log_files(layout: Layout, name: str) -> str:
    own = {
        "redis": layout.redis_dir / "valkey.log",
        MAIN: layout.data_dir / "homeserver.log",
    }.get(name, layout.data_dir / f"{name}.log")
    return f"{own} and {layout.console_file}"


@contextlib.asynccontextmanager
async def worker_stack(settings: Settings, shape: Shape) -> AsyncIterator[Stack]:
    """Run the stack for the duration of the block. HomeserverError (nothing left running) when
    the settings are wrong or a process does not start."""
    if settings.postgres is None:
        raise HomeserverError(
            "Synapse workers need PostgreSQL: set CLUBS_DB=postgres (or leave it unset)"
        )
    front_port = settings.port or quiet_port()  # bound last, seconds from now
    check_port_free(settings.bind_host, front_port)
    main = MainProcess(settings, front_port, shape, Ports.free(shape))
    layout = main.layout
    layout.write(main)
    from clubs.core.postgres import check_database

    check_database(settings.postgres, config=main.config_file)
    with _append(layout.console_file) as console:
        async with Supervisor(layout.run_dir, stdout=console) as supervisor:
            for launch in launches(main):
                supervisor.start(
                    ChildSpec(
                        launch.name,
                        launch.argv,
                        ready=launch.ready,
                        essential=launch.essential,
                        must_start=True,
                        stop_timeout_s=STOP_TIMEOUT_S,
                    )
                )
                try:
                    ready = await asyncio.wait_for(
                        supervisor.wait_ready(launch.name), START_TIMEOUT_S
                    )
                except TimeoutError:
                    ready = False
                if not ready:
                    raise HomeserverError(
                        f"Synapse's {launch.name} process did not start; see "
                        f"{log_files(layout, launch.name)}"
                    )
            main.pid_file.write_text(f"{supervisor.pid(MAIN)}\n")
            client = shape.client
            upstreams = {MAIN: main.internal_url}
            if client is not None:
                upstreams["client"] = f"http://{LOOPBACK}:{main.ports.workers[client.name]}"
            front = Front(
                main.front_host, front_port, upstreams, behind_proxy=settings.behind_proxy
            )
            try:
                await front.start()
                log.info(
                    "Synapse with %d worker(s) is ready behind %s", len(shape.workers), main.url
                )
                yield Stack(main, supervisor, front)
            finally:
                await front.stop()
                main.pid_file.unlink(missing_ok=True)


@contextlib.contextmanager
def _append(path: Path) -> Iterator[int]:
    """The processes' console output (start-up errors before their log is set up)."""
    with path.open("ab") as f:
        yield f.fileno()


async def run_workers(settings: Settings, shape: Shape) -> int:
    """`clubs homeserver run` with workers: until cancelled, or until main or Redis is given up
    (then HomeserverError, everything stopped)."""
    async with worker_stack(settings, shape) as stack:
        print(
            f"Synapse is running on {stack.url} with {len(shape.workers)} worker(s) "
            "(Ctrl-C stops it)",
            flush=True,
        )
        await stack.supervisor.failed.wait()
    raise HomeserverError(
        f"Synapse's main process or Redis keeps dying; everything is stopped (see "
        f"{settings.data_dir / 'homeserver.log'})"
    )
