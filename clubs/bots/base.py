"""What a bot module is: commands and event handlers on a class, wired by the runtime.

```python
class Scheduler(Bot):
    name = "scheduling"

    @command("session", help_key="scheduling/session.help", aliases=("встреча",), min_power=50)
    async def new_session(self, ctx: CommandContext, when: datetime) -> None:
        await ctx.reply("scheduling/announce", when=when)

    @on_event("m.room.member")
    async def member_changed(self, ctx: EventContext) -> None:
        ...
```

Decorators only mark methods; the runtime collects them when it starts a bot and drops them
when it stops. A bot whose commands or handlers are better kept in classes of their own (one for
commands, one for protections) registers instances of those in its constructor with
`register_handler_class`; their marked methods are collected as if they were the bot's.

A bot gets what it needs in its constructor (store, clock, settings): there are no globals.
Handlers must be idempotent by event id: the runtime delivers each event at most once per
successful commit, but after a crash the uncommitted batch is delivered again.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from aiohttp import web

if TYPE_CHECKING:
    from clubs.bots.context import EventContext

EventHandler = Callable[..., Awaitable[None]]
H = TypeVar("H", bound=EventHandler)

_MARK = "__clubs_event_types__"
ANY_EVENT = "*"


def on_event(*event_types: str) -> Callable[[H], H]:
    """Mark a method `async def handler(self, ctx: EventContext) -> None` for these event types
    (decrypted types; `"*"` for every timeline event). Commands are not delivered here."""

    def mark(handler: H) -> H:
        setattr(handler, _MARK, tuple(event_types) or (ANY_EVENT,))
        return handler

    return mark


@dataclass(frozen=True)
class EventHandlerSpec:
    event_types: tuple[str, ...]
    handler: EventHandler

    def wants(self, event_type: str) -> bool:
        return ANY_EVENT in self.event_types or event_type in self.event_types


_HANDLERS = "_clubs_handler_objects"


def handler_objects(bot: object) -> tuple[object, ...]:
    """Where a bot's commands and event handlers are marked: the bot itself, then every object
    it registered with `Bot.register_handler_class`, in registration order."""
    return (bot, *getattr(bot, _HANDLERS, ()))


def collect_event_handlers(bot: object) -> list[EventHandlerSpec]:
    """The `@on_event` handlers of `bot` and of the objects it registered, bound to them."""
    specs = []
    for owner in handler_objects(bot):
        for _, member in inspect.getmembers(owner, inspect.ismethod):
            types = getattr(member, _MARK, None)
            if types is not None:
                specs.append(EventHandlerSpec(types, member))
    return specs


class Bot:
    """Base class of the four bots. Subclasses set `name` and declare commands/handlers."""

    name: ClassVar[str] = "bot"
    _clubs_handler_objects: tuple[object, ...] = ()

    def register_handler_class(self, handlers: object) -> None:
        """Collect the `@command` and `@on_event` methods marked on `handlers` (an instance of
        another class) too, bound to it. Call it in the constructor: the runtime collects a
        bot's commands and handlers once, before `start`. A command name used twice across the
        bot and its handler objects is refused then, as within one class."""
        if handlers is self or any(h is handlers for h in self._clubs_handler_objects):
            raise ValueError(f"{type(self).__name__}: {type(handlers).__name__} registered twice")
        self._clubs_handler_objects = (*self._clubs_handler_objects, handlers)

    async def start(self, ctx: Any) -> None:
        """Called once the bot's client is synced and before events are dispatched.
        `ctx` is the bot's `BotContext` (sending, rooms, clock); background tasks started here
        belong to the runtime's task group through `ctx.spawn`."""

    async def stop(self) -> None:
        """Called when the runtime stops; background tasks are cancelled by the runtime."""

    def http_routes(self) -> Sequence[web.RouteDef]:
        """What this bot serves on the bots' small HTTP endpoint (`clubs bots run --http-port`),
        e.g. the scheduling bot's calendar feeds. None by default. A route may be called
        before `start` has run: it answers 503 until the bot is ready."""
        return ()


EventContextT = TypeVar("EventContextT", bound="EventContext")
