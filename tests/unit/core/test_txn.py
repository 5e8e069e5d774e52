from __future__ import annotations

import re

import pytest

from clubs.core.txn import txn_id


def test_the_same_job_gets_the_same_id() -> None:
    assert txn_id("reply", "$event") == txn_id("reply", "$event")


def test_the_id_is_fixed_across_releases() -> None:
    # Changing this breaks deduplication of sends retried across an upgrade.
    assert txn_id("reply", "$event") == "4d893e7d-a5b4-5b8b-8ad3-d0e5fd22016f"


def test_different_jobs_get_different_ids() -> None:
    ids = {
        txn_id("reply", "$a"),
        txn_id("reply", "$b"),
        txn_id("react", "$a"),
        txn_id("a/b", "c"),
        txn_id("a", "b/c"),
        txn_id("a", "b", "c"),
        txn_id("schedule-1", "2026-03-12T18:30:00+05:00", "reminder"),
        txn_id("schedule-1", "2026-03-12T18:30:00+05:00", "announce"),
    }
    assert len(ids) == 8


def test_the_id_is_url_safe() -> None:
    for parts in (("reply", "$ev/../?#%"), ("\ud800", "ключ"), ("",)):
        assert re.fullmatch(r"[0-9a-f-]{36}", txn_id(*parts))


def test_an_id_needs_a_part() -> None:
    with pytest.raises(ValueError, match="at least one part"):
        txn_id()
