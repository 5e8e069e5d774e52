"""The bots' small HTTP endpoint: `/health`, `/metrics` (Prometheus text: commands, latency,
sync and job lag, failures; see clubs/bots/botmetrics.py) and whatever routes the hosted bots
serve (the scheduling bot's calendar feeds). Bound to loopback by default: a reverse proxy in
front of it decides what the outside reaches (never `/metrics`: monitoring scrapes it inside).

Nothing a request carries is logged: the access log is off (a feed's URL is its secret), and a
handler's failure is logged by route name only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from aiohttp import web

from clubs.bots.runtime import BotRuntime
from clubs.core.metrics import CONTENT_TYPE, REGISTRY

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 4096
"""Nothing here takes a body: anything larger is refused before a handler runs."""


def make_app(runtimes: Sequence[BotRuntime]) -> web.Application:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException:
            raise
        except Exception as e:  # a bug in a route: the client gets 500, the log no URL
            name = request.match_info.route.name or "route"
            log.warning("bots http: %s failed (%s)", name, type(e).__name__)
            raise web.HTTPInternalServerError() from None
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)

    async def health(_: web.Request) -> web.Response:
        bots = {r.bot.name: r.ready.is_set() for r in runtimes}
        return web.json_response({"ok": all(bots.values()), "bots": bots})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=REGISTRY.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/health", health, name="health")
    app.router.add_get("/metrics", metrics, name="metrics")
    for runtime in runtimes:
        app.router.add_routes(runtime.bot.http_routes())
    return app


@asynccontextmanager
async def serving(runtimes: Sequence[BotRuntime], host: str, port: int) -> AsyncIterator[int]:
    """Serve until the block ends; yields the bound port (`port` 0: any free one)."""
    runner = web.AppRunner(make_app(runtimes), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    sockets = getattr(site._server, "sockets", None)  # aiohttp has no public accessor for it
    if sockets:
        bound = int(sockets[0].getsockname()[1])
    log.info("bots http endpoint on %s:%d", host, bound)
    try:
        yield bound
    finally:
        await runner.cleanup()
