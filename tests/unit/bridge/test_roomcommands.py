"""`!tg` parsing: what is a command (never relayed) and what is an ordinary message."""

from __future__ import annotations

from typing import Any

import pytest

from clubs.bridge import roomcommands


@pytest.mark.parametrize(
    ("body", "verb"),
    [
        ("!tg", "help"),
        ("  !TG  ", "help"),
        ("!tg help", "help"),
        ("!tg status", "status"),
        ("!tg Pause now", "pause"),
        ("!tg resume", "resume"),
        ("!tg frobnicate", "unknown"),
    ],
)
def test_commands(body: str, verb: str) -> None:
    assert roomcommands.parse({"msgtype": "m.text", "body": body}) == verb


@pytest.mark.parametrize(
    "content",
    [
        {"msgtype": "m.text", "body": "!tgx pause"},
        {"msgtype": "m.text", "body": "скажи !tg pause"},
        {"msgtype": "m.text", "body": ""},
        {"msgtype": "m.image", "body": "!tg pause"},
        {"msgtype": "m.text", "body": ["!tg"]},
        {"body": "!tg pause"},
    ],
)
def test_other_messages_are_not_commands(content: dict[str, Any]) -> None:
    assert roomcommands.parse(content) is None


def test_status_names_no_chat_and_says_the_state() -> None:
    on = roomcommands.status(mode="relay", paused=False, telegram_ok=True, encrypted=False)
    off = roomcommands.status(mode="mirror", paused=True, telegram_ok=False, encrypted=True)
    assert "both ways, on;" in on
    assert "encrypted" not in on
    assert "from Matrix to Telegram only, paused" in off
    assert "not answering" in off
    assert "leaves the encryption" in off


def test_what_each_command_decides() -> None:
    room = {"mode": "relay", "telegram_ok": True, "encrypted": False}
    refused = roomcommands.decide("pause", allowed=False, paused=False, **room)
    assert refused == roomcommands.Outcome(roomcommands.NOT_ALLOWED, False)
    paused = roomcommands.decide("pause", allowed=True, paused=False, **room)
    assert paused == roomcommands.Outcome(roomcommands.PAUSED, True, roomcommands.TELEGRAM_PAUSED)
    again = roomcommands.decide("pause", allowed=True, paused=True, **room)
    assert again == roomcommands.Outcome(roomcommands.PAUSED, True)  # Telegram told once
    resumed = roomcommands.decide("resume", allowed=True, paused=True, **room)
    assert resumed.paused is False
    assert resumed.tell_telegram == roomcommands.TELEGRAM_RESUMED
    status = roomcommands.decide("status", allowed=False, paused=True, **room)
    assert "paused by the moderators" in status.answer
    assert status.paused is True
    assert roomcommands.decide("unknown", allowed=False, paused=False, **room).answer == (
        roomcommands.HELP
    )
