from __future__ import annotations

import pytest

from clubs.core import checks


@pytest.mark.parametrize("value", ["kz", "almaty", "2026-spring", "a", "a" * 40])
def test_slugs(value: str) -> None:
    assert checks.slug(value) is None


@pytest.mark.parametrize("value", ["", "Almaty", "-kz", "kz-", "a_b", "a b", "a" * 41, "алматы"])
def test_not_slugs(value: str) -> None:
    assert checks.slug(value) is not None


@pytest.mark.parametrize(
    "value", ["@anna", "@anna:example.org", "@a.b_c=d-e/f+g:hs.example:8448", "@x:[::1]"]
)
def test_user_ids(value: str) -> None:
    assert checks.user_id(value) is None


@pytest.mark.parametrize(
    "value",
    ["anna", "@", "@:example.org", "@Anna", "@anna:", "@anna:bad host", "@ан:example.org", "@a b"],
)
def test_not_user_ids(value: str) -> None:
    assert checks.user_id(value) is not None


def test_user_id_length_counts_bytes() -> None:
    assert checks.user_id("@" + "a" * 254) is None
    assert checks.user_id("@" + "a" * 255) == (
        "expected a user id of at most 255 bytes; got 256 bytes"
    )


def test_names_are_visible_single_line_text_of_at_most_255_bytes() -> None:
    name = checks.text()
    assert name("Алматы · общий") is None
    assert name("ы" * 127) is None
    assert name("ы" * 128) == "expected at most 255 bytes (UTF-8); got 256 bytes"
    assert name("  ") == "expected some text; got an empty string"
    assert name("a\nb") == "contains the control character U+000A at position 2"
    assert checks.text(multiline=True)("a\nb") is None


@pytest.mark.parametrize(
    "char", ["\u202a", "\u202e", "\u2066", "\u2069", "\u200b", "\u200d", "\ufeff"]
)
def test_hidden_and_direction_changing_characters_are_refused(char: str) -> None:
    message = checks.text()(f"ab{char}c")
    assert message is not None
    assert message.startswith(f"contains U+{ord(char):04X} ")
    assert message.endswith("at position 3")


def test_lone_surrogates_are_refused_before_they_break_an_encoder() -> None:
    assert checks.text()("a\ud800") is not None


@pytest.mark.parametrize(
    "value", ["Asia/Almaty", "Europe/Berlin", "UTC", "America/Argentina/Salta"]
)
def test_time_zones(value: str) -> None:
    assert checks.time_zone(value) is None


@pytest.mark.parametrize("value", ["Asia/Almaty2", "../etc/passwd", "", "localtime", "Europe/"])
def test_not_time_zones(value: str) -> None:
    assert checks.time_zone(value) is not None
