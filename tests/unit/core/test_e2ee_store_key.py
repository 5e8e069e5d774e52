"""The crypto store key check, without a server."""

from __future__ import annotations

import secrets

import pytest

from clubs.core.e2ee import StoreError, check_pickle_key


@pytest.mark.parametrize("key", [None, "", "   ", "DEFAULT_KEY", "x" * 31])
def test_weak_store_keys_are_refused(key: str | None) -> None:
    with pytest.raises(StoreError, match="crypto store key"):
        check_pickle_key(key)


def test_a_random_key_is_accepted() -> None:
    key = secrets.token_urlsafe(32)
    assert check_pickle_key(key) == key
