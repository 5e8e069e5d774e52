"""Named kill points for crash-safety tests: `CLUBS_CRASH_AT=<name>[:<n>]`.

When the variable names a point, the process exits with status 137 (as if SIGKILLed) the n-th
time (default: first) execution reaches it — no cleanup, no flush, exactly like a power cut.
Production never sets the variable; the check is one dictionary lookup.
"""

from __future__ import annotations

import os
from collections import Counter

ENV = "CLUBS_CRASH_AT"
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
