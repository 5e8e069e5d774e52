from __future__ import annotations

import pytest

from clubs.core.paths import config_dir
from clubs.core.yamlconf import ConfigError
from clubs.provisioning.lint import lint_network, lint_text, load_sensitive_words
from clubs.provisioning.load import load_network, parse_network

WORDS = load_sensitive_words()

NETWORK = """\
version: 1
network: demo
name: "Сеть"
people:
  - {key: anna, display_name: "Анна"}
club_template:
  rooms:
    - {key: general, name: "Антивоенный клуб", private_description: "Против войны"}
countries:
  - key: de
    name: "Германия"
    clubs:
      - {key: berlin, name: "Berlin", topic: "Релоканты и эмигранты"}
      - {key: munich, name: "München"}
"""


def test_the_example_has_no_privacy_warnings() -> None:
    assert lint_network(load_network(config_dir() / "network.example.yaml"), WORDS) == []


def test_sensitive_names_and_topics_are_located_warnings_with_a_neutral_suggestion() -> None:
    problems = lint_network(parse_network(NETWORK, "n.yaml"), WORDS)
    assert [str(p) for p in problems] == [
        'n.yaml:8:28: warning: club_template.rooms[0].name: "Антивоенный" may be sensitive: '
        'names and topics are not encrypted; use a neutral text such as "клуб" and put the '
        "rest in private_description (posted encrypted)",
        'n.yaml:13:46: warning: countries[0].clubs[0].topic: "Релоканты", "эмигранты" may be '
        'sensitive: names and topics are not encrypted; use a neutral text such as "Общий" '
        "and put the rest in private_description (posted encrypted)",
    ]
    assert all(p.severity == "warning" for p in problems)


def test_a_template_room_is_warned_about_once_not_per_club() -> None:
    problems = lint_network(parse_network(NETWORK, "n.yaml"), WORDS)
    assert sum("club_template" in p.path for p in problems) == 1


def test_the_network_file_may_add_words() -> None:
    text = NETWORK.replace("people:", "privacy: {extra_sensitive_words: [münchen]}\npeople:")
    paths = [p.path for p in lint_network(parse_network(text, "n.yaml"), WORDS)]
    assert "countries[0].clubs[1].name" in paths


@pytest.mark.parametrize(
    "text",
    [
        "ВОЙНА",
        "Против войны",
        "Клуб иностранных агентов",
        "Эмиграция",
        "ёлки и оппозиционеры",
        "Anti-war club",
        "Navalny",
        "Protests",
        "Путинская Россия",
        "ФСБ",
        "Релоканты",
    ],
)
def test_sensitive_words_are_found_in_any_case_and_form(text: str) -> None:
    assert lint_text(text, WORDS)


@pytest.mark.parametrize(
    "text", ["Общий", "Варшава", "Warsaw", "Объявления", "Встречи", "Поддержка", "Software"]
)
def test_neutral_names_pass(text: str) -> None:
    assert lint_text(text, WORDS) == []


def test_mixed_scripts_are_flagged_as_a_possible_homoglyph() -> None:
    assert lint_text("Вoйна", WORDS) == [  # the "o" is Latin
        '"Вoйна" mixes Latin and Cyrillic letters, which can disguise a word'
    ]


def test_a_broken_word_list_is_a_config_error(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    path = tmp_path / "words.yaml"
    path.write_text("words: {ru: [войн*, '***']}\n")
    with pytest.raises(ConfigError) as caught:
        load_sensitive_words(path)
    assert str(caught.value) == f"{path}:1:21: words.ru[1]: expected a word"
