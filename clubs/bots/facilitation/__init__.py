"""The facilitation bot: running a club session in a room (agenda, speaking queue, rounds,
tagged notes and minutes without names)."""
