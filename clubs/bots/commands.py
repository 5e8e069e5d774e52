"""The one command parser for every bot: `!name arguments`, one command per event at most.

An event's content is a command only if all of these hold; anything else is chat, ignored:

- `msgtype` is `m.text` (bots answer in `m.notice`, so bots never command each other);
- it is not an edit (`m.relates_to.rel_type` `m.replace`, or `m.new_content`): edits never run;
- `body` is a string of at most `MAX_COMMAND_CHARS` characters on exactly one line: no `\\n`,
  `\\r`, U+2028, U+2029, NUL or other control character (tab is a blank), no lone surrogate. So a
  second command on another line never runs, and neither does a reply fallback (`> ...` lines);
- it starts with ASCII `!` directly followed by the name; full-width `！` is no prefix;
- the name (case-insensitive) is one of the bot's commands or aliases (`find_command`).

The rest of the line is split on blanks into the command's typed parameters (`args.py`); the
last may take the rest of the line. Every step is linear in the input, with no backtracking.

Commands are declared by marking methods with `@command(...)`, on the bot's class or on classes
whose instances the bot registered (`Bot.register_handler_class`); the runtime collects them from
a bot instance at start with `collect_commands`. Nothing is registered at import.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

from clubs.bots.args import ArgError, Param, Problem
from clubs.bots.base import handler_objects
from clubs.core.errors import ClubsError

PREFIX: Final = "!"
MAX_COMMAND_CHARS: Final = 4096
MAX_NAME_CHARS: Final = 32

# Line breaks of str.splitlines, NUL and the other controls except tab, lone surrogates.
_NOT_ONE_LINE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_MARK = "__clubs_command__"

Handler = Callable[..., Awaitable[None]]
F = TypeVar("F", bound=Handler)


class UsageError(ClubsError):
    """Arguments that do not fit the command. Carries the usage string; no stack trace."""

    def __init__(
        self,
        usage: str,
        problem: Problem,
        param: str | None = None,
        low: str | None = None,
        high: str | None = None,
    ) -> None:
        super().__init__(f"usage: {usage}")
        self.usage = usage
        self.problem = problem
        self.param = param
        self.low = low
        self.high = high

    def template_values(self) -> dict[str, str | None]:
        """The values of the `bots/usage` template."""
        return {
            "usage": self.usage,
            "problem": self.problem.value,
            "param": self.param,
            "low": self.low,
            "high": self.high,
        }


@dataclass(frozen=True)
class Invocation:
    """What the sender typed: the command word (lowercased) and the rest of the line."""

    name: str
    args: str


def read_invocation(content: object) -> Invocation | None:
    """The command in an event's `content`, or None if it holds none (see the module doc)."""
    if not isinstance(content, Mapping) or content.get("msgtype") != "m.text":
        return None
    relates = content.get("m.relates_to")
    if "m.new_content" in content or (
        isinstance(relates, Mapping) and relates.get("rel_type") == "m.replace"
    ):
        return None
    body = content.get("body")
    if not isinstance(body, str) or not body.startswith(PREFIX):
        return None
    if len(body) > MAX_COMMAND_CHARS or _NOT_ONE_LINE.search(body):
        return None
    words = body[len(PREFIX) :].split(None, 1)
    if not words or body[len(PREFIX)].isspace():
        return None
    name = words[0].lower()
    if not _is_name(name):
        return None
    return Invocation(name, words[1].strip() if len(words) == 2 else "")


def _is_name(name: str) -> bool:
    return 1 <= len(name) <= MAX_NAME_CHARS and all(c.isalnum() or c in "_-" for c in name)


@dataclass(frozen=True)
class CommandSpec:
    """A command of one bot: names, typed parameters, who may run it, where, and its handler.

    The handler is called as `await handler(ctx, **spec.parse_args(invocation.args))`.
    """

    name: str
    aliases: tuple[str, ...]
    params: tuple[Param, ...]
    min_power: int
    help_key: str
    dm: bool
    handler: Handler

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def usage(self, invoked_as: str | None = None) -> str:
        """`!mute <user> [duration]`, spelled the way the sender called it."""
        name = invoked_as if invoked_as in self.names else self.name
        return " ".join([f"{PREFIX}{name}", *(p.placeholder() for p in self.params)])

    def allows(self, power: int, *, in_dm: bool) -> bool:
        """Whether a sender with `power` may run this here.

        `power` must be the sender's level in the room the command acts on. In a DM that is not
        the DM's own power levels: whoever opens a DM is its admin.
        """
        return power >= self.min_power and (self.dm or not in_dm)

    def parse_args(self, args: str, invoked_as: str | None = None) -> dict[str, object]:
        """The handler's keyword arguments from the rest of the line. Raises UsageError only."""
        count = len(self.params)
        takes_rest = count > 0 and self.params[-1].rest
        words = args.split(None, count - 1) if takes_rest else args.split(None, count)
        if len(words) > count:
            raise UsageError(self.usage(invoked_as), Problem.TOO_MANY)
        values: dict[str, object] = {}
        for i, param in enumerate(self.params):
            if i >= len(words):
                if param.required:
                    raise UsageError(self.usage(invoked_as), Problem.MISSING, param.label)
                values[param.name] = param.default
                continue
            try:
                values[param.name] = param.convert(words[i].strip())
            except ArgError as e:
                raise UsageError(
                    self.usage(invoked_as), e.problem, param.label, e.low, e.high
                ) from None
        return values


def command(
    name: str,
    *,
    help_key: str,
    aliases: tuple[str, ...] = (),
    params: tuple[Param, ...] = (),
    min_power: int = 0,
    dm: bool = False,
) -> Callable[[F], F]:
    """Mark a bot method as the command `!name` (and `!alias`). Only marks; registers nothing.

    `help_key` names the template with its one-line help; `min_power` is the power level needed
    in the room; `dm` allows it in direct messages. A bad declaration raises ValueError at
    import, where the author sees it.
    """
    for word in (name, *aliases):
        if word != word.lower() or not _is_name(word):
            raise ValueError(f"command name {word!r}: lowercase letters, digits, _ and - only")
    if len({name, *aliases}) != 1 + len(aliases):
        raise ValueError(f"command {name!r}: names and aliases must differ")
    _check_params(name, params)
    if not help_key:
        raise ValueError(f"command {name!r}: help_key is required")
    if isinstance(min_power, bool) or not isinstance(min_power, int):
        raise ValueError(f"command {name!r}: min_power must be an int")

    def mark(handler: F) -> F:
        spec = CommandSpec(name, aliases, params, min_power, help_key, dm, handler)
        setattr(handler, _MARK, spec)
        return handler

    return mark


def _check_params(name: str, params: tuple[Param, ...]) -> None:
    seen: set[str] = set()
    optional = False
    for i, param in enumerate(params):
        if not param.name.isidentifier() or param.name.startswith("_") or param.name == "ctx":
            raise ValueError(f"command {name!r}: bad parameter name {param.name!r}")
        if param.name in seen:
            raise ValueError(f"command {name!r}: parameter {param.name!r} declared twice")
        seen.add(param.name)
        if param.rest and i != len(params) - 1:
            raise ValueError(f"command {name!r}: {param.name!r} takes the rest, so comes last")
        if optional and param.required:
            raise ValueError(f"command {name!r}: required {param.name!r} after an optional one")
        optional = optional or not param.required


def collect_commands(bot: object) -> list[CommandSpec]:
    """The commands marked on `bot`'s class and on the classes of the objects it registered
    (`Bot.register_handler_class`), each bound to its object, sorted by name.

    Raises ValueError if two of them share a name or alias.
    """
    specs: list[CommandSpec] = []
    owner: dict[str, str] = {}
    for obj in handler_objects(bot):
        prefix = "" if obj is bot else f"{type(obj).__name__}."
        for attr in dir(type(obj)):
            spec = getattr(inspect.getattr_static(type(obj), attr, None), _MARK, None)
            if not isinstance(spec, CommandSpec):
                continue
            for word in spec.names:
                if word in owner:
                    raise ValueError(
                        f"{type(bot).__name__}: !{word} is declared by {owner[word]} and "
                        f"{prefix}{attr}"
                    )
                owner[word] = prefix + attr
            bound: Any = getattr(obj, attr)
            specs.append(replace(spec, handler=bound))
    return sorted(specs, key=lambda s: s.name)


def find_command(specs: Iterable[CommandSpec], name: str) -> CommandSpec | None:
    """The command called `name` (or with that alias), if the bot has one."""
    return next((s for s in specs if name in s.names), None)


@dataclass(frozen=True)
class HelpEntry:
    """One line of `!help`: how to call it, its other names, and the key of its help text."""

    usage: str
    aliases: tuple[str, ...]
    help_key: str


def help_entries(specs: Iterable[CommandSpec], power: int, *, in_dm: bool) -> list[HelpEntry]:
    """What `!help` lists for a sender with `power`: the commands they may use here."""
    return [
        HelpEntry(s.usage(), tuple(PREFIX + a for a in s.aliases), s.help_key)
        for s in sorted(specs, key=lambda s: s.name)
        if s.allows(power, in_dm=in_dm)
    ]
