from __future__ import annotations

import pytest

from tests.integration.bots.support import fixed_master_key


@pytest.fixture(autouse=True)
def _master_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bot test gets its own vault key from the environment (no key file on disk)."""
    fixed_master_key(monkeypatch)
