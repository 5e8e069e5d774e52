"""Named kill points for crash-safety tests: `CLUBS_CRASH_AT=<name>[:<n>]`.

When the variable names a point, the process exits with status 137 (as if SIGKILLed) the n-th
time (default: first) execution reaches it — no cleanup, no flush, exactly like a power cut.
Production never sets the variable; the check is one dictionary lookup.

`CLUBS_STORE_FAULT=<file>` makes every database write of the process fail as on a full disk
for as long as `<file>` exists (a storage fault a test can switch on and off from outside).
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter

ENV = "CLUBS_CRASH_AT"
STORE_FAULT_ENV = "CLUBS_STORE_FAULT"
_hits: Counter[str] = Counter()


def crashpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] >= (int(nth) if nth.isdigit() else 1):
        os._exit(137)


def store_fault() -> None:
    """Raise as SQLite does on a full disk while the `CLUBS_STORE_FAULT` file exists."""
    flag = os.environ.get(STORE_FAULT_ENV)
    if flag and os.path.exists(flag):
        raise sqlite3.OperationalError("database or disk is full (CLUBS_STORE_FAULT)")
