"""Located YAML: parse a config file safely, then read it with typed getters that record problems.

Every config loader of the project uses this module the same way:

    root = read_yaml(path)                  # ConfigError at once for syntax, size, aliases, tags
    fields = root.mapping(required=("version",), optional=("name",))
    version = fields["version"].integer(low=1, high=1)
    root.report.raise_for_errors()          # ConfigError with *every* problem found by the walk

Parsing is `yaml.compose` with a SafeLoader subclass: nodes keep their marks and nothing is ever
constructed, so no tag can run code. The file size, the nesting depth, the number of aliases and
the size of the tree once aliases are expanded are capped (billion laughs fail fast, in little
memory). Getters accept only what a careful reader would expect: YAML 1.1 surprises (`no` read as
false, `12:30` as 750, `0755` as 493) are reported where a string or an integer is expected.

A problem renders as `config/network.yaml:42:7: clubs[3].rooms[0].join_rule: expected one of
invite, restricted; got "public"` (line and column 1-based; a whole-file problem has no line).
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from yaml.constructor import SafeConstructor

from clubs.core.errors import ClubsError

Severity = Literal["error", "warning"]
Check = Callable[[str], str | None]
"""Checks a string value: returns what is wrong with it (a whole message), or None."""

_T = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = _T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"
SEQ, MAP, TIMESTAMP, MERGE = _T + "seq", _T + "map", _T + "timestamp", _T + "merge"
ALLOWED_TAGS = frozenset({STR, INT, FLOAT, BOOL, NULL, SEQ, MAP, TIMESTAMP})

_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_DECIMAL_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_CORE_BOOL = {v: v.lower() == "true" for v in ("true", "True", "TRUE", "false", "False", "FALSE")}
_KEY_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SHOWN_MAX = 60


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 1 << 20
    max_depth: int = 50
    max_aliases: int = 100
    max_nodes: int = 500_000
    """Values in the tree once aliases are expanded."""


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Origin:
    """Where a value was written: file, 1-based line and column (0 = the whole file), path."""

    file: str
    line: int
    col: int
    path: str


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    col: int
    path: str
    message: str
    severity: Severity = "error"

    @classmethod
    def at(cls, origin: Origin, message: str, severity: Severity = "error") -> Problem:
        return cls(origin.file, origin.line, origin.col, origin.path, message, severity)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}: " if self.line else f"{self.file}: "
        kind = "warning: " if self.severity == "warning" else ""
        path = f"{self.path}: " if self.path else ""
        return f"{where}{kind}{path}{self.message}"


class ConfigError(ClubsError):
    """A config file is not acceptable; str() renders every problem, one per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class Report:
    """The problems found in one file, collected so that all of them are reported at once."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, origin: Origin, message: str, severity: Severity = "error") -> None:
        self.problems.append(Problem.at(origin, message, severity))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def raise_for_errors(self) -> None:
        errors = sorted(self.errors, key=lambda p: (p.line, p.col))
        if errors:
            raise ConfigError(errors)


# --- showing values in messages ----------------------------------------------------------------


def _escape(text: str) -> str:
    """Invisible, control and direction-changing characters as \\uXXXX, so a message is safe."""
    return "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in text
    )


def shown(value: str) -> str:
    """A value as a message shows it: quoted, escaped, shortened."""
    if len(value) > _SHOWN_MAX:
        value = value[: _SHOWN_MAX - 1] + "…"
    return _escape(json.dumps(value, ensure_ascii=False))


def _yaml11_reading(node: yaml.ScalarNode) -> str:
    """What YAML 1.1 tools (PyYAML among them) make of a plain scalar: "false", "the number 750"."""
    constructor = SafeConstructor()
    try:
        if node.tag == BOOL:
            return str(constructor.construct_yaml_bool(node)).lower()
        if node.tag == INT:
            return f"the number {constructor.construct_yaml_int(node)}"
        return f"the number {constructor.construct_yaml_float(node)}"
    except (ValueError, IndexError, OverflowError):  # "0b_", "._": resolved, not constructible
        return "a number"


def describe(raw: yaml.Node) -> str:
    """What a node is, for "expected X; got <describe>"."""
    if isinstance(raw, yaml.MappingNode):
        return "a mapping"
    if isinstance(raw, yaml.SequenceNode):
        return "a list"
    assert isinstance(raw, yaml.ScalarNode)
    value = str(raw.value)
    if raw.style:  # quoted or block scalar
        return f"{shown(value)} (a string)"
    plain = _escape(value[: _SHOWN_MAX - 1] + "…" if len(value) > _SHOWN_MAX else value)
    if raw.tag == NULL:
        return "null"
    if raw.tag == BOOL:
        if value in _CORE_BOOL:
            return f"{plain} (a boolean)"
        return f"{plain} (YAML 1.1 reads it as {_yaml11_reading(raw)})"
    if raw.tag in (INT, FLOAT):
        if _DECIMAL.fullmatch(value) or _DECIMAL_FLOAT.fullmatch(value):
            return f"{plain} (a number)"
        return f"{plain} (YAML 1.1 reads it as {_yaml11_reading(raw)})"
    return shown(value)


def _is_plain_scalar(raw: yaml.Node) -> bool:
    return isinstance(raw, yaml.ScalarNode) and raw.tag in (BOOL, INT, FLOAT) and not raw.style


def key_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    part = key if _KEY_LIKE.fullmatch(key) else f"[{shown(key)}]"
    if not path or part.startswith("["):
        return f"{path}{part}"
    return f"{path}.{part}"


# --- reading nodes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """A YAML node, where it is, and the report its problems go to.

    Getters never raise: on a wrong value they record a problem and return a placeholder of the
    right type, so a loader walks the whole file and reports every problem; it must call
    `report.raise_for_errors()` before trusting what it built.
    """

    raw: yaml.Node
    path: str
    report: Report
    present: bool = True
    """False for a required key that is missing (reported once; its getters stay silent)."""

    @property
    def origin(self) -> Origin:
        mark = self.raw.start_mark
        return Origin(self.report.file, mark.line + 1, mark.column + 1, self.path)

    def error(self, message: str) -> None:
        if self.present:
            self.report.add(self.origin, message)

    def warn(self, message: str) -> None:
        if self.present:
            self.report.add(self.origin, message, "warning")

    def child(self, raw: yaml.Node, key: str | int) -> Node:
        return Node(raw, key_path(self.path, key), self.report, self.present)

    def is_list(self) -> bool:
        return isinstance(self.raw, yaml.SequenceNode)

    def is_null(self) -> bool:
        return isinstance(self.raw, yaml.ScalarNode) and self.raw.tag == NULL

    def _text(self) -> str | None:
        """The value if it is a string a careful reader would see as one, else None."""
        raw = self.raw
        if isinstance(raw, yaml.ScalarNode) and (
            raw.tag == STR or (raw.tag == TIMESTAMP and not raw.style)
        ):
            return str(raw.value)
        return None

    def string(self, check: Check | None = None) -> str:
        value = self._text()
        if value is None:
            hint = f"; quote it: {shown(str(self.raw.value))}" if _is_plain_scalar(self.raw) else ""
            self.error(f"expected a string; got {describe(self.raw)}{hint}")
            return ""
        if check is not None and (message := check(value)) is not None:
            self.error(message)
        return value

    def choice(self, options: Sequence[str]) -> str:
        value = self._text()
        if value is None or value not in options:
            got = describe(self.raw) if value is None else shown(value)
            written = str(self.raw.value)
            if value is None and _is_plain_scalar(self.raw) and written in options:
                got += f"; quote it: {shown(written)}"  # an option like off or 12, unquoted
            self.error(f"expected one of {', '.join(options)}; got {got}")
            return options[0]
        return value

    def integer(self, *, low: int | None = None, high: int | None = None) -> int:
        raw = self.raw
        is_int = isinstance(raw, yaml.ScalarNode) and raw.tag == INT and not raw.style
        text = str(raw.value)
        if not is_int or not _DECIMAL.fullmatch(text) or len(text) > 20:
            got = f"a number of {len(text)} digits" if len(text) > 20 else describe(raw)
            self.error(f"expected an integer; got {got}")
            return low or 0
        value = int(text)
        if (low is not None and value < low) or (high is not None and value > high):
            if low == high:
                expected = str(low)
            elif high is None:
                expected = f"an integer of at least {low}"
            elif low is None:
                expected = f"an integer of at most {high}"
            else:
                expected = f"an integer from {low} to {high}"
            self.error(f"expected {expected}; got {value}")
            return low or 0
        return value

    def boolean(self) -> bool:
        raw = self.raw
        if isinstance(raw, yaml.ScalarNode) and raw.tag == BOOL and raw.value in _CORE_BOOL:
            return _CORE_BOOL[str(raw.value)]
        self.error(f"expected true or false; got {describe(raw)}")
        return False

    def sequence(self) -> list[Node]:
        if not isinstance(self.raw, yaml.SequenceNode):
            self.error(f"expected a list; got {describe(self.raw)}")
            return []
        return [self.child(item, i) for i, item in enumerate(self.raw.value)]

    def entries(self) -> list[Entry]:
        """The key/value pairs of a mapping with string keys; duplicate keys are reported."""
        if not isinstance(self.raw, yaml.MappingNode):
            self.error(f"expected a mapping; got {describe(self.raw)}")
            return []
        seen: dict[str, int] = {}
        result = []
        for raw_key, raw_value in self.raw.value:
            if not isinstance(raw_key, yaml.ScalarNode) or raw_key.tag != STR:
                Node(raw_key, self.path, self.report, self.present).error(
                    f"keys must be strings; got {describe(raw_key)}"
                )
                continue
            key = str(raw_key.value)
            at = Node(raw_key, key_path(self.path, key), self.report, self.present)
            if key in seen:
                at.error(f"duplicate key (first at line {seen[key]})")
                continue
            seen[key] = raw_key.start_mark.line + 1
            result.append(Entry(key, at, self.child(raw_value, key)))
        return result

    def mapping(self, *, required: Iterable[str] = (), optional: Iterable[str] = ()) -> Fields:
        """A mapping with a fixed set of keys: unknown, duplicate and missing keys are reported."""
        required = tuple(required)
        allowed = tuple(dict.fromkeys((*required, *optional)))
        values: dict[str, Node] = {}
        for entry in self.entries():
            if entry.key in allowed:
                values[entry.key] = entry.value
            else:
                close = difflib.get_close_matches(entry.key, allowed, n=1)
                hint = (
                    f'did you mean "{close[0]}"?'
                    if close
                    else f"expected one of {', '.join(allowed)}"
                )
                entry.at.error(f"unknown key; {hint}")
        if isinstance(self.raw, yaml.MappingNode):
            for key in required:
                if key not in values:
                    self.error(f'missing required key "{key}"')
        return Fields(self, values)


@dataclass(frozen=True)
class Entry:
    key: str
    at: Node
    """The key itself, for problems about the key."""
    value: Node


@dataclass(frozen=True)
class Fields:
    """The known keys of a mapping. `fields["k"]` for required keys, `.get("k")` for optional."""

    node: Node
    values: dict[str, Node] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Node:
        if key in self.values:
            return self.values[key]
        node = self.node
        return Node(node.raw, key_path(node.path, key), node.report, present=False)

    def get(self, key: str) -> Node | None:
        """The value, or None when the key is absent or null."""
        value = self.values.get(key)
        return None if value is None or value.is_null() else value

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


# --- parsing -----------------------------------------------------------------------------------


class _Refused(yaml.MarkedYAMLError):
    """A limit was hit: reported as is, without the "invalid YAML" prefix."""

    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(problem=message, problem_mark=mark)


class _Loader(yaml.SafeLoader):
    """SafeLoader that only composes, with depth and alias caps and no self-containing aliases."""

    def __init__(self, text: str, limits: Limits) -> None:
        super().__init__(text)
        self.limits = limits
        self.depth = 0
        self.aliases = 0
        self.open_anchors: set[str] = set()

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > self.limits.max_aliases:
                raise _Refused(f"more than {self.limits.max_aliases} aliases", event.start_mark)
            if event.anchor in self.open_anchors:
                raise _Refused(
                    f"alias *{event.anchor} refers to a node containing it", event.start_mark
                )
            return super().compose_node(parent, index)
        if self.depth >= self.limits.max_depth:
            raise _Refused(f"nested deeper than {self.limits.max_depth} levels", event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor:
            self.open_anchors.add(anchor)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1
            self.open_anchors.discard(anchor or "")


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _syntax_message(e: yaml.MarkedYAMLError) -> str:
    context, problem = e.context or "", e.problem or ""
    if not (context and problem):
        message = context or problem or "cannot parse"
    elif context.startswith("while") and e.context_mark is not None:
        message = f"{problem} ({context} at line {e.context_mark.line + 1})"
    else:
        message = f"{context}, {problem}"
    if "'@'" in message or "'`'" in message:
        message += '; quote values that start with @ or `, e.g. "@anna"'
    if "'\\t'" in message:
        message += "; indent with spaces, not tabs"
    return f"invalid YAML: {message}"


def _show_tag(tag: str) -> str:
    return "!!" + tag[len(_T) :] if tag.startswith(_T) else tag


def _scan(root: yaml.Node, limits: Limits, report: Report) -> None:
    """Reject tags other than the core ones, and trees that aliases expand beyond the cap."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if node.tag not in ALLOWED_TAGS:
            line, col = node.start_mark.line + 1, node.start_mark.column + 1
            if node.tag == MERGE:
                message = "merge keys (<<) are not supported; write the keys out"
            else:
                message = f"tag {shown(_show_tag(node.tag))} is not allowed"
            report.add(Origin(report.file, line, col, ""), message)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        if total > limits.max_nodes:
            message = f"more than {limits.max_nodes} values once aliases are expanded"
            raise _Refused(message, node.start_mark)
        sizes[id(node)] = total
        return total

    size(root)


def parse_yaml(data: bytes | str, file: str, limits: Limits = DEFAULT_LIMITS) -> Node:
    """Compose one YAML document into a root Node. Raises ConfigError if it cannot be read."""
    report = Report(file)
    whole_file = Origin(file, 0, 0, "")
    raw_bytes = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw_bytes) > limits.max_bytes:
        raise ConfigError([Problem.at(whole_file, f"larger than {limits.max_bytes} bytes")])
    try:
        text = raw_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw_bytes.count(b"\n", 0, e.start) + 1
        col = e.start - (raw_bytes.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            [Problem(file, line, col, "", f"not UTF-8 (byte 0x{raw_bytes[e.start]:02x})")]
        ) from None
    try:
        loader = _Loader(text, limits)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
        if root is not None:
            _scan(root, limits, report)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        message = str(e.problem) if isinstance(e, _Refused) else _syntax_message(e)
        raise ConfigError([Problem(file, line, col, "", message)]) from None
    except yaml.reader.ReaderError as e:
        line, col = _position(text, e.position)
        message = f"invalid YAML: character U+{e.character:04X} is not allowed"
        raise ConfigError([Problem(file, line, col, "", message)]) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem.at(whole_file, f"invalid YAML: {e}")]) from None
    report.raise_for_errors()
    if root is None:
        raise ConfigError([Problem.at(whole_file, "the file is empty; expected a mapping")])
    return Node(root, "", report)


def read_yaml(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> Node:
    """Read and compose a file, reading at most `limits.max_bytes` + 1 bytes of it."""
    file = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(limits.max_bytes + 1)
    except OSError as e:
        raise ConfigError([Problem(file, 0, 0, "", f"cannot read: {e.strerror or e}")]) from None
    return parse_yaml(data, file, limits)
