from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clubs.core.yamlconf import ConfigError, Limits, Node, Problem, parse_yaml


def problems(text: str, read: object) -> list[str]:
    """Parse `text`, apply `read` to the root node, and return the rendered problems."""
    try:
        root = parse_yaml(text, "f.yaml")
        assert callable(read)
        read(root)
        root.report.raise_for_errors()
    except ConfigError as e:
        return str(e).splitlines()
    return []


def read_fields(**kinds: str) -> object:
    def read(root: Node) -> None:
        fields = root.mapping(optional=tuple(kinds))
        for key, kind in kinds.items():
            if node := fields.values.get(key):
                getattr(node, kind)()

    return read


def test_problem_renders_file_line_col_path_and_message() -> None:
    p = Problem("config/network.yaml", 42, 7, "clubs[3].rooms[0].join_rule", "expected x; got y")
    assert str(p) == "config/network.yaml:42:7: clubs[3].rooms[0].join_rule: expected x; got y"
    assert str(Problem("f.yaml", 0, 0, "", "too big")) == "f.yaml: too big"
    warning = Problem("f.yaml", 1, 2, "name", "careful", "warning")
    assert str(warning) == "f.yaml:1:2: warning: name: careful"


def test_config_error_renders_every_problem_on_its_own_line() -> None:
    error = ConfigError([Problem("f", 1, 1, "a", "one"), Problem("f", 2, 1, "b", "two")])
    assert str(error) == "f:1:1: a: one\nf:2:1: b: two"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("no", 'got no (YAML 1.1 reads it as false); quote it: "no"'),
        ("off", 'got off (YAML 1.1 reads it as false); quote it: "off"'),
        ("true", 'got true (a boolean); quote it: "true"'),
        ("12:30", 'got 12:30 (YAML 1.1 reads it as the number 750); quote it: "12:30"'),
        ("0755", 'got 0755 (YAML 1.1 reads it as the number 493); quote it: "0755"'),
        ("0x1f", 'got 0x1f (YAML 1.1 reads it as the number 31); quote it: "0x1f"'),
        ("1.5", 'got 1.5 (a number); quote it: "1.5"'),
        (".inf", 'got .inf (YAML 1.1 reads it as the number inf); quote it: ".inf"'),
        ("~", "got null"),
        ("[a]", "got a list"),
        ("0b_", 'got 0b_ (YAML 1.1 reads it as a number); quote it: "0b_"'),
        ("0x_", 'got 0x_ (YAML 1.1 reads it as a number); quote it: "0x_"'),
    ],
)
def test_yaml_11_surprises_are_refused_where_a_string_is_expected(value: str, message: str) -> None:
    assert problems(f"s: {value}\n", read_fields(s="string")) == [
        f"f.yaml:1:4: s: expected a string; {message}"
    ]


@pytest.mark.parametrize("value", ['"no"', "'12:30'", "!!str 0755", "plain text", "2026-03-01"])
def test_quoted_and_plain_strings_are_strings(value: str) -> None:
    assert problems(f"s: {value}\n", read_fields(s="string")) == []


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("true", "true (a boolean)"),
        ("yes", "yes (YAML 1.1 reads it as true)"),
        ('"5"', '"5" (a string)'),
        ("1_000", "1_000 (YAML 1.1 reads it as the number 1000)"),
        ("2.0", "2.0 (a number)"),
        ("9" * 5000, "a number of 5000 digits"),
    ],
)
def test_only_plain_decimal_integers_are_integers(value: str, got: str) -> None:
    assert problems(f"i: {value}\n", read_fields(i="integer")) == [
        f"f.yaml:1:4: i: expected an integer; got {got}"
    ]


@pytest.mark.parametrize("value", ["yes", "on", "y", "1", '"true"'])
def test_only_true_and_false_are_booleans(value: str) -> None:
    [message] = problems(f"b: {value}\n", read_fields(b="boolean"))
    assert message.startswith("f.yaml:1:4: b: expected true or false; got ")


def test_integer_range_is_part_of_the_message() -> None:
    def read(root: Node) -> None:
        root.mapping(required=("i",))["i"].integer(low=0, high=100)

    assert problems("i: 150\n", read) == [
        "f.yaml:1:4: i: expected an integer from 0 to 100; got 150"
    ]


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("off", 'off (YAML 1.1 reads it as false); quote it: "off"'),
        ("12", '12 (a number); quote it: "12"'),
        ("no", "no (YAML 1.1 reads it as false)"),  # not an option: nothing to quote
        ('"on"', '"on"'),
    ],
)
def test_a_choice_written_unquoted_is_told_to_be_quoted(value: str, got: str) -> None:
    def read(root: Node) -> None:
        root.mapping(required=("c",))["c"].choice(("flag", "off", "12"))

    assert problems(f"c: {value}\n", read) == [
        f"f.yaml:1:4: c: expected one of flag, off, 12; got {got}"
    ]


def test_every_problem_is_reported_in_file_order() -> None:
    text = "b: yes\na: 1\nzz: 2\na: 3\n"
    assert problems(text, read_fields(a="string", b="boolean")) == [
        "f.yaml:1:4: b: expected true or false; got yes (YAML 1.1 reads it as true)",
        'f.yaml:2:4: a: expected a string; got 1 (a number); quote it: "1"',
        "f.yaml:3:1: zz: unknown key; expected one of a, b",
        "f.yaml:4:1: a: duplicate key (first at line 2)",
    ]


def test_missing_required_key_is_reported_once_at_the_mapping() -> None:
    def read(root: Node) -> None:
        fields = root.mapping(required=("name",), optional=("topic",))
        fields["name"].string()  # silent: already reported as missing

    assert problems("topic: x\n", read) == ['f.yaml:1:1: missing required key "name"']


def test_paths_name_list_items_and_odd_keys() -> None:
    def read(root: Node) -> None:
        for item in root.mapping(required=("rooms",))["rooms"].sequence():
            for entry in item.entries():
                entry.value.integer()

    text = "rooms:\n  - {ok: 1}\n  - {m.room.name: x}\n"
    assert problems(text, read) == [
        'f.yaml:3:19: rooms[1]["m.room.name"]: expected an integer; got "x"'
    ]


def test_values_in_messages_are_escaped_and_shortened() -> None:
    def read(root: Node) -> None:
        root.mapping(required=("k",))["k"].choice(("a", "b"))

    [message] = problems('k: "\u202eevil\u200b' + "x" * 100 + '"\n', read)
    assert "\u202e" not in message
    assert "\u200b" not in message
    assert message.startswith('f.yaml:1:4: k: expected one of a, b; got "\\u202eevil\\u200bxxx')
    assert message.endswith('…"')


def test_core_tags_only() -> None:
    assert problems("a: !!binary aGVsbG8=\n", read_fields()) == [
        'f.yaml:1:4: tag "!!binary" is not allowed'
    ]
    assert problems("a: !!set {x}\n", read_fields()) == ['f.yaml:1:4: tag "!!set" is not allowed']


def test_alias_cap() -> None:
    text = "a: &x 1\nb: [" + ", ".join(["*x"] * 101) + "]\n"
    assert problems(text, read_fields()) == ["f.yaml:2:405: more than 100 aliases"]


def test_limits_are_configurable() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml("a: [[[1]]]\n", "f.yaml", Limits(max_depth=3))
    assert str(caught.value) == "f.yaml:1:6: nested deeper than 3 levels"
    with pytest.raises(ConfigError) as caught:
        parse_yaml("a: 12345\n", "f.yaml", Limits(max_bytes=5))
    assert str(caught.value) == "f.yaml: larger than 5 bytes"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_a_node_or_a_config_error(text: str) -> None:
    try:
        root = parse_yaml(text, "fuzz.yaml")
    except ConfigError:
        return
    root.mapping(required=("a",))["a"].string()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_node_or_a_config_error(data: bytes) -> None:
    with contextlib.suppress(ConfigError):
        parse_yaml(data, "fuzz.yaml")


SCALAR_ALPHABET = "01579_:.-+xobBeE ~yesnotrufalsYNO[]{},&*!#'\"@\\"


@settings(max_examples=500, deadline=None)
@given(st.text(SCALAR_ALPHABET, max_size=12), st.sampled_from(["string", "integer", "boolean"]))
def test_any_scalar_gives_a_value_or_a_problem(text: str, getter: str) -> None:
    try:
        root = parse_yaml(f"s: {text}\n", "fuzz.yaml")
    except ConfigError:
        return
    if node := root.mapping(optional=("s",)).values.get("s"):
        getattr(node, getter)()
        node.choice(("a", "b"))
