"""Supervision inside the bots process: one bot's failure never stops the others, and no
background task dies silently.

`asyncio.TaskGroup` cancels every sibling when one child raises, and a bare task's exception
surfaces only when the task is garbage-collected. So each bot's runtime and each restartable
background task runs under `supervise`: an exception is logged (type and where; the traceback
only at DEBUG, through the redaction filter) and the work is started again after a capped,
jittered exponential backoff, reset once it has run stably for a while. Cancellation passes
through untouched: that is how the host stops everything.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
STABLE_AFTER_S = 300.0
"""A run that lasted this long resets the backoff (the next failure is a new story)."""


def backoff_s(
    failures: int, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S
) -> float:
    """The pause before restart number `failures` (1, 2, …): doubling from `first_s`, capped,
    with jitter so that several failing tasks do not retry in step."""
    ceiling = min(max_s, first_s * 2.0 ** min(max(failures, 1) - 1, 16))
    return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto


async def supervise(
    name: str,
    work: Callable[[], Awaitable[None]],
    *,
    restart_on_return: bool = False,
    first_s: float = BACKOFF_FIRST_S,
    max_s: float = BACKOFF_MAX_S,
    stable_after_s: float = STABLE_AFTER_S,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> None:
    """Run `work()` until it returns (or, with `restart_on_return`, forever); restart it with
    backoff whenever it raises. Only cancellation ends it early."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if time.monotonic() - started >= stable_after_s:
                failures = 0
            failures += 1
            delay = backoff_s(failures, first_s, max_s)
            log.error(
                "%s failed (%s); restart %d in %.1fs", name, type(e).__name__, failures, delay
            )
            log.debug("%s: failure detail", name, exc_info=True)
            await sleep(delay)
            continue
        if not restart_on_return:
            return
        log.warning("%s stopped by itself; starting it again", name)
        await sleep(backoff_s(1, first_s, max_s))


def log_unhandled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler: an exception nobody retrieved is logged by type and
    task name (never with its message text, which might quote content)."""
    error = context.get("exception")
    task = context.get("task") or context.get("future")
    where = task.get_name() if isinstance(task, asyncio.Task) else type(task).__name__
    log.error(
        "unhandled %s in %s: %s",
        type(error).__name__ if error is not None else "error",
        where,
        str(context.get("message", ""))[:100],
    )
    if error is not None:
        log.debug("unhandled error detail", exc_info=error)
