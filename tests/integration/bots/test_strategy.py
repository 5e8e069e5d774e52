"""Cohort members' strategies on the facilitation bot (built by the shipped catalog, so with
its real wiring), against the real Synapse with independent member clients (mautrix,
cross-signed): a cohort member keeps a strategy for one person in a DM, logs three
conversations and gets the progress chart as an encrypted m.image whose decrypted bytes are a
valid PNG; a club member outside the cohort is refused and cannot read a shared strategy with
its code; the cohort's facilitator reads it once shared, and after `!strategy unshare` the view
is redacted and the code opens nothing. The organisers' counts are suppressed while fewer than
three members updated (two more members' updates are put into the bot's own store, as their
commands would). The weekly nudge comes once when the manual clock reaches it. The member's
export and forgetting go through the part's `MemberData` methods. A canary label and goal are
in no log record and no file, and the strategies' rows carry no user id.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import struct
import zlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clubs.bots.base import Bot, handler_objects
from clubs.bots.catalog import default_factories
from clubs.bots.host import BotFactory, HostServices
from clubs.bots.jobs import JobContext
from clubs.bots.runtime import RuntimeSettings
from clubs.bots.strategy.chart import HEIGHT, WIDTH
from clubs.bots.strategy.strategies import NUDGE, Strategies, month_of
from clubs.core.clock import ManualClock
from clubs.core.http import path
from clubs.core.ids import RoomId, UserId
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    bot_host,
    create_bot_account,
    joined,
    managed_room,
    new_network,
    open_dm,
    send_text,
)
from tests.mautrix_client import MautrixPeer, Received, mautrix_peer

LABEL = f"тётя-{secrets.token_hex(4)}"
CANARY = f"canary-{secrets.token_hex(8)}"
START = datetime(2026, 12, 7, 10, tzinfo=UTC).timestamp()  # Monday 7 December 2026
WEEK = 7 * 24 * 3600.0


def factory(holder: list[Bot]) -> BotFactory:
    def make(services: HostServices) -> Bot:
        bot = default_factories()["facilitation"](services)
        holder.append(bot)
        return bot

    return make


def from_bot(peer: MautrixPeer, bot: str, room: str, prefix: str = "") -> list[Received]:
    return [
        r
        for r in peer.received
        if r.sender == bot and r.room_id == room and r.body.startswith(prefix)
    ]


async def said(peer: MautrixPeer, bot: str, room: str, prefix: str, n: int = 1) -> list[str]:
    async def probe() -> list[str]:
        found = [r.body for r in from_bot(peer, bot, room, prefix)]
        return found if len(found) >= n else []

    return await eventually(probe, within=30)


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """The chunks of a PNG, each CRC checked; the signature first."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, kind
        out.append((kind, data))
        pos += 12 + length
    return out


def files_containing(root: Path, needle: bytes) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


@contextlib.asynccontextmanager
async def peers(accounts: Sequence[Account], url: str) -> AsyncIterator[list[MautrixPeer]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(mautrix_peer(a, url)) for a in accounts]


async def test_a_cohort_members_strategy_chart_sharing_counts_nudge_and_forgetting(
    synapse: SynapseHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "facilitation")
    bot_user = account.user_id
    member = await synapse.new_user("mem")
    facilitator = await synapse.new_user("fac")
    outsider = await synapse.new_user("out")
    cohort = await managed_room(
        synapse,
        network,
        invite=[bot_user, member.user_id, facilitator.user_id],
        key="chat",
        club="almaty",
        cohort="spring",
        language="ru",
        powers={facilitator.user_id: 50},
    )
    sessions = await managed_room(
        synapse,
        network,
        invite=[bot_user, outsider.user_id, facilitator.user_id],
        key="sessions",
        club="almaty",
        language="ru",
        powers={facilitator.user_id: 50},
    )
    for person, room in ((member, cohort), (facilitator, cohort), (outsider, sessions)):
        await person.http.post(path(*CS, "join", room), {})

    clock = ManualClock(start=START)
    holder: list[Bot] = []
    async with (
        bot_host(
            synapse,
            tmp_path,
            [account],
            {"facilitation": factory(holder)},
            network=network,
            clock=clock,
            settings=RuntimeSettings(sync_timeout_ms=1000, commands_per_window=100),
        ) as host,
        peers([member, facilitator, outsider], synapse.url) as (mem, fac, out),
    ):
        (bot,) = holder
        strategies = next(h for h in handler_objects(bot) if isinstance(h, Strategies))
        ctx = host.runtime("facilitation").ctx
        await eventually(lambda: joined(member, cohort, bot_user), within=20)
        await eventually(lambda: joined(outsider, sessions, bot_user), within=20)
        mem_dm = await open_dm(member, bot_user)
        fac_dm = await open_dm(facilitator, bot_user)
        out_dm = await open_dm(outsider, bot_user)

        # Outside the cohort: refused, nothing kept.
        await send_text(out, out_dm, "!strategy add mother")
        await said(out, bot_user, out_dm, "Личная стратегия — для участников учебных групп")

        # The member's strategy: a person by label, a goal, three conversations, a bad entry.
        await send_text(mem, mem_dm, f"!стратегия добавить {LABEL}")
        await said(mem, bot_user, mem_dm, f"Добавлено: 1. {LABEL}")
        await send_text(mem, mem_dm, f"!стратегия цель 1 задать два открытых вопроса {CANARY}")
        await said(mem, bot_user, mem_dm, "Сохранено: Цель")
        for entry in ("2 2026-10-05", "3 2026-11-02 спросила про новости", "4"):
            await send_text(mem, mem_dm, f"!стратегия запись 1 {entry}")
        await send_text(mem, mem_dm, "!стратегия запись 1 9")
        await said(mem, bot_user, mem_dm, "Записано", 3)
        await said(mem, bot_user, mem_dm, "Не получилось: после номера — ощущение от 1 до 5")
        store = await strategies.store(ctx)
        (kept_person,) = await store.people(member.user_id)
        assert len(await store.entries(member.user_id, kept_person)) == 3

        # The chart: an m.image whose file is encrypted; decrypted, a valid PNG.
        await send_text(mem, mem_dm, "!стратегия график 1")
        (summary,) = await said(mem, bot_user, mem_dm, "График выше")
        assert "2, 3, 4" in summary
        (image,) = [r for r in from_bot(mem, bot_user, mem_dm) if r.msgtype == "m.image"]
        content = image.content
        assert "url" not in content
        assert content["info"]["mimetype"] == "image/png"
        assert (content["info"]["w"], content["info"]["h"]) == (WIDTH, HEIGHT)
        ciphertext, png = await mem.download_encrypted(content["file"])
        assert ciphertext[:8] != png[:8]
        chunks = png_chunks(png)
        assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
        assert struct.unpack(">II", chunks[0][1][:8]) == (WIDTH, HEIGHT)
        assert len(zlib.decompress(chunks[1][1])) == HEIGHT * (1 + 3 * WIDTH)

        # Counts: one member updated this month, so the cohort's cell is suppressed; the
        # outsider (no facilitator) may not ask.
        await send_text(fac, cohort, "!стратегия итоги")
        (hidden,) = await said(fac, bot_user, cohort, "Обновления стратегий")
        assert "группа spring: меньше 3 участников" in hidden
        assert "всего — скрыто" in hidden
        await send_text(out, out_dm, "!strategy stats")
        await said(out, bot_user, out_dm, "Итоги по стратегиям видят только ведущие")
        month = month_of(clock.now())
        for n, other in enumerate(("@a:elsewhere", "@b:elsewhere")):
            await store.record_update(other, "almaty", "spring", month, source=f"$seed{n}")
        await send_text(fac, fac_dm, "!стратегия итоги")
        (shown,) = await said(fac, bot_user, fac_dm, "Обновления стратегий")
        assert "группа spring: 7 от 3" in shown  # the member's 5 (add, goal, 3 logs) + 2
        assert LABEL not in shown
        assert CANARY not in shown

        # Sharing: only the cohort's facilitator, only by the member's command, revocable.
        await send_text(mem, mem_dm, f"!стратегия поделиться 1 {outsider.user_id}")
        await said(mem, bot_user, mem_dm, f"{outsider.user_id} не ведёт вашу группу")
        await send_text(mem, mem_dm, "!стратегия поделиться 1")
        await said(mem, bot_user, mem_dm, f"Готово: {facilitator.user_id} может прочитать")
        (notice,) = await said(fac, bot_user, fac_dm, member.user_id)
        match = re.search(r"читать ([0-9a-f]{6})", notice)
        assert match is not None
        code = match.group(1)
        assert CANARY not in notice
        await send_text(out, out_dm, f"!strategy read {code}")
        await said(out, bot_user, out_dm, "Такой стратегии, открытой для вас, нет")
        await send_text(fac, fac_dm, f"!стратегия читать {code}")
        (view,) = await said(fac, bot_user, fac_dm, f"Стратегия {member.user_id}")
        assert CANARY in view
        assert "4/5" in view
        view_id = next(r.event_id for r in from_bot(fac, bot_user, fac_dm, "Стратегия "))
        assert not any(CANARY in r.body for r in out.received)

        # The member leaves the cohort: the facilitator can no longer read it; the member can
        # still take it back (and keeps their own data).
        await member.http.post(path(*CS, "rooms", cohort, "leave"), {})

        async def gone_from_cohort() -> bool:
            return member.user_id not in await ctx.client.members(RoomId(cohort))

        await eventually(gone_from_cohort, within=20)
        await send_text(fac, fac_dm, f"!стратегия читать {code}")
        await said(fac, bot_user, fac_dm, "Такой стратегии, открытой для вас, нет")
        await send_text(mem, mem_dm, "!стратегия отозвать 1")
        await said(mem, bot_user, mem_dm, "Доступ ведущего к стратегии 1 отозван")
        await said(fac, bot_user, fac_dm, f"{member.user_id} отозвал(а) доступ")

        async def redacted() -> bool:
            event = await facilitator.http.get(path(*CS, "rooms", fac_dm, "event", view_id))
            return not event.get("content") and "redacted_because" in event.get("unsigned", {})

        await eventually(redacted, within=20)
        await send_text(fac, fac_dm, f"!стратегия читать {code}")
        await said(fac, bot_user, fac_dm, "Такой стратегии, открытой для вас, нет", 2)
        # Back in the cohort (as the provisioner re-invites a declared member).
        await synapse.admin.http.post(
            path(*CS, "rooms", cohort, "invite"), {"user_id": member.user_id}
        )
        await member.http.post(path(*CS, "join", cohort), {})

        async def back_in_cohort() -> bool:
            return member.user_id in await ctx.client.members(RoomId(cohort))

        await eventually(back_in_cohort, within=20)

        # The weekly nudge: once, a week later; the next one is stored with it.
        await send_text(mem, mem_dm, "!стратегия напоминание вкл")
        await said(mem, bot_user, mem_dm, "Хорошо: раз в неделю")
        (job,) = await ctx.jobs.pending(NUDGE)
        assert job.due_at == START + WEEK
        await clock.set(START + WEEK)
        (nudge,) = await said(mem, bot_user, mem_dm, "Неделя прошла")
        assert LABEL in nudge

        async def chained() -> bool:
            return [j.due_at for j in await ctx.jobs.pending(NUDGE)] == [START + 2 * WEEK]

        await eventually(chained, within=20)
        # The job run again, as after a crash between its send and its completion: the same
        # transaction id, so the member still has one nudge.
        await strategies.nudge(JobContext(ctx, job, START + WEEK, False))
        # (A second nudge would arrive before the answer to this.)
        await send_text(mem, mem_dm, "!стратегия")
        await said(mem, bot_user, mem_dm, "Ваша стратегия:")
        assert len(from_bot(mem, bot_user, mem_dm, "Неделя прошла")) == 1
        # Nothing of it is said in a room, not even to its owner.
        await send_text(mem, cohort, "!стратегия 1")
        await said(mem, bot_user, cohort, "Стратегия ведётся только в личных сообщениях")

        # Export and forgetting, through the part's MemberData methods.
        exported = await strategies.export(ctx, UserId(member.user_id))
        (kept,) = exported["people"]
        assert kept["label"] == LABEL
        assert CANARY in kept["goal"]
        assert [e["progress"] for e in kept["log"]] == [2, 3, 4]
        assert exported["nudge"] is True
        markdown = strategies.export_markdown(exported, "ru")
        assert markdown.startswith("## Стратегии")
        assert "2026-10-05 · 2/5" in markdown
        assert await strategies.forget(ctx, UserId(member.user_id)) == 4
        assert await store.people(member.user_id) == []
        assert await ctx.jobs.pending(NUDGE) == []
        owner = store.owner(member.user_id)
        for table in ("st_members", "st_people", "st_entries", "st_shares", "st_updates"):
            rows = await store.db.fetchall(f"SELECT * FROM {table}")  # noqa: S608 - constants
            text = " ".join(str(tuple(r)) for r in rows)
            assert owner not in text, table
            assert member.user_id not in text, table
            assert facilitator.user_id not in text, table
        host.check_alive()

    ours = [r for r in caplog.records if not r.name.startswith("mau")]
    assert ours, "the bot logged nothing at DEBUG"
    for record in ours:
        line = record.getMessage()
        assert CANARY not in line, record.name
        assert LABEL not in line, record.name
    assert files_containing(tmp_path, CANARY.encode()) == []
    assert files_containing(tmp_path, LABEL.encode()) == []
