"""A member's own data kept by one part of a bot, for `!export` and `!forget-me`.

One bot account can carry several parts (the facilitation bot carries sessions, the case library
and the cohort strategies, each a handler class registered with `Bot.register_handler_class`).
A member asks that account once: `!export` gathers every part's `export` into one encrypted
attachment, `!forget-me` calls every part's `forget` and tells the member what went, part by
part. A part that keeps nothing about a person is simply not listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from clubs.bots.context import BotContext
from clubs.core.ids import UserId


class MemberData(Protocol):
    """What one part of a bot keeps about a member."""

    part: str
    """Short stable name of the part (`cases`, `strategies`): the export's key and the template
    suffix of its line in the `!forget-me` reply."""

    async def export(self, bot: BotContext, user: UserId) -> Mapping[str, Any]:
        """Everything this part keeps about `user`, decrypted, as JSON-able data (the member's
        own words; never anyone else's)."""
        ...

    def export_markdown(self, data: Mapping[str, Any], lang: str) -> str:
        """The same data as readable Markdown in the member's language (a section, starting
        with a `## ` heading)."""
        ...

    async def forget(self, bot: BotContext, user: UserId) -> int:
        """Delete everything this part keeps about `user` (and undo what it posted for them,
        e.g. redact an anonymous case); return how many items went."""
        ...
