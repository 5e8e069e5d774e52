"""Calendar links: the same command always gives the same link (a replay after a crash hands
out the link the member already got), another command or another key a different one; the
store keeps only a hash."""

from __future__ import annotations

from clubs.bots.scheduling.feed import TOKEN, token_for, token_hash


def test_a_link_is_fixed_by_the_command_and_the_key_and_unguessable_without_the_key() -> None:
    key, other = b"k" * 32, b"o" * 32
    first = token_for(key, "$command1")
    assert first == token_for(key, "$command1")
    assert first != token_for(key, "$command2")
    assert first != token_for(other, "$command1")
    assert TOKEN.fullmatch(first)
    assert len(token_hash(first)) == 64
    assert first not in token_hash(first)
