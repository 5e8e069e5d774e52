"""A club's own check-in settings, as the provisioner writes them into the club settings state
(`checkins: {questions: [...], keep_days: N}` from the network file). Pure.

Room state can drift or be written by someone else with the power to, so it is read
defensively: anything that does not fit falls back to the defaults instead of failing a
check-in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_QUESTIONS = 3
"""Text questions after the mood poll (2–4 questions in all)."""
MAX_QUESTION_CHARS = 300
DEFAULT_KEEP_DAYS = 90
MIN_KEEP_DAYS, MAX_KEEP_DAYS = 7, 365


@dataclass(frozen=True)
class ClubCheckins:
    questions: tuple[str, ...] | None
    """The club's text questions; None: the default ones (templates, ru/en)."""
    keep_days: int


def club_checkins(settings: Mapping[str, Any]) -> ClubCheckins:
    conf = settings.get("checkins")
    if not isinstance(conf, Mapping):
        return ClubCheckins(None, DEFAULT_KEEP_DAYS)
    questions: tuple[str, ...] | None = None
    raw = conf.get("questions")
    if (
        isinstance(raw, list)
        and 1 <= len(raw) <= MAX_QUESTIONS
        and all(isinstance(q, str) and 0 < len(q.strip()) <= MAX_QUESTION_CHARS for q in raw)
    ):
        questions = tuple(q.strip() for q in raw)
    keep = conf.get("keep_days")
    keep_days = (
        keep
        if isinstance(keep, int)
        and not isinstance(keep, bool)
        and MIN_KEEP_DAYS <= keep <= MAX_KEEP_DAYS
        else DEFAULT_KEEP_DAYS
    )
    return ClubCheckins(questions, keep_days)
