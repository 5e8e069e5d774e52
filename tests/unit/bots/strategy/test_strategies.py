"""The part's pure helpers and its place in `!export`: the MemberData protocol, the Markdown
section in both languages, the months the figures cover."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from clubs.bots.memberdata import MemberData
from clubs.bots.strategy.box import StrategyBox
from clubs.bots.strategy.strategies import Strategies, month_of, months_back, nudge_key
from clubs.core.clock import ManualClock
from clubs.core.db import Database

DATA = {
    "nudge": True,
    "people": [
        {
            "n": 2,
            "label": "мама",
            "goal": "задать два открытых вопроса",
            "works": "",
            "avoid": "спорить о цифрах",
            "next": "",
            "created": "2026-10-01",
            "log": [{"date": "2026-10-05", "progress": 2, "note": "коротко"}],
            "shared_with": ["@boris:club.example"],
        }
    ],
}


def at(year: int, month: int, day: int) -> float:
    return datetime(year, month, day, 12, tzinfo=UTC).timestamp()


async def test_the_part_is_member_data_and_exports_markdown(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "bots.db")
    try:
        part: MemberData = Strategies(db, StrategyBox(os.urandom(32)), ManualClock(start=0))
        assert part.part == "strategies"
        ru = part.export_markdown(DATA, "ru")
        en = part.export_markdown(DATA, "en")
    finally:
        await db.close()
    assert ru.startswith("## Стратегии")
    assert "### 2. мама" in ru
    assert "- Чего избегать: спорить о цифрах" in ru
    assert "- 2026-10-05 · 2/5 · коротко" in ru
    assert "- Видит ведущий: @boris:club.example" in ru
    assert en.startswith("## Strategies")
    assert "- What works: —" in en
    assert "Weekly nudge: on" in en


def test_months_cover_the_last_six_across_a_year() -> None:
    assert month_of(at(2026, 1, 31)) == "2026-01"
    assert months_back(at(2026, 1, 31), 6) == "2025-08"
    assert months_back(at(2026, 12, 1), 1) == "2026-12"


def test_a_nudge_key_names_the_token_version_and_week_only() -> None:
    assert nudge_key("ab12", 3, 7) == "ab12#v3@7"
