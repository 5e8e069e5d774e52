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
when it stops. A bot gets what it needs in its constructor (store, clock, settings): there are
no globals. Handlers must be idempotent by event id: the runtime delivers each event at most once
per successful commit, but after a crash the uncommitted batch is delivered again.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

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


def collect_event_handlers(bot: object) -> list[EventHandlerSpec]:
    specs = []
    for _, member in inspect.getmembers(bot, inspect.ismethod):
        types = getattr(member, _MARK, None)
        if types is not None:
            specs.append(EventHandlerSpec(types, member))
    return specs


class Bot:
    """Base class of the four bots. Subclasses set `name` and declare commands/handlers."""

    name: ClassVar[str] = "bot"

    async def start(self, ctx: Any) -> None:
        """Called once the bot's client is synced and before events are dispatched.
        `ctx` is the bot's `BotContext` (sending, rooms, clock); background tasks started here
        belong to the runtime's task group through `ctx.spawn`."""

    async def stop(self) -> None:
        """Called when the runtime stops; background tasks are cancelled by the runtime."""


EventContextT = TypeVar("EventContextT", bound="EventContext")
