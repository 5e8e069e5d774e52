"""Every text a person reads: jinja2 templates in ru and en under `config/templates/`.

A text is named by a key such as `bots/ping` and written once per language, side by side:

    config/templates/bots/ping.ru.txt.j2      plain text (newlines kept)
    config/templates/bots/ping.en.txt.j2
    config/templates/bots/help.ru.html.j2     HTML (autoescaped; the plain body is derived)
    config/templates/bots/help.en.html.j2

`.txt` templates render without escaping; their HTML twin is the escaped text with `<br>`.
`.html` templates render with autoescape, are sanitised to the spec's tags, and their plain
twin comes from `to_plain`. Values are data, never template source; the environments are
sandboxed. Unknown languages fall back to Russian. `Catalog.check()` (or `check_templates()`)
at start-up reports every key that lacks a language, every malformed file name and every
template that does not compile, in one error.

Templates can call `t("other/key", ...)` to include another text, `plural(n, "one", "few",
"many")` (Russian rules; English uses the first two forms) and the filter
`instant|localtime(zone)` to show a UTC instant in a club's IANA zone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from clubs.core.errors import ClubsError
from clubs.core.html import Text, defuse_room_mention, sanitize, to_plain
from clubs.core.paths import config_dir

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "Catalog",
    "TemplateProblem",
    "Text",
    "check_templates",
    "pick_language",
]

LANGUAGES = ("ru", "en")
DEFAULT_LANGUAGE = "ru"
KINDS = ("html", "txt")
DATETIME_KEY = "core/datetime"


class TemplateProblem(ClubsError):
    """A template is missing, malformed or failed to render. Never carries the values."""


def pick_language(preferred: str | None) -> str:
    """`ru` or `en` from a tag like `en`, `en-GB`, `ru_RU`; anything else gives `ru`."""
    if not preferred:
        return DEFAULT_LANGUAGE
    primary = preferred.replace("_", "-").split("-")[0].lower()
    return primary if primary in LANGUAGES else DEFAULT_LANGUAGE


def plural_form(lang: str, n: int) -> int:
    """Index of the plural form: ru one/few/many (1, 2-4, 5-20...), en one/other."""
    if lang == "ru":
        if n % 10 == 1 and n % 100 != 11:
            return 0
        if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
            return 1
        return 2
    return 0 if n == 1 else 1


@dataclass(frozen=True)
class _File:
    name: str
    kind: str


def _scan(root: Path) -> tuple[dict[tuple[str, str], list[_File]], list[str]]:
    files: dict[tuple[str, str], list[_File]] = {}
    problems: list[str] = []
    for path in sorted(root.rglob("*.j2")):
        name = path.relative_to(root).as_posix()
        parts = name.removesuffix(".j2").rsplit(".", 2)
        if len(parts) != 3 or parts[1] not in LANGUAGES or parts[2] not in KINDS:
            problems.append(
                f"{name}: expected <key>.<language>.<kind>.j2 with language in "
                f"{', '.join(LANGUAGES)} and kind in {', '.join(KINDS)}"
            )
            continue
        key, lang, kind = parts
        files.setdefault((key, lang), []).append(_File(name, kind))
    return files, problems


class Catalog:
    """The texts under one templates directory (by default `config/templates`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else config_dir() / "templates"
        loader = jinja2.FileSystemLoader(self.root)
        self._html = ImmutableSandboxedEnvironment(
            loader=loader, autoescape=True, undefined=jinja2.StrictUndefined
        )
        self._text = ImmutableSandboxedEnvironment(
            loader=loader,
            autoescape=False,  # plain text; its HTML twin is escaped in render()
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        for env in (self._html, self._text):
            env.globals["t"] = self._include
            env.globals["plural"] = _plural
            env.filters["localtime"] = self._localtime
        self._files, self._problems = _scan(self.root)

    def keys(self) -> frozenset[str]:
        return frozenset(key for key, _ in self._files)

    def check(self, required: Iterable[str] = ()) -> None:
        """Raise TemplateProblem listing everything wrong: call it once at start-up.

        Every key must exist exactly once in every language and compile; `required` keys (the
        help keys of the commands, the texts the runtime sends) must exist.
        """
        if not self.root.is_dir():
            raise TemplateProblem(f"templates directory {self.root} does not exist")
        problems = list(self._problems)
        keys = self.keys()
        for key in sorted(keys | set(required) | {DATETIME_KEY}):
            for lang in LANGUAGES:
                found = self._files.get((key, lang), [])
                if not found:
                    problems.append(f"{key}: no {lang} text ({key}.{lang}.html.j2 or .txt.j2)")
                elif len(found) > 1:
                    problems.append(f"{key}: {lang} text exists as both .html.j2 and .txt.j2")
                else:
                    problems.extend(self._compile(found[0]))
        if problems:
            listing = "\n  ".join(problems)
            raise TemplateProblem(f"templates under {self.root}:\n  {listing}")

    def _compile(self, file: _File) -> list[str]:
        env = self._html if file.kind == "html" else self._text
        try:
            env.get_template(file.name)
        except jinja2.TemplateSyntaxError as e:
            return [f"{file.name}:{e.lineno}: {e.message}"]
        return []

    def render(self, key: str, lang: str | None, **values: Any) -> Text:
        """The text `key` in `lang` (or Russian), as plain body and sanitised HTML."""
        lang = pick_language(lang)
        found = self._files.get((key, lang), [])
        if len(found) != 1:
            raise TemplateProblem(f"no single template for {key!r} in {lang!r} under {self.root}")
        file = found[0]
        env = self._html if file.kind == "html" else self._text
        try:
            rendered = env.get_template(file.name).render(lang=lang, **values)
        except jinja2.TemplateError as e:
            raise TemplateProblem(f"{file.name}: {e.message}") from None
        if file.kind == "html":
            html = sanitize(rendered, allow_pills=True)
            return Text(to_plain(html), html)
        body = defuse_room_mention(rendered.strip())
        return Text(body, escape(body, quote=False).replace("\n", "<br>"))

    def format_time(self, instant: datetime, zone: str, lang: str | None) -> str:
        """`instant` (aware) as a person in `zone` reads it, e.g. `12 марта 2026, 18:30 (Almaty,
        UTC+5)`. Raises ValueError for a naive instant or an unknown zone."""
        if instant.tzinfo is None:
            raise ValueError("format_time needs an aware datetime (UTC)")
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}") from None
        local = instant.astimezone(tz)
        city = zone.rsplit("/", 1)[-1].replace("_", " ")
        return self.render(
            DATETIME_KEY, lang, at=local, city=city, offset=_utc_offset(local.utcoffset())
        ).body

    @jinja2.pass_context
    def _include(self, ctx: jinja2.runtime.Context, key: str, **values: Any) -> str:
        text = self.render(key, ctx["lang"], **values)
        return Markup(text.html) if ctx.eval_ctx.autoescape else text.body  # noqa: S704 - sanitised

    @jinja2.pass_context
    def _localtime(self, ctx: jinja2.runtime.Context, instant: datetime, zone: str) -> str:
        return self.format_time(instant, zone, ctx["lang"])


@jinja2.pass_context
def _plural(ctx: jinja2.runtime.Context, n: int, *forms: str) -> str:
    if not forms:
        return ""
    return forms[min(plural_form(ctx["lang"], n), len(forms) - 1)]


def _utc_offset(offset: timedelta | None) -> str:
    minutes = int((offset or timedelta()).total_seconds()) // 60
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "−"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


def check_templates(root: Path | None = None, required: Iterable[str] = ()) -> None:
    """Check the templates under `root` (default `config/templates`); see `Catalog.check`."""
    Catalog(root).check(required)
