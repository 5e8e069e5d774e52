"""Durable jobs across kills: every job's notice reaches the room exactly once.

The job bot (`jobbot.py`, hosted by `botproc.py --bot jobs`) answers `!remind <n>` by
scheduling n jobs due a second or two later; each posts one notice with a txn id from
`ctx.txn(...)`. The bot process is killed ten times across restarts at each of the jobs'
kill points — a job claimed but not run (`job_claimed`), a job's notice sent but not marked
sent (`after_send`), a job completed (`job_completed`) — while a member keeps asking for
reminders, some while the bot is down. After a final clean run every job's notice is in the
room once: counted by text as the independent cross-signed-only client decrypts them, and as
raw events on the server (so a duplicate nobody could decrypt would still be caught).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from clubs.core.http import path
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.jobbot import label_of, notice_text
from tests.integration.bots.support import (
    CS,
    BotProcess,
    bot_process,
    create_bot_account,
    device_count,
    joined,
    managed_room,
    new_network,
    send_text,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer

KILLS_PER_POINT = 10
JOBS_PER_COMMAND = 3
"""At least as many as the highest n in `<point>:<n>`: every run reaches its kill point."""


async def raw_bot_events(member: Account, room_id: str, bot_user: str) -> int:
    """How many message events the bot has in the room, straight from the server."""
    count, token = 0, None
    while True:
        query = {"dir": "b", "limit": "500"} | ({"from": token} if token else {})
        page = await member.http.get(path(*CS, "rooms", room_id, "messages"), query=query)
        count += sum(
            1
            for e in page.get("chunk", [])
            if e.get("sender") == bot_user
            and e.get("type") in ("m.room.encrypted", "m.room.message")
        )
        token = page.get("end")
        if not token or not page.get("chunk"):
            return count


class Member:
    """The member who keeps asking for reminders; knows which notices must come."""

    def __init__(self, peer: MautrixPeer, room_id: str) -> None:
        self.peer = peer
        self.room_id = room_id
        self.expected: list[str] = []

    async def remind(self) -> None:
        event_id = await send_text(self.peer, self.room_id, f"!remind {JOBS_PER_COMMAND}")
        self.expected += [notice_text(label_of(event_id, i)) for i in range(JOBS_PER_COMMAND)]

    def notices(self, bot_user: str) -> Counter[str]:
        return Counter(
            r.body
            for r in self.peer.received
            if r.room_id == self.room_id and r.sender == bot_user and r.msgtype == "m.notice"
        )

    async def wait_all(
        self, bot_user: str, within: float, bp: BotProcess | None = None
    ) -> Counter[str]:
        async def done() -> Counter[str]:
            counts = self.notices(bot_user)
            return counts if all(counts[t] for t in self.expected) else Counter()

        try:
            return await eventually(done, within=within, interval=0.1)
        except AssertionError:
            counts = self.notices(bot_user)
            missing = [t for t in self.expected if not counts[t]]
            raise AssertionError(
                f"{len(missing)} of {len(self.expected)} notices missing; undecryptable at the "
                f"peer: {len(self.peer.undecryptable)}"
                + (f"\n{what_the_bot_has(bp, missing)}" if bp is not None else "")
            ) from None


def what_the_bot_has(bp: BotProcess, missing: list[str]) -> str:
    """For a failure: the missing jobs' rows, the outbox rows not sent, the log's warnings."""
    db = bp.var_dir / "bots" / "bots.db"
    lines = []
    if db.exists():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            keys = [t.removeprefix("Reminder ") for t in missing]
            marks = ", ".join("?" for _ in keys)
            lines += [
                f"job {row}"
                for row in conn.execute(
                    "SELECT key, state, attempts, due_at, not_before, updated_at FROM jobs "  # noqa: S608
                    f"WHERE key IN ({marks})",
                    keys,
                )
            ]
            lines += [
                f"outbox {row}"
                for row in conn.execute(
                    "SELECT txn_id, state, attempts, created_at, next_try_at, last_error "
                    "FROM outbox WHERE state != 'sent'"
                )
            ]
        finally:
            conn.close()
    if bp.log_file.exists():
        lines += [
            line
            for line in bp.log_text().splitlines()
            if " WARNING " in line or " ERROR " in line or "clubs.bots.jobs" in line
        ][-40:]
    return "\n".join(lines)


@pytest.mark.parametrize("point", ["job_claimed", "after_send", "job_completed"])
async def test_every_job_posts_its_notice_exactly_once_across_kills(
    synapse: SynapseHarness, tmp_path: Path, point: str
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "jobs")
    member_account = await synapse.new_user("member")
    room = await managed_room(synapse, network, invite=[account.user_id, member_account.user_id])
    await member_account.http.post(path(*CS, "join", room), {})
    bot = account.user_id
    async with (
        bot_process(
            synapse.url, tmp_path, [account], network, synapse.admin.user_id, bot="jobs"
        ) as bp,
        mautrix_peer(member_account, synapse.url) as peer,
    ):
        member = Member(peer, room)
        # A first clean run: the bot joins, takes its sync position and shares its keys.
        await bp.start()
        await bp.wait_ready()
        await eventually(lambda: joined(member_account, room, bot), within=20)
        await member.remind()
        await member.wait_all(bot, within=30)
        await bp.stop()

        await crash_runs(bp, member, point)

        await bp.start()  # the final run, with no kill point
        await bp.wait_ready()
        await member.remind()
        counts = await member.wait_all(bot, within=60, bp=bp)
        await bp.stop()

    dup = {t: n for t, n in counts.items() if n > 1}
    miss = [t for t in member.expected if counts[t] == 0]
    assert (dup, miss) == ({}, [])
    assert sum(counts.values()) == len(member.expected)  # nothing besides the expected notices
    assert await raw_bot_events(member_account, room, bot) == len(member.expected)
    assert peer.undecryptable == []
    assert await device_count(synapse.url, tmp_path, bot) == 1


async def crash_runs(bp: BotProcess, member: Member, point: str) -> None:
    """Ten runs, each ending at the kill point: reminders are asked for while the bot is down
    (its first sync after the restart carries the command) and while it starts."""
    for i in range(KILLS_PER_POINT):
        await member.remind()
        await bp.start(crash_at=f"{point}:{1 + i % 3}")
        if i % 2:
            await member.remind()
        code = await bp.wait_exit(within=30)
        assert code == 137, f"run {i} ended with {code}, not at {point}; {bp}"
