from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clubs.core.html import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    MAX_DEPTH,
    Text,
    defuse_room_mention,
    mentions,
    notice_content,
    sanitize,
    to_plain,
)
from clubs.core.ids import UserId


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ("<script>alert(1)</script>hi", "hi"),
        ("<style>body{}</style>hi", "hi"),
        ('<img src="x" onerror="alert(1)">', "<img>"),
        (
            '<img src="mxc://server/media" alt="a" width="10" onload="x">',
            '<img src="mxc://server/media" alt="a" width="10">',
        ),
        ('<a href="javascript:alert(1)">x</a>', "<a>x</a>"),
        ('<a href="JaVaScRiPt&#58;alert(1)">x</a>', "<a>x</a>"),
        ('<a href=" javascript:alert(1)">x</a>', "<a>x</a>"),
        ('<a href="data:text/html,x">x</a>', "<a>x</a>"),
        ('<a href="/relative">x</a>', "<a>x</a>"),
        ('<a href="//evil.example">x</a>', "<a>x</a>"),
        ('<a href="ftp://x">x</a>', "<a>x</a>"),
        ('<a href="https://example.org/" target="_blank">x</a>', None),
        ('<a href="mailto:a@example.org">x</a>', None),
        ('<a href="matrix:r/club:example.org">x</a>', None),
        (
            '<a href="https://example.org/" onclick="x" style="color:red">x</a>',
            '<a href="https://example.org/">x</a>',
        ),
        ("<mx-reply><blockquote>quoted !ban</blockquote></mx-reply>reply", "reply"),
        ("<iframe src='https://x'></iframe><form><input></form>ok", "ok"),
        ("<!-- comment -->ok", "ok"),
        (
            '<span data-mx-spoiler="why" data-mx-color="#FF0000" class="x">s</span>',
            '<span data-mx-spoiler="why" data-mx-color="#FF0000">s</span>',
        ),
        ('<span data-mx-color="red;background:url(x)">s</span>', "<span>s</span>"),
        ('<font color="#00ff00" face="Comic">f</font>', '<font color="#00ff00">f</font>'),
        ('<code class="language-python evil">c</code>', '<code class="language-python">c</code>'),
        ('<ol start="3" type="a"><li>x</li></ol>', '<ol start="3"><li>x</li></ol>'),
        ("<details><summary>s</summary>d</details>", None),
        ("<table><tr><td>1</td></tr></table>", "<table><tbody><tr><td>1</td></tr></tbody></table>"),
        ("<b>1 &lt; 2 &amp; 3 &gt; 2</b>", None),
    ],
)
def test_the_sanitiser_keeps_the_spec_allow_list_only(dirty: str, clean: str | None) -> None:
    """`clean` None: the input is already clean and comes back unchanged."""
    expected = clean if clean is not None else dirty
    assert sanitize(dirty) == expected


def test_every_allowed_tag_survives() -> None:
    inline = ("del", "h1", "h6", "blockquote", "p", "sup", "sub", "b", "i", "u", "strong", "em")
    for tag in (*inline, "s", "strike", "pre", "div", "span", "code", "details", "summary"):
        assert sanitize(f"<{tag}>x</{tag}>") == f"<{tag}>x</{tag}>"
    assert sanitize("a<br>b<hr>") == "a<br>b<hr>"
    table = "<table><caption>c</caption><thead><tr><th>h</th></tr></thead></table>"
    assert sanitize(table) == table


def test_nesting_is_cut_at_the_spec_limit_keeping_the_text() -> None:
    html = sanitize("<b>" * 150 + "deep" + "</b>" * 150)
    assert html.count("<b>") == MAX_DEPTH == html.count("</b>")
    assert "deep" in html
    assert to_plain(html) == "deep"


def test_user_pills_are_unlinked_unless_allowed() -> None:
    pill = '<a href="https://matrix.to/#/@admin:example.org">Admin</a>'
    assert sanitize(pill) == "<a>Admin</a>"
    assert sanitize('<a href="https://matrix.to/#/%40admin:x">A</a>') == "<a>A</a>"
    assert sanitize('<a href="matrix:u/admin:example.org">A</a>') == "<a>A</a>"
    assert sanitize(pill, allow_pills=True) == pill


def test_at_room_is_defused_in_text_but_not_in_links() -> None:
    html = sanitize('<b>@room</b> @ROOM <a href="mailto:x@roomy.org">mail</a>')
    assert "@room" not in html.lower().replace('href="mailto:x@roomy.org"', "")
    assert 'href="mailto:x@roomy.org"' in html
    assert defuse_room_mention("hi @room and @Room!") == "hi @\u2060room and @\u2060Room!"
    assert "@room" not in to_plain("<b>@</b>room").lower()


def test_lone_surrogates_do_not_break_the_sanitiser() -> None:
    assert sanitize("a\ud800<b>b</b>") == "a?<b>b</b>"


def test_plain_twin_of_html() -> None:
    html = (
        "<p>Hello <b>world</b> &amp; <i>you</i></p><ul><li>one</li><li>two</li></ul>"
        '<ol start="3"><li>three</li></ol><p><a href="https://example.org">site</a><br>next</p>'
        "<pre>  code\n  block</pre>"
    )
    assert to_plain(html) == (
        "Hello world & you\n\n• one\n• two\n\n3. three\n\nsite (https://example.org)\nnext"
        "\n\n  code\n  block"
    )


def test_mentions_are_always_explicit_and_never_the_room() -> None:
    assert mentions() == {"user_ids": []}
    users = [UserId("@b:x"), UserId("@a:x"), UserId("@b:x")]
    assert mentions(users) == {"user_ids": ["@a:x", "@b:x"]}
    assert notice_content(Text("hi", "<b>hi</b>")) == {
        "msgtype": "m.notice",
        "body": "hi",
        "format": "org.matrix.custom.html",
        "formatted_body": "<b>hi</b>",
        "m.mentions": {"user_ids": []},
    }


TOKENS = [*"<>/=\"' abx&;#@", "room", "script", "img", "a href=", "javascript:", "onerror=", "b"]


class _Audit(HTMLParser):
    """Collects every tag and attribute a browser would see in sanitised output."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, "", None))
        self.seen.extend((tag, k, v) for k, v in attrs)


@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_sanitised_output_is_stable_and_only_allowed_markup(dirty: str) -> None:
    once = sanitize(dirty)
    assert sanitize(once) == once
    audit = _Audit()
    audit.feed(once)
    for tag, attr, value in audit.seen:
        assert tag in ALLOWED_TAGS
        assert not attr or attr in ALLOWED_ATTRIBUTES[tag]
        if attr == "href":
            assert (value or "").split(":")[0] in ("http", "https", "mailto", "matrix")
    assert "@room" not in to_plain(once).lower()


@given(st.text())
def test_any_text_is_sanitised_without_error(dirty: str) -> None:
    to_plain(sanitize(dirty)).encode("utf-8")
