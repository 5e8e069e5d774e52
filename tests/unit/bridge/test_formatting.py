"""Matrix messages as Telegram HTML: escaping, the 4,096-character split, no history, no ids."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clubs.bridge.formatting import (
    LIMIT,
    clean_name,
    matrix_edit,
    split,
    strip_reply_fallback,
    telegram_name,
    to_telegram,
    utf16_len,
)
from tests.faketelegram import parse_html


def test_name_in_bold_and_text_escaped() -> None:
    parts = to_telegram("Анна <admin>", {"msgtype": "m.text", "body": "a < b && c > d <b>x</b>"})
    assert parts == ["<b>Анна &lt;admin&gt;</b>: a &lt; b &amp;&amp; c &gt; d &lt;b&gt;x&lt;/b&gt;"]
    assert parse_html(parts[0]) == "Анна <admin>: a < b && c > d <b>x</b>"


def test_an_emote_reads_as_an_action() -> None:
    assert to_telegram("Анна", {"msgtype": "m.emote", "body": "машет"}) == ["* <b>Анна</b> машет"]


def test_what_is_not_text_is_not_relayed() -> None:
    assert to_telegram("A", {"msgtype": "m.image", "body": "IMG_0001.jpg"}) is None
    assert to_telegram("A", {"msgtype": "m.text", "body": "   "}) is None
    assert to_telegram("A", {"msgtype": "m.text"}) is None


def test_a_long_message_is_split_at_4096_characters_nothing_lost() -> None:
    body = ("слово " * 2000).strip()
    parts = to_telegram("Анна", {"msgtype": "m.text", "body": body})
    assert parts is not None
    assert len(parts) == 3
    texts = [parse_html(p) for p in parts]
    assert all(utf16_len(t) <= LIMIT for t in texts)
    assert "".join(texts) == "Анна: " + body
    assert all(t.endswith(" ") for t in texts[:-1])  # cut between words


def test_split_never_breaks_a_surrogate_pair() -> None:
    text = "😀" * 3000  # two UTF-16 units each
    parts = split(text)
    assert [utf16_len(p) for p in parts] == [4096, 1904]
    assert "".join(parts) == text


@given(st.text(min_size=0, max_size=300), st.integers(min_value=2, max_value=40))
def test_split_keeps_every_character_within_the_limit(text: str, limit: int) -> None:
    parts = split(text, limit)
    assert "".join(parts) == text
    assert all(utf16_len(p) <= limit for p in parts)


def test_a_reply_leaves_its_quote_of_history_and_the_quoted_id_behind() -> None:
    content = {
        "msgtype": "m.text",
        "body": "> <@boris:club.example> старое сообщение\n> вторая строка\n\nответ",
        "m.relates_to": {"m.in_reply_to": {"event_id": "$old"}},
    }
    assert to_telegram("Анна", content) == ["<b>Анна</b>: ответ"]
    assert strip_reply_fallback("no quote") == "no quote"


def test_names_are_one_line_and_short() -> None:
    assert clean_name("  Анна\n\u202eПетрова  ") == "Анна Петрова"
    assert len(clean_name("я" * 500)) == 64
    assert clean_name("\n") == "?"
    assert telegram_name({"first_name": "Иван", "last_name": "П."}) == "Иван П. (Telegram)"
    assert telegram_name({"id": 5}) == "Telegram (Telegram)"


def test_an_edit_replaces_the_original() -> None:
    edit = matrix_edit("$orig", "новый текст")
    assert edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$orig"}
    assert edit["m.new_content"]["body"] == "новый текст"
    assert edit["m.mentions"] == {}
