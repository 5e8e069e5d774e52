"""The sync filter a device asks for: narrowed timelines keep every other setting."""

from __future__ import annotations

from clubs.bridge.crypto import TIMELINE_TYPES
from clubs.core.e2ee import FIRST_SYNC_FILTER, SYNC_FILTER, TIMELINE_LIMIT, _sync_filter


def test_a_narrowed_timeline_keeps_the_limit_and_the_other_sections() -> None:
    narrowed = _sync_filter("s_1", TIMELINE_TYPES)
    timeline = narrowed["room"]["timeline"]
    assert timeline == {"limit": TIMELINE_LIMIT, "types": list(TIMELINE_TYPES)}
    assert "m.room.member" in timeline["types"]
    assert "m.room.message" not in timeline["types"]
    assert "m.room.encrypted" not in timeline["types"]
    for section in ("presence", "account_data"):
        assert narrowed[section] == SYNC_FILTER[section]
    assert narrowed["room"]["ephemeral"] == SYNC_FILTER["room"]["ephemeral"]
    assert "types" not in SYNC_FILTER["room"]["timeline"]  # the shared filter is not changed


def test_the_first_sync_and_an_unnarrowed_one_use_the_shared_filters() -> None:
    assert _sync_filter(None, TIMELINE_TYPES) is FIRST_SYNC_FILTER
    assert _sync_filter("s_1", None) is SYNC_FILTER
