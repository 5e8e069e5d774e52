"""The case library's words: relations that look like names are refused, tags and search words
are normalised, `!case` sub-commands in Russian and English."""

from __future__ import annotations

import pytest

from clubs.bots.cases.parse import (
    CaseUsage,
    Request,
    check_relation,
    normalise,
    parse_case,
    parse_query,
    parse_tags,
    terms_of,
)


@pytest.mark.parametrize("text", ["мама", "коллега по работе", "Мама", "старший брат", "mother"])
def test_a_relation_is_kept(text: str) -> None:
    assert check_relation(f"  {text} ") == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Наташа", "relation_name"),
        ("мама Наташа", "relation_name"),
        ("@anna:example.org", "relation_name"),
        ("anna@example.org", "relation_name"),
        ("", "relation_missing"),
        ("-", "relation_missing"),
        ("очень " * 10, "relation_long"),
    ],
)
def test_a_relation_that_looks_like_a_name_is_refused(text: str, problem: str) -> None:
    with pytest.raises(CaseUsage) as e:
        check_relation(text)
    assert e.value.problem == problem


def test_tags_are_normalised_and_bounded() -> None:
    assert parse_tags("Мобилизация, ТВ #санкции  тв; Ёлка") == (
        "мобилизация",
        "тв",
        "санкции",
        "елка",
    )
    assert parse_tags("-") == ()
    with pytest.raises(CaseUsage) as e:
        parse_tags(", ".join(f"t{i}" for i in range(9)))
    assert e.value.problem == "too_many_tags"
    with pytest.raises(CaseUsage) as e:
        parse_tags("x" * 40)
    assert e.value.problem == "tag_long"


def test_terms_are_tags_and_relation_words() -> None:
    assert terms_of("старшая сестра", ("тв", "сестра")) == ["тв", "сестра", "старшая"]
    assert normalise("#ТВ") == "тв"
    assert parse_query("Mother  TV tv") == ["mother", "tv"]
    with pytest.raises(CaseUsage):
        parse_query("a b c d e f g")


@pytest.mark.parametrize(
    ("text", "request_"),
    [
        ("", Request("new")),
        ("42", Request("show", 42)),
        ("#42", Request("show", 42)),
        ("правка 42", Request("edit", 42)),
        ("edit 42 tags", Request("edit", 42, "tags")),
        ("правка 7 теги", Request("edit", 7, "tags")),
        ("отозвать 42", Request("withdraw", 42)),
        ("withdraw 3", Request("withdraw", 3)),
        ("отправить", Request("send")),
        ("send named network", Request("send", named=True, network=True)),
        ("отправить сеть", Request("send", network=True)),
        ("одобрить 5", Request("approve", 5)),
        ("reject 5", Request("reject", 5)),
        ("мои", Request("mine")),
        ("статистика", Request("stats")),
    ],
)
def test_case_sub_commands(text: str, request_: Request) -> None:
    assert parse_case(text) == request_


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("зачем", "unknown"),
        ("42 43", "extra"),
        ("withdraw", "number"),
        ("edit x", "number"),
        ("edit 4 name", "field"),
        ("send loudly", "unknown"),
        ("mine 3", "extra"),
    ],
)
def test_bad_sub_commands_say_what(text: str, problem: str) -> None:
    with pytest.raises(CaseUsage) as e:
        parse_case(text)
    assert e.value.problem == problem
