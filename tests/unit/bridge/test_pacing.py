"""Pacing sends below Telegram's per-chat limit (a sliding 60-second window)."""

from __future__ import annotations

from clubs.bridge.pacing import Pacer


def test_twenty_a_minute_then_wait_for_the_oldest_to_leave_the_window() -> None:
    pacer = Pacer()
    for i in range(20):
        assert pacer.wait_for(-1, now=100.0 + i) == 0
        pacer.sent(-1, now=100.0 + i)
    assert pacer.wait_for(-1, now=125.0) == 35.0  # the first send (at 100) leaves at 160
    assert pacer.wait_for(-2, now=125.0) == 0  # another chat has its own count
    assert pacer.wait_for(-1, now=160.0) == 0
    pacer.sent(-1, now=160.0)
    assert pacer.wait_for(-1, now=160.5) == 0.5  # now the send at 101 is the oldest


def test_a_migrated_chat_keeps_its_count() -> None:
    pacer = Pacer(per_minute=2)
    pacer.sent(-5, now=0.0)
    pacer.sent(-5, now=1.0)
    pacer.moved(-5, -1005)
    assert pacer.wait_for(-1005, now=2.0) == 58.0
    assert pacer.wait_for(-5, now=2.0) == 0
