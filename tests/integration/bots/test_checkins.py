"""The check-ins bot as two clubs use it, against the real Synapse with independent member
clients (mautrix, cross-signed): a member in Almaty opts in from a DM, one in Berlin from the
club's support room, both for Thursday 19:00 their time. A manual clock walks through two
weeks across the late-October change of Berlin's clocks (25 October 2026): each gets exactly one
check-in per week at their local 19:00 (Almaty 14:00 UTC both weeks, Berlin 17:00 then 18:00
UTC). The Almaty member answers the mood poll from their own client and a question in words;
the Berlin member does not answer and gets one reminder, never two. The facilitator's figures
are suppressed (one answer). "I need support" without supporters gives the help contacts and
says so; once the facilitator volunteers, the member's chosen words reach them only after the
member confirms. A canary answer is in no log record and no file; after `!forget-me` no row of
the bot's tables mentions the member.

The members open their DM with the bot themselves (as Element users do) before the bot writes
to them: a first DM into a room the bot has just created, while the member is still only
invited, can be undecryptable at the member (a known runtime finding, fixed elsewhere).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from mautrix.types import EventType, MessageType, RoomID, TextMessageEventContent

from clubs.bots.checkins.bot import CHECKIN, CheckinsBot
from clubs.bots.checkins.box import Box
from clubs.bots.checkins.store import Checkin
from clubs.bots.host import BotFactory, HostServices
from clubs.bots.runtime import RuntimeSettings
from clubs.core.clock import ManualClock
from clubs.core.http import path
from clubs.core.secrets import Vault
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
from tests.mautrix_client import MautrixPeer, mautrix_peer

CANARY = f"canary-{secrets.token_hex(8)}"
HELP_CANARY = f"helpcanary-{secrets.token_hex(8)}"
INTRO_RU = "Привет! Это ваш еженедельный чек-ин"
INTRO_EN = "Hello! This is your weekly check-in"


def utc(month: int, day: int, hour: int) -> float:
    return datetime(2026, month, day, hour, 0, tzinfo=UTC).timestamp()


def factory(holder: list[CheckinsBot]) -> BotFactory:
    def make(services: HostServices) -> CheckinsBot:
        box = Box.from_vault(Vault(services.data_dir.parent / "secrets" / "vault"))
        bot = CheckinsBot(services.db, box, services.clock)
        holder.append(bot)
        return bot

    return make


def from_bot(peer: MautrixPeer, bot: str, room: str, prefix: str = "") -> list[str]:
    return [
        r.body
        for r in peer.received
        if r.sender == bot and r.room_id == room and r.body.startswith(prefix)
    ]


async def said(peer: MautrixPeer, bot: str, room: str, prefix: str, n: int = 1) -> list[str]:
    """Wait until the bot has said `n` messages starting with `prefix` in `room`."""

    async def probe() -> list[str]:
        found = from_bot(peer, bot, room, prefix)
        return found if len(found) >= n else []

    return await eventually(probe, within=30)


async def sent_checkin(bot: CheckinsBot, token: str, after: int = 0) -> Checkin:
    """The member's newest check-in once its poll is sent and recorded (newer than `after`)."""

    async def probe() -> Checkin | None:
        c = await bot.store.latest(token)
        return c if c is not None and c.id > after and c.poll_id is not None else None

    found: Checkin | None = await eventually(probe, within=30)
    assert found is not None
    return found


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


async def test_weekly_check_ins_across_dst_answers_help_and_forgetting(
    synapse: SynapseHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "checkins")
    bot_user = account.user_id
    almaty_member = await synapse.new_user("ala")
    berlin_member = await synapse.new_user("ber")
    facilitator = await synapse.new_user("fac")
    almaty = await managed_room(
        synapse,
        network,
        invite=[bot_user, almaty_member.user_id, facilitator.user_id],
        key="support",
        club="almaty",
        language="ru",
        powers={facilitator.user_id: 50},
        settings={
            "time_zone": "Asia/Almaty",
            "name": "Алматы",
            # The club's own questions and retention, as the provisioner writes them.
            "checkins": {"questions": ["Как прошла неделя?", "Что помогло?"], "keep_days": 30},
        },
    )
    berlin = await managed_room(
        synapse,
        network,
        invite=[bot_user, berlin_member.user_id],
        key="support",
        club="berlin",
        settings={"time_zone": "Europe/Berlin", "name": "Berlin"},
    )
    for person, room in (
        (almaty_member, almaty),
        (facilitator, almaty),
        (berlin_member, berlin),
    ):
        await person.http.post(path(*CS, "join", room), {})

    clock = ManualClock(start=utc(10, 19, 12))  # Monday 19 October 2026
    holder: list[CheckinsBot] = []
    settings = RuntimeSettings(sync_timeout_ms=1000, commands_per_window=100)
    async with (
        bot_host(
            synapse,
            tmp_path,
            [account],
            {"checkins": factory(holder)},
            network=network,
            clock=clock,
            settings=settings,
        ) as host,
        peers([almaty_member, berlin_member, facilitator], synapse.url) as (ala, ber, fac),
    ):
        (bot,) = holder
        jobs = host.runtime("checkins").ctx.jobs
        await eventually(lambda: joined(facilitator, almaty, bot_user), within=20)
        await eventually(lambda: joined(berlin_member, berlin, bot_user), within=20)
        ala_dm = await open_dm(almaty_member, bot_user)
        ber_dm = await open_dm(berlin_member, bot_user)
        fac_dm = await open_dm(facilitator, bot_user)

        # Opt in: Almaty from the DM (the club's zone by default), Berlin in the support room.
        await send_text(ala, ala_dm, "!чекин вкл чт 19:00")
        await send_text(ber, berlin, "!checkin on thu 19:00")
        (on,) = await said(ala, bot_user, ala_dm, "Чек-ины включены")
        assert "30 дней" in on
        await said(ber, bot_user, berlin, "Check-ins are on")

        async def due() -> dict[str, float]:
            out = {}
            for job in await jobs.pending(CHECKIN):
                member = await bot.store.member_by_token(job.key.split("@")[0])
                assert member is not None
                out[member.club] = job.due_at
            return out

        assert await due() == {"almaty": utc(10, 22, 14), "berlin": utc(10, 22, 17)}

        def intros(peer: MautrixPeer, room: str, text: str) -> int:
            return len(from_bot(peer, bot_user, room, text))

        # Week 1: Almaty at 14:00 UTC (19:00 +05), Berlin at 17:00 UTC (19:00 CEST).
        await clock.set(utc(10, 22, 14))
        await said(ala, bot_user, ala_dm, INTRO_RU, 1)
        await said(ala, bot_user, ala_dm, "Вопрос 1 из 2. Как прошла неделя?")
        assert intros(ber, ber_dm, INTRO_EN) == 0
        member_a = await bot.store.member(almaty_member.user_id)
        assert member_a is not None
        first = await sent_checkin(bot, member_a.token)
        assert first.poll_id is not None

        # The mood, from the member's own client, as Element votes; then an answer in words.
        await ala.send_poll_response(RoomID(ala_dm), first.poll_id, ["a1"])
        await said(ala, bot_user, ala_dm, "Похоже, неделя очень тяжёлая")
        (low,) = from_bot(ala, bot_user, ala_dm, "Похоже")
        assert "112" in low
        assert "консультант" in low
        await send_text(ala, ala_dm, f"Поговорила с мамой, {CANARY}")
        await said(ala, bot_user, ala_dm, "Вопрос 2 из 2. Что помогло?")

        async def stored() -> bool:
            c = await bot.store.latest(member_a.token)
            return c is not None and c.content.mood == 1 and CANARY in c.content.answers.get(1, "")

        await eventually(stored, within=30)

        await clock.set(utc(10, 22, 17))
        await said(ber, bot_user, ber_dm, INTRO_EN, 1)

        # One gentle reminder a day later to the member who did not answer; never a second.
        await clock.set(utc(10, 23, 17) + 60)
        await said(ber, bot_user, ber_dm, "A gentle reminder")
        await clock.set(utc(10, 25, 12))
        assert len(from_bot(ber, bot_user, ber_dm, "A gentle reminder")) == 1
        assert from_bot(ala, bot_user, ala_dm, "Мягкое напоминание") == []

        # Week 2, after Berlin's clocks went back: Almaty still 14:00 UTC, Berlin 18:00 UTC.
        async def second_week() -> bool:
            return await due() == {"almaty": utc(10, 29, 14), "berlin": utc(10, 29, 18)}

        await eventually(second_week, within=30)
        await clock.set(utc(10, 29, 14))
        await said(ala, bot_user, ala_dm, INTRO_RU, 2)
        await clock.set(utc(10, 29, 17) + 30)  # 18:00 CET is still an hour away
        assert (await due())["berlin"] == utc(10, 29, 18)
        assert intros(ber, ber_dm, INTRO_EN) == 1
        await clock.set(utc(10, 29, 18))
        await said(ber, bot_user, ber_dm, INTRO_EN, 2)

        async def third_week() -> bool:  # each job stores the next with its completion
            return await due() == {"almaty": utc(11, 5, 14), "berlin": utc(11, 5, 18)}

        await eventually(third_week, within=30)
        assert intros(ala, ala_dm, INTRO_RU) == 2

        # The Berlin member would rather read Russian: the language is theirs, not the club's,
        # and changing the plan again keeps it.
        await send_text(ber, ber_dm, "!checkin lang ru")
        await said(ber, bot_user, ber_dm, "Хорошо: теперь я пишу вам по-русски")
        await send_text(ber, ber_dm, "!checkin on thu 19:00")
        await said(ber, bot_user, ber_dm, "Чек-ины включены")
        member_b = await bot.store.member(berlin_member.user_id)
        assert member_b is not None
        assert member_b.lang == "ru"
        await eventually(third_week, within=30)

        # Figures: the facilitator sees only suppressed weeks (one answer); a member may not ask.
        await send_text(fac, almaty, "!чекин итоги")
        (stats,) = await said(fac, bot_user, almaty, "Чек-ины клуба")
        assert "меньше 3 ответивших" in stats
        assert CANARY not in stats
        assert "1.0" not in stats
        await send_text(ber, berlin, "!checkin stats")
        await said(ber, bot_user, berlin, "Only the club's facilitators")

        # "I need support" without supporters: told so, with the help contacts.
        await send_text(ala, ala_dm, "!нужна поддержка")
        (alone,) = await said(ala, bot_user, ala_dm, "Я бот, а не консультант")
        assert "нет поддерживающих" in alone
        assert "112" in alone
        # The facilitator volunteers; the member's words go only after the member confirms.
        await send_text(fac, almaty, "!supporter on")
        await said(fac, bot_user, almaty, "Вы — поддерживающий")
        await send_text(ala, ala_dm, f"!нужна поддержка {HELP_CANARY}")
        await said(ala, bot_user, ala_dm, "Я бот, а не консультант", 2)
        assert not any(HELP_CANARY in r.body for r in fac.received)
        await send_text(ala, ala_dm, "!отправить")
        (request,) = await said(fac, bot_user, fac_dm, almaty_member.user_id)
        assert HELP_CANARY in request
        assert CANARY not in request
        await said(ala, bot_user, ala_dm, "Отправлено поддерживающим: 1")

        # Forget me: every row about the member goes, and the member is told what went.
        token = member_a.token
        await send_text(ala, ala_dm, "!забудь меня")
        (gone,) = await said(ala, bot_user, ala_dm, "Удалено")
        assert "чек-инов с ответами: 2" in gone
        db = bot.db
        tables = ("ci_members", "ci_checkins", "ci_wins", "ci_supporters", "ci_help", "ci_digests")
        for table in (*tables, "ci_buddies"):
            rows = await db.fetchall(f"SELECT * FROM {table}")  # noqa: S608 - constant names
            text = " ".join(str(tuple(r)) for r in rows)
            assert almaty_member.user_id not in text, table
            assert token not in text, table
        # Nor do the runtime's rows about them (their mood votes, notices, held commands).
        for table in ("poll_votes", "utd_notices", "confirmations", "dm_intents"):
            rows = await db.fetchall(f"SELECT * FROM {table} WHERE bot = 'checkins'")  # noqa: S608
            assert almaty_member.user_id not in " ".join(str(tuple(r)) for r in rows), table
        pending = [j for j in await jobs.pending() if j.key.startswith(token)]
        assert pending == []
        assert await bot.store.member(berlin_member.user_id) is not None  # others untouched
        host.check_alive()

    # Canary: no log record of ours (the members' own mautrix clients log under "mau") and no
    # file under the bots' data directory holds an answer or a request in plain text.
    ours = [r for r in caplog.records if not r.name.startswith("mau")]
    assert ours, "the bot logged nothing at DEBUG"
    for record in ours:
        line = record.getMessage()
        assert CANARY not in line, record.name
        assert HELP_CANARY not in line, record.name
    assert files_containing(tmp_path, CANARY.encode()) == []
    assert files_containing(tmp_path, HELP_CANARY.encode()) == []


async def test_choices_sharing_edits_the_journal_alerts_and_bad_input(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """Buddy pairs; a Berlin member picks Friday 20:00 in Tbilisi time and consents to alerts;
    bad words change nothing; the journal is private; an answer is edited and one shared
    without name; the lowest mood twice in a row tells the volunteer supporter the name only;
    pause, back and off move or drop the schedule; a malformed message stops nothing; on the
    first of the month the member's own journal digest and the club's anonymous digest of
    shared wins."""
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "checkins")
    bot_user = account.user_id
    member = await synapse.new_user("mem")
    facilitator = await synapse.new_user("sup")
    support = await managed_room(
        synapse,
        network,
        invite=[bot_user, member.user_id, facilitator.user_id],
        key="support",
        club="berlin",
        powers={facilitator.user_id: 50},
        settings={"time_zone": "Europe/Berlin"},
    )
    for person in (member, facilitator):
        await person.http.post(path(*CS, "join", support), {})
    clock = ManualClock(start=utc(11, 2, 12))  # Monday 2 November 2026
    holder: list[CheckinsBot] = []
    async with (
        bot_host(
            synapse,
            tmp_path,
            [account],
            {"checkins": factory(holder)},
            network=network,
            clock=clock,
            settings=RuntimeSettings(sync_timeout_ms=1000, commands_per_window=100),
        ) as host,
        peers([member, facilitator], synapse.url) as (mem, sup),
    ):
        (bot,) = holder
        jobs = host.runtime("checkins").ctx.jobs
        await eventually(lambda: joined(member, support, bot_user), within=20)
        dm = await open_dm(member, bot_user)
        sup_dm = await open_dm(facilitator, bot_user)
        await send_text(sup, support, "!supporter on")
        await said(sup, bot_user, support, "You are a peer supporter")

        # Buddy pairs: the first waits, the second is paired with them; each gets the other's
        # name only; one stops and the other is told.
        await send_text(sup, support, "!buddy on")
        await said(sup, bot_user, support, "All right: as soon as someone else")
        await send_text(mem, dm, "!напарник вкл")
        (mine,) = await said(mem, bot_user, dm, "Your buddy for 3 weeks")
        assert facilitator.user_id in mine
        (theirs,) = await said(sup, bot_user, sup_dm, "Your buddy for 3 weeks")
        assert member.user_id in theirs
        await send_text(mem, dm, "!buddy off")
        await said(sup, bot_user, sup_dm, "Your buddy has ended the pairing")

        await send_text(mem, dm, "!checkin on fri 20:00 Asia/Tbilisi")
        await said(mem, bot_user, dm, "Check-ins are on")
        await send_text(mem, dm, "!checkin alert on")
        await said(mem, bot_user, dm, "All right: if your mood is 1")
        chosen = await bot.store.member(member.user_id)
        assert chosen is not None
        assert (chosen.plan.tz, chosen.plan.clock, chosen.plan.days_text) == (
            "Asia/Tbilisi",
            "20:00",
            "fri",
        )
        # Bad words: a clear reply, nothing changed.
        for bad in (
            "!checkin maybe",
            "!checkin on fri 20:00 ../../etc/passwd",
            "!checkin pause 99",
        ):
            await send_text(mem, dm, bad)
        await said(mem, bot_user, dm, "That did not work", 3)
        assert await bot.store.member(member.user_id) == chosen
        (job,) = await jobs.pending(CHECKIN)
        assert job.due_at == utc(11, 6, 16)  # Friday 20:00 in Tbilisi (+04)
        # The supporter checks in too, and is asked about their own load as well.
        await send_text(sup, sup_dm, "!checkin on fri 20:00 Asia/Tbilisi")
        await said(sup, bot_user, sup_dm, "Check-ins are on")

        # The journal: never from a club room, privately in the DM.
        await send_text(mem, support, "!win not here")
        await said(mem, bot_user, support, "The journal works only in a direct message")
        assert await bot.store.count_wins(member.user_id) == 0
        await send_text(mem, dm, "!win mum asked a question back")
        await said(mem, bot_user, dm, "Noted. Entries in your journal: 1.")
        await send_text(mem, dm, "!wins")
        (journal,) = await said(mem, bot_user, dm, "Your journal of small wins")
        assert "1. 2026-11-02: mum asked a question back" in journal
        await send_text(mem, dm, "!wins share 1")
        await said(mem, bot_user, dm, "Entry 1 goes into the club's anonymous digest")
        await send_text(mem, dm, "!wins monthly on")
        await said(mem, bot_user, dm, "All right: on the first of each month")
        # One entry deleted for good, by its number in the list (1 = newest); the whole
        # journal exported as an encrypted Markdown file only the member's DM gets.
        await send_text(mem, dm, "!win written by mistake")
        await said(mem, bot_user, dm, "Noted. Entries in your journal: 2.")
        await send_text(mem, dm, "!wins delete 1")
        await said(mem, bot_user, dm, "Entry 1 is deleted for good; 1 left in your journal")
        (kept,) = await bot.store.all_wins(member.user_id)
        assert kept.text == "mum asked a question back"
        await send_text(mem, dm, "!wins delete 7")
        await said(mem, bot_user, dm, "I did not understand")
        await send_text(mem, dm, "!wins export")
        await said(mem, bot_user, dm, "Above is your whole journal (1 entries)")
        (export,) = [
            r
            for r in mem.received
            if r.sender == bot_user and r.room_id == dm and r.msgtype == "m.file"
        ]
        assert export.content["body"] == "wins-2026-11-02.md"
        stored, markdown = await mem.download_encrypted(export.content["file"])
        assert b"mum asked a question back" not in stored
        assert "- **2026-11-02**: mum asked a question back" in markdown.decode()
        assert "written by mistake" not in markdown.decode()

        # Week 1: mood 1, an answer edited, one too long, a malformed message, one shared.
        await clock.set(utc(11, 6, 16))
        await said(mem, bot_user, dm, INTRO_EN)
        first = await sent_checkin(bot, chosen.token)
        assert first.poll_id is not None
        assert first.content.questions is None  # the default questions, in the member's language
        await said(sup, bot_user, sup_dm, "Question 1 of 4. Did you talk with someone at home")
        helper = await bot.store.member(facilitator.user_id)
        assert helper is not None
        questions = (await sent_checkin(bot, helper.token)).content.questions
        assert questions is not None
        assert questions[-1].startswith("How is your load as a peer supporter?")
        await mem.send_poll_response(RoomID(dm), first.poll_id, ["a1"])
        await said(mem, bot_user, dm, "It sounds like a very hard week")
        said_yes = await send_text(mem, dm, "yes")
        await said(mem, bot_user, dm, "Question 2 of 3")
        await send_text(mem, dm, "x" * 4001)
        await said(mem, bot_user, dm, "That answer is too long")
        await mem.client.send_message_event(
            RoomID(dm), EventType.ROOM_MESSAGE, cast(Any, {"msgtype": "m.text", "body": ["x"]})
        )
        await send_text(mem, dm, "it went calmly")
        await said(mem, bot_user, dm, "Question 3 of 3")
        edit = TextMessageEventContent(msgtype=MessageType.TEXT, body="yes, with my sister")
        edit.set_edit(said_yes)
        await mem.client.send_message_event(RoomID(dm), EventType.ROOM_MESSAGE, edit)
        await said(mem, bot_user, dm, "Answer 1 updated.")
        now = await bot.store.latest(chosen.token)
        assert now is not None
        assert now.content.answers == {1: "yes, with my sister", 2: "it went calmly"}
        await send_text(mem, dm, "!share 2")
        await said(mem, bot_user, dm, "Answer 2 is posted in the support room without your name")
        (shared,) = await said(sup, bot_user, support, "A club member shares (anonymously)")
        assert "it went calmly" in shared
        assert member.user_id not in shared
        assert not any("sister" in r.body for r in sup.received)

        # Week 2: mood 1 again; the member consented, so the supporter gets the name only.
        await clock.set(utc(11, 13, 16))
        await said(mem, bot_user, dm, INTRO_EN, 2)
        second = await sent_checkin(bot, chosen.token, after=first.id)
        assert second.poll_id is not None
        await mem.send_poll_response(RoomID(dm), second.poll_id, ["a1"])
        (alert,) = await said(sup, bot_user, sup_dm, member.user_id)
        assert "calmly" not in alert
        assert "sister" not in alert
        await said(mem, bot_user, dm, "As you asked, I told the club's peer supporters (1)")

        # Pause two weeks, come back, stop.
        async def due_of_member() -> list[float]:
            return [j.due_at for j in await jobs.pending(CHECKIN) if j.key.startswith(chosen.token)]

        await send_text(mem, dm, "!checkin pause 2")
        await said(mem, bot_user, dm, "Paused for 2 weeks")
        assert await due_of_member() == [utc(12, 4, 16)]
        await send_text(mem, dm, "!checkin back")
        await said(mem, bot_user, dm, "Welcome back")
        assert await due_of_member() == [utc(11, 20, 16)]
        await send_text(mem, dm, "!checkin off")
        await said(mem, bot_user, dm, "Check-ins are off")
        assert await due_of_member() == []

        # 1 December, 10:00 in Tbilisi and then in Berlin: the member's own digest of November
        # by DM, and the club's anonymous digest of shared wins in the support room.
        await clock.set(utc(12, 1, 9))
        (digest,) = await said(mem, bot_user, dm, "Your journal of small wins for 2026-11")
        assert "mum asked a question back" in digest
        (club_wins,) = await said(sup, bot_user, support, "The club's small wins of last month")
        assert "mum asked a question back" in club_wins
        assert member.user_id not in club_wins
        host.check_alive()


async def test_a_bot_down_at_fire_time_sends_one_late_check_in_or_says_it_missed_it(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """The bot is stopped before the member's Thursday 19:00 and back an hour later: exactly
    one check-in, late. Next week it is back only seven hours late, past the grace window: no
    stale check-in, one "missed" message, and the week after is scheduled."""
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "checkins")
    bot_user = account.user_id
    member = await synapse.new_user("late")
    support = await managed_room(
        synapse,
        network,
        invite=[bot_user, member.user_id],
        key="support",
        club="berlin",
        settings={"time_zone": "Europe/Berlin"},
    )
    await member.http.post(path(*CS, "join", support), {})
    clock = ManualClock(start=utc(11, 2, 12))
    holder: list[CheckinsBot] = []

    def host() -> Any:
        return bot_host(
            synapse,
            tmp_path,
            [account],
            {"checkins": factory(holder)},
            network=network,
            clock=clock,
            settings=RuntimeSettings(sync_timeout_ms=1000, commands_per_window=100),
        )

    async with peers([member], synapse.url) as (mem,):
        async with host():
            await eventually(lambda: joined(member, support, bot_user), within=20)
            dm = await open_dm(member, bot_user)
            await send_text(mem, dm, "!checkin on thu 19:00")
            await said(mem, bot_user, dm, "Check-ins are on")
        await clock.set(utc(11, 5, 19))  # an hour after 19:00 CET, while the bot is down
        async with host() as running:
            await said(mem, bot_user, dm, INTRO_EN)
            jobs = running.runtime("checkins").ctx.jobs

            async def next_week() -> bool:
                return [j.due_at for j in await jobs.pending(CHECKIN)] == [utc(11, 12, 18)]

            await eventually(next_week, within=30)
        await clock.set(utc(11, 13, 1))  # seven hours after the next one
        async with host() as running:
            await said(mem, bot_user, dm, "This week's check-in did not come on time")
            jobs = running.runtime("checkins").ctx.jobs

            async def week_after() -> bool:
                return [j.due_at for j in await jobs.pending(CHECKIN)] == [utc(11, 19, 18)]

            await eventually(week_after, within=30)
            assert len(from_bot(mem, bot_user, dm, INTRO_EN)) == 1
            running.check_alive()
