"""Every strategies text renders in Russian and English with the values the code passes."""

from __future__ import annotations

from typing import Any

import pytest

from clubs.core.i18n import Catalog

FIELDS = {"goal": "цель", "works": "", "avoid": "споры", "next": "позвонить"}
ENTRIES = [{"date": "2026-12-01", "level": 4, "note": "спросила"}]
VALUES: dict[str, dict[str, Any]] = {
    "strategy.help": {},
    "field": {"field": "avoid"},
    "help": {},
    "usage": {"problem": "label_long", "limit": 40, "word": "x"},
    "dm_only": {},
    "not_member": {},
    "no_person": {"n": 3},
    "saved": {"n": 1, "field": "next"},
    "deleted": {"n": 1, "label": "мама"},
    "unshared": {"n": 1, "count": 1},
    "list": {
        "people": [{"n": 1, "label": "мама", "entries": 3, "last": "2026-12-01", "shared": True}],
        "nudge": False,
    },
    "too_many": {"limit": 20},
    "too_many_entries": {"limit": 500},
    "added": {"n": 1, "label": "мама"},
    "show": {
        "n": 1,
        "label": "мама",
        "fields": FIELDS,
        "entries": ENTRIES,
        "total": 7,
        "shared_with": [],
    },
    "logged": {"n": 1, "label": "мама", "day": "2026-12-01", "level": 4, "total": 2},
    "no_entries": {"n": 1},
    "chart": {
        "n": 1,
        "label": "мама",
        "total": 2,
        "first": "2026-11-01",
        "last": "2026-12-01",
        "levels": [3, 4],
    },
    "nudge_set": {"on": True},
    "nudge": {"people": [{"n": 1, "label": "мама", "next": "позвонить"}]},
    "not_facilitator": {"user": "@x:example.org"},
    "which_facilitator": {"facilitators": ["@a:example.org", "@b:example.org"]},
    "shared_out": {"n": 1, "label": "мама", "user": "@a:example.org"},
    "shared_in": {"member": "@m:example.org", "label": "мама", "code": "3fa9c1"},
    "shared_list": {"shares": [{"code": "3fa9c1", "member": "@m:example.org", "label": "мама"}]},
    "no_share": {},
    "view": {
        "member": "@m:example.org",
        "label": "мама",
        "fields": FIELDS,
        "entries": ENTRIES,
        "total": 1,
    },
    "redact_reason": {},
    "revoked_in": {"member": "@m:example.org"},
    "stats_refused": {},
    "stats": {
        "clubs": ["almaty"],
        "figures": [
            {
                "club": "almaty",
                "month": "2026-12",
                "cohorts": [{"cohort": "spring", "updates": 9, "people": 3}],
                "total": 9,
                "people": 3,
            }
        ],
    },
    "export": {"people": [], "nudge": False},
    "forgotten": {"n": 4},
}


def test_every_text_is_covered_here() -> None:
    names = Catalog().keys()
    keys = {k.removeprefix("strategy/") for k in names if k.startswith("strategy/")}
    assert keys == set(VALUES)


@pytest.mark.parametrize("key", sorted(VALUES))
def test_renders_in_both_languages(key: str) -> None:
    catalog = Catalog()
    ru = catalog.render(f"strategy/{key}", "ru", **VALUES[key]).body
    en = catalog.render(f"strategy/{key}", "en", **VALUES[key]).body
    assert ru.strip()
    assert en.strip()
    assert ru != en
