"""The store seals sessions and the parking lot; every facilitation text renders in both
languages; the minutes carry the tagged lines and no author."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from clubs.bots.facilitation.methods import METHODS
from clubs.bots.facilitation.parse import duration as _duration
from clubs.bots.facilitation.session import Session, minutes_sections
from clubs.bots.facilitation.store import FacilitationStore
from clubs.core.db import Database
from clubs.core.i18n import LANGUAGES, Catalog
from clubs.core.sealed import Sealer

SECRET = "canary-Мама-8842"
USER = "@starter-canary:test.local"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FacilitationStore]:
    db = await Database.open(tmp_path / "bots.db")
    try:
        yield await FacilitationStore.open(db, "facilitation", Sealer(Fernet.generate_key()))
    finally:
        await db.close()


async def test_a_session_is_sealed_at_rest(store: FacilitationStore, tmp_path: Path) -> None:
    s = Session("$start", SECRET, 0.0, USER)
    s.add_item(SECRET, 600, 0.0)
    s.take_notes(f"#info {SECRET}")
    await store.save("!room:t", s, 0.0)
    assert await store.session("!room:t") == s
    await store.db.execute("PRAGMA wal_checkpoint(FULL)")
    for file in tmp_path.iterdir():
        data = file.read_bytes()
        assert SECRET.encode() not in data
        assert USER.encode() not in data


async def test_ending_keeps_only_the_parking_lot(store: FacilitationStore) -> None:
    await store.save("!room:t", Session("$s", "t", 0.0, USER), 0.0)
    await store.end("!room:t", ["вернуться к теме"], 10.0)
    assert await store.session("!room:t") is None
    assert await store.parking("!room:t") == ["вернуться к теме"]
    await store.end("!room:t", [], 20.0)
    assert await store.parking("!room:t") == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("10", 600), ("90s", 90), ("1h", 3600), ("5м", 300), ("x", None), ("", None)],
)
def test_durations(text: str, seconds: int | None) -> None:
    assert _duration(text) == seconds


KEYS_WITHOUT_VALUES = (
    "no_session",
    "chairs_only",
    "already",
    "untitled",
    "too_many",
    "agenda_usage",
    "extend_usage",
    "round_usage",
    "speaker_time",
    "turn_time",
    "ask_in_dm",
    "asked",
    "asked_waiting",
    "poll_usage",
    "vote_usage",
    "vote_question",
    "breakout_usage",
    "breakout_running",
    "breakout_none",
    "breakout_closed",
    "summary_usage",
    "auto_ended",
    *(f"method_{m}" for m in METHODS),
    *(
        f"{c}.help"
        for c in (
            "start",
            "end",
            "cochair",
            "agenda",
            "next",
            "ack",
            "extend",
            "lower",
            "round",
            "pass",
            "method",
            "ask",
            "questions",
            "approve",
            "reject",
            "poll",
            "vote",
            "breakout",
            "summary",
            "recall",
            "reflect",
        )
    ),
)


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("key", KEYS_WITHOUT_VALUES)
def test_every_text_renders(key: str, lang: str) -> None:
    body = Catalog().render(f"facilitation/{key}", lang).body
    assert body.strip()
    assert "{{" not in body
    assert "{%" not in body


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_methods_list_names_the_clubs_own_and_an_unknown_name(lang: str) -> None:
    plain = Catalog().render("facilitation/methods", lang, club=[], unknown=False).body
    assert "gratitude" not in plain
    club = [{"name": "gratitude", "title": "Благодарность"}]
    body = Catalog().render("facilitation/methods", lang, club=club, unknown=True).body
    assert "gratitude (Благодарность)" in body
    assert body.startswith(("Такого упражнения нет.", "There is no such exercise."))
    assert len(body) > len(plain)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_upvote_results_rank_the_questions(lang: str) -> None:
    results = [{"answer": "Как начать?", "votes": 3}, {"answer": "Когда звонить?", "votes": 1}]
    body = (
        Catalog()
        .render("facilitation/vote_results", lang, question="q", results=results, voters=3)
        .body
    )
    assert "1. Как начать? — 3" in body
    assert "2. Когда звонить? — 1" in body
    few = Catalog().render("facilitation/vote_few", lang, asked=1).body
    assert "1" in few
    assert "2" in few


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_status_shows_item_time_speaker_and_queue(lang: str) -> None:
    body = (
        Catalog()
        .render(
            "facilitation/status",
            lang,
            title="Клуб",
            item="Знакомство",
            number=1,
            items=2,
            left=7,
            speaker="anna",
            queue=[{"who": "boris", "direct": True}, {"who": "vera", "direct": False}],
            more=0,
            turn=None,
            turns_left=0,
            upcoming=["Разбор"],
        )
        .body
    )
    for part in ("Клуб", "Знакомство", "7", "anna", "boris", "vera", "Разбор"):
        assert part in body


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_minutes_have_every_tagged_line_and_nothing_else(lang: str) -> None:
    s = Session("$s", "Клуб", 0.0, USER)
    s.take_notes("болтовня\n#info A1\n#idea <b>B2</b>\n#action C3\n#решено D4\n#потом E5")
    s.take_notes("ещё болтовня")
    values = {"title": "Клуб", "date": "2026-12-06", "sections": minutes_sections(s.notes)}
    catalog = Catalog()
    html = catalog.render("facilitation/minutes", lang, **values)
    md = catalog.render("facilitation/minutes_md", lang, **values).body
    for text in (html.body, md):
        for part in ("A1", "B2", "C3", "D4", "E5"):
            assert part in text
        assert "болтовня" not in text
        assert "starter-canary" not in text
    assert "<b>B2</b>" not in html.html  # the words are escaped, not markup


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("sessions", [0, 2])
def test_the_asker_is_told_why_a_question_cannot_go(lang: str, sessions: int) -> None:
    assert Catalog().render("facilitation/ask_where", lang, sessions=sessions).body.strip()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_question_shows_only_its_words(lang: str) -> None:
    body = Catalog().render("facilitation/question", lang, text="Как начать?").body
    assert body.endswith("Как начать?")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_texts_of_approval(lang: str) -> None:
    catalog = Catalog()
    assert catalog.render("facilitation/approval", lang, on=True).body
    assert catalog.render("facilitation/approval", lang, on=False).body
    assert "7" in catalog.render("facilitation/no_such_question", lang, number=7).body
    waiting = catalog.render("facilitation/question_waiting", lang, number=3, text="Как?").body
    assert "3" in waiting
    assert "Как?" in waiting


class _Render:
    def render(self, key: str, lang: str | None, **values: object) -> object:
        return Catalog().render(key, lang, **values)


@pytest.mark.parametrize(
    ("text", "method"),
    [
        ("method listening", "listening"),
        ("Метод слушание", "listening"),
        ("метод роль", "roleplay"),
        ("method nothing", None),
        ("Listening practice", None),
        ("method listening twice", None),
    ],
)
def test_an_agenda_title_can_name_a_method(text: str, method: str | None) -> None:
    from clubs.bots.facilitation.methods import agenda_method

    assert agenda_method(text) == method


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("method", METHODS)
def test_a_method_item_is_titled_by_the_exercise(lang: str, method: str) -> None:
    from typing import cast

    from clubs.bots.context import BotContext
    from clubs.bots.facilitation.methods import builtin_title

    title = builtin_title(cast(BotContext, _Render()), method, lang)
    assert 3 <= len(title) <= 60
    assert "(" not in title
