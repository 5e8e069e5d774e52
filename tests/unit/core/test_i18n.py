from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from clubs.bots.commands import HelpEntry
from clubs.core.i18n import (
    LANGUAGES,
    Catalog,
    TemplateProblem,
    Text,
    check_templates,
    pick_language,
    plural_form,
)

RUNTIME_KEYS = (
    "bots/ping",
    "bots/ping.help",
    "bots/help",
    "bots/help.help",
    "bots/usage",
    "bots/refused",
    "bots/ratelimited",
    "bots/undecryptable",
    "core/datetime",
)

EXAMPLE_VALUES: dict[str, dict[str, object]] = {
    "bots/help": {"entries": [HelpEntry("!ping", ("!пинг",), "bots/ping.help")]},
    "bots/usage": {
        "usage": "!kick <room> <count>",
        "problem": "out_of_range",
        "param": "count",
        "low": "1",
        "high": "10",
    },
    "bots/refused": {"command": "!ban", "required": 50, "power": 0},
    "bots/ratelimited": {"seconds": 3},
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog()


def write(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source, encoding="utf-8")
    return root


# --- the project's templates -------------------------------------------------------------------


def test_the_project_templates_pass_the_check_with_the_runtime_keys() -> None:
    check_templates(required=RUNTIME_KEYS)


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("key", [k for k in RUNTIME_KEYS if k != "core/datetime"])
def test_every_runtime_text_renders_in_both_languages(
    catalog: Catalog, key: str, lang: str
) -> None:
    text = catalog.render(key, lang, **EXAMPLE_VALUES.get(key, {}))
    assert text.body.strip()
    assert text.html.strip()
    assert "{{" not in text.body
    assert "{%" not in text.body


def test_ping_answers_in_each_language_and_falls_back_to_russian(catalog: Catalog) -> None:
    assert catalog.render("bots/ping", "ru") == Text("Понг 🏓", "Понг 🏓")
    assert catalog.render("bots/ping", "en-GB").body == "Pong 🏓"
    assert catalog.render("bots/ping", "de").body == "Понг 🏓"
    assert catalog.render("bots/ping", None).body == "Понг 🏓"


def test_help_lists_commands_with_their_help_lines(catalog: Catalog) -> None:
    text = catalog.render("bots/help", "en", **EXAMPLE_VALUES["bots/help"])
    assert text.body == (
        "Commands you may use here:\n• !ping (!пинг) — check that the bot is listening"
    )
    assert text.html == (
        "<b>Commands you may use here:</b><ul><li><code>!ping</code> (!пинг) — "
        "check that the bot is listening</li></ul>"
    )


def test_a_usage_error_reads_well_in_both_languages(catalog: Catalog) -> None:
    values = EXAMPLE_VALUES["bots/usage"]
    assert catalog.render("bots/usage", "ru", **values).body == (
        "count должно быть не меньше 1 и не больше 10.\nИспользование: !kick <room> <count>"
    )
    assert catalog.render("bots/usage", "en", **values).html == (
        "<code>count</code> must be at least 1 and at most 10.<br>"
        "Usage: <code>!kick &lt;room&gt; &lt;count&gt;</code>"
    )


def test_refusal_names_both_power_levels(catalog: Catalog) -> None:
    values = EXAMPLE_VALUES["bots/refused"]
    assert catalog.render("bots/refused", "ru", **values).body == (
        "Команда !ban доступна с уровнем прав 50, а у вас 0."
    )
    assert catalog.render("bots/refused", "en", **values).body == (
        "!ban needs power level 50; yours is 0."
    )


@pytest.mark.parametrize(
    ("seconds", "ru", "en"),
    [(1, "1 секунду", "1 second"), (3, "3 секунды", "3 seconds"), (11, "11 секунд", "11 seconds")],
)
def test_rate_limit_notice_uses_plural_forms(
    catalog: Catalog, seconds: int, ru: str, en: str
) -> None:
    assert catalog.render("bots/ratelimited", "ru", seconds=seconds).body.endswith(f"{ru}.")
    assert catalog.render("bots/ratelimited", "en", seconds=seconds).body.endswith(f"{en}.")


@pytest.mark.parametrize(
    ("n", "form"), [(1, 0), (2, 1), (4, 1), (5, 2), (11, 2), (12, 2), (21, 0), (22, 1), (111, 2)]
)
def test_russian_plural_rules(n: int, form: int) -> None:
    assert plural_form("ru", n) == form


def test_language_tags_are_reduced_to_ru_or_en() -> None:
    assert [pick_language(t) for t in ("en", "EN-us", "en_GB", "ru-RU", "uk", "", None)] == [
        "en",
        "en",
        "en",
        "ru",
        "ru",
        "ru",
        "ru",
    ]


# --- times -------------------------------------------------------------------------------------


def test_a_utc_instant_is_shown_in_the_club_zone(catalog: Catalog) -> None:
    instant = datetime(2026, 3, 12, 13, 30, tzinfo=UTC)
    assert catalog.format_time(instant, "Asia/Almaty", "ru") == (
        "чт, 12 марта 2026, 18:30 (Almaty, UTC+5)"
    )
    assert catalog.format_time(instant, "Asia/Almaty", "en") == (
        "Thu 12 March 2026, 18:30 (Almaty, UTC+5)"
    )
    assert catalog.format_time(instant, "Asia/Kolkata", "en").endswith("19:00 (Kolkata, UTC+5:30)")


def test_summer_time_is_followed(catalog: Catalog) -> None:
    winter = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    summer = datetime(2026, 7, 10, 12, 0, tzinfo=UTC)
    assert catalog.format_time(winter, "Europe/Berlin", "en").endswith("13:00 (Berlin, UTC+1)")
    assert catalog.format_time(summer, "Europe/Berlin", "en").endswith("14:00 (Berlin, UTC+2)")
    assert catalog.format_time(summer, "America/New_York", "ru").endswith("08:00 (New York, UTC−4)")


def test_naive_times_and_unknown_zones_are_refused(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="aware"):
        catalog.format_time(datetime(2026, 1, 1), "UTC", "ru")
    for zone in ("Mars/Olympus", "../etc/passwd", ""):
        with pytest.raises(ValueError, match="unknown time zone"):
            catalog.format_time(datetime(2026, 1, 1, tzinfo=UTC), zone, "ru")


def test_templates_can_show_times_with_a_filter(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "core/datetime.ru.txt.j2": "{{ at.hour }}ч ({{ city }})",
            "core/datetime.en.txt.j2": "{{ at.hour }}h ({{ city }})",
            "s/start.ru.txt.j2": "Начало: {{ when|localtime(zone) }}",
            "s/start.en.txt.j2": "Starts: {{ when|localtime(zone) }}",
        },
    )
    when = datetime(2026, 3, 12, 13, 30, tzinfo=UTC)
    text = Catalog(root).render("s/start", "ru", when=when, zone="Europe/Vilnius")
    assert text.body == "Начало: 15ч (Vilnius)"


# --- escaping ----------------------------------------------------------------------------------


def test_values_are_escaped_in_html_and_kept_in_plain(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "x/h.ru.html.j2": "<b>{{ name }}</b>",
            "x/h.en.html.j2": "<b>{{ name }}</b>",
            "x/t.ru.txt.j2": "Имя: {{ name }}\nвторая строка",
            "x/t.en.txt.j2": "Name: {{ name }}",
        },
    )
    catalog = Catalog(root)
    name = '<img src=x onerror=alert(1)> & "{0.__class__}"'
    html_text = catalog.render("x/h", "ru", name=name)
    assert html_text.html == '<b>&lt;img src=x onerror=alert(1)&gt; &amp; "{0.__class__}"</b>'
    assert html_text.body == name
    plain_text = catalog.render("x/t", "ru", name=name)
    assert plain_text.body == f"Имя: {name}\nвторая строка"
    assert plain_text.html == (
        'Имя: &lt;img src=x onerror=alert(1)&gt; &amp; "{0.__class__}"<br>вторая строка'
    )


def test_at_room_from_values_never_reaches_the_output(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "x/h.ru.html.j2": "<p>{{ v }}</p>",
            "x/h.en.html.j2": "<p>{{ v }}</p>",
            "x/t.ru.txt.j2": "{{ v }}",
            "x/t.en.txt.j2": "{{ v }}",
        },
    )
    catalog = Catalog(root)
    for key in ("x/h", "x/t"):
        text = catalog.render(key, "ru", v="hey @room and @ROOM")
        assert "@room" not in text.body.lower()
        assert "@room" not in text.html.lower()


def test_templates_cannot_reach_python_internals(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "x/e.ru.txt.j2": "{{ v.__class__.__mro__ }}",
            "x/e.en.txt.j2": "{{ v }}",
        },
    )
    with pytest.raises(TemplateProblem, match=r"x/e\.ru\.txt\.j2: "):
        Catalog(root).render("x/e", "ru", v="s")


def test_a_missing_value_is_a_clear_error(catalog: Catalog) -> None:
    with pytest.raises(
        TemplateProblem, match=r"^bots/refused\.ru\.txt\.j2: 'command' is undefined$"
    ):
        catalog.render("bots/refused", "ru")


def test_an_unknown_key_is_a_clear_error(catalog: Catalog) -> None:
    with pytest.raises(TemplateProblem, match=r"no single template for 'bots/nope' in 'en'"):
        catalog.render("bots/nope", "en")


# --- the start-up check ------------------------------------------------------------------------

DATETIME = {"core/datetime.ru.txt.j2": "d", "core/datetime.en.txt.j2": "d"}


def test_the_check_lists_every_problem_at_once(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            **DATETIME,
            "a/only_ru.ru.txt.j2": "x",
            "a/twice.ru.txt.j2": "x",
            "a/twice.ru.html.j2": "x",
            "a/twice.en.txt.j2": "x",
            "a/broken.ru.html.j2": "ok",
            "a/broken.en.html.j2": "line\n{% if %}",
            "a/badname.de.txt.j2": "x",
            "a/README.md": "not a template",
        },
    )
    with pytest.raises(TemplateProblem) as err:
        check_templates(root, required=["a/needed"])
    assert str(err.value) == (
        f"templates under {root}:\n"
        "  a/badname.de.txt.j2: expected <key>.<language>.<kind>.j2 with language in ru, en "
        "and kind in html, txt\n"
        "  a/broken.en.html.j2:2: Expected an expression, got 'end of statement block'\n"
        "  a/needed: no ru text (a/needed.ru.html.j2 or .txt.j2)\n"
        "  a/needed: no en text (a/needed.en.html.j2 or .txt.j2)\n"
        "  a/only_ru: no en text (a/only_ru.en.html.j2 or .txt.j2)\n"
        "  a/twice: ru text exists as both .html.j2 and .txt.j2"
    )


def test_a_complete_catalog_passes(tmp_path: Path) -> None:
    root = write(tmp_path, {**DATETIME, "a/b.ru.txt.j2": "x", "a/b.en.html.j2": "<b>x</b>"})
    check_templates(root, required=["a/b"])
    assert Catalog(root).keys() == {"a/b", "core/datetime"}


def test_a_missing_templates_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(TemplateProblem, match=r"templates directory .*/nowhere does not exist"):
        check_templates(tmp_path / "nowhere")
