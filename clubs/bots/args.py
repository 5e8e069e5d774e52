"""Typed command arguments: each parameter turns one word (or the rest of the line) into a value.

A converter never echoes the input back and never raises anything but `ArgError`; the parser
turns that into a `UsageError` carrying the command's usage string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import ClassVar, Final
from urllib.parse import unquote

from clubs.core.ids import RoomAlias, RoomId, UserId, as_room_alias, as_room_id, as_user_id


class Problem(StrEnum):
    """Why an argument list was refused; templates word each one in ru and en."""

    MISSING = "missing"
    INVALID = "invalid"
    OUT_OF_RANGE = "out_of_range"
    TOO_LONG = "too_long"
    TOO_MANY = "too_many"


class ArgError(Exception):
    def __init__(self, problem: Problem, low: str | None = None, high: str | None = None) -> None:
        super().__init__(problem.value)
        self.problem = problem
        self.low = low
        self.high = high


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()
"""The default of a parameter that must be given."""

_DURATION_UNITS = {
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "с": 1,
    "м": 60,
    "ч": 3600,
    "д": 86400,
    "н": 604800,
}
_MAX_DURATION_S = 100 * 366 * 86400


@dataclass(frozen=True)
class Param:
    """One parameter: its keyword `name`, its `default` (REQUIRED if none), its `metavar`."""

    name: str
    _: KW_ONLY
    default: object = REQUIRED
    metavar: str | None = None
    rest: ClassVar[bool] = False
    """Whether it takes the rest of the line (only the last parameter may)."""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def label(self) -> str:
        return self.metavar or self.name

    def placeholder(self) -> str:
        label = f"{self.label}..." if self.rest else self.label
        return f"<{label}>" if self.required else f"[{label}]"

    def convert(self, token: str) -> object:
        raise NotImplementedError


def parse_int(token: str) -> int | None:
    """ASCII digits with an optional minus sign, at most 18 digits; not `int()`'s leniency."""
    digits = token.removeprefix("-")
    if not (1 <= len(digits) <= 18 and digits.isascii() and digits.isdigit()):
        return None
    return int(token)


def parse_duration(token: str) -> timedelta | None:
    """`10m`, `2h`, `1d`, `1h30m`, `1w`; Russian units too (`10м`, `2ч`, `1д`, `1н`, `30с`)."""
    if not 2 <= len(token) <= 32:
        return None
    total, digits = 0, ""
    for ch in token.lower():
        if ch.isascii() and ch.isdigit():
            digits += ch
        elif ch in _DURATION_UNITS and digits:
            total += int(digits) * _DURATION_UNITS[ch]
            digits = ""
        else:
            return None
    if digits or total > _MAX_DURATION_S:
        return None
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """The shortest `1d2h30m` spelling of `value` (whole seconds)."""
    seconds = int(value.total_seconds())
    out = []
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out) or "0s"


@dataclass(frozen=True, kw_only=True)
class Int(Param):
    minimum: int | None = None
    maximum: int | None = None

    def convert(self, token: str) -> int:
        value = parse_int(token)
        if value is None:
            raise ArgError(Problem.INVALID)
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise ArgError(Problem.OUT_OF_RANGE, _str(self.minimum), _str(self.maximum))
        return value


@dataclass(frozen=True, kw_only=True)
class Duration(Param):
    minimum: timedelta | None = None
    maximum: timedelta | None = None

    def convert(self, token: str) -> timedelta:
        value = parse_duration(token)
        if value is None:
            raise ArgError(Problem.INVALID)
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            low = format_duration(self.minimum) if self.minimum is not None else None
            high = format_duration(self.maximum) if self.maximum is not None else None
            raise ArgError(Problem.OUT_OF_RANGE, low, high)
        return value


@dataclass(frozen=True, kw_only=True)
class User(Param):
    """`@localpart:server`, or a matrix.to link to one (what "copy link" in Element gives)."""

    def convert(self, token: str) -> UserId:
        if token.startswith("https://matrix.to/#/"):
            token = unquote(token.removeprefix("https://matrix.to/#/"))
        value = as_user_id(token)
        if value is None:
            raise ArgError(Problem.INVALID)
        return value


@dataclass(frozen=True, kw_only=True)
class Room(Param):
    """A room alias `#name:server` or a room id `!opaque`."""

    def convert(self, token: str) -> RoomId | RoomAlias:
        value = as_room_alias(token) or as_room_id(token)
        if value is None:
            raise ArgError(Problem.INVALID)
        return value


@dataclass(frozen=True, kw_only=True)
class Choice(Param):
    """One of `options` (case-insensitive); `synonyms` map other words (e.g. Russian) to one."""

    options: tuple[str, ...]
    synonyms: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        words = (*self.options, *self.synonyms)
        if not self.options or any(w != w.lower() or not w or w.split() != [w] for w in words):
            raise ValueError(f"{self.name}: options and synonyms must be lowercase single words")
        if not set(self.synonyms.values()) <= set(self.options):
            raise ValueError(f"{self.name}: synonyms must map to one of the options")

    @property
    def label(self) -> str:
        return self.metavar or "|".join(self.options)

    def convert(self, token: str) -> str:
        word = token.lower()
        if word in self.options:
            return word
        if word in self.synonyms:
            return self.synonyms[word]
        raise ArgError(Problem.INVALID)


@dataclass(frozen=True, kw_only=True)
class Word(Param):
    """One word, as typed."""

    max_length: int = 64

    def convert(self, token: str) -> str:
        if len(token) > self.max_length:
            raise ArgError(Problem.TOO_LONG, None, str(self.max_length))
        return token


@dataclass(frozen=True, kw_only=True)
class FreeText(Param):
    """The rest of the line, as typed (inner spaces kept)."""

    rest: ClassVar[bool] = True
    max_length: int = 500

    def convert(self, token: str) -> str:
        if len(token) > self.max_length:
            raise ArgError(Problem.TOO_LONG, None, str(self.max_length))
        return token


def _str(value: int | None) -> str | None:
    return None if value is None else str(value)
