"""The club's case library on the facilitation bot (built by the shipped catalog, so with its
real wiring), against the real Synapse with independent member clients (mautrix,
cross-signed): a member tells a case in a DM one question at a time (a name for the relation is
refused), and it appears in the club's encrypted cases room without the author's name: neither
the decrypted content of the posted event nor the server's copy nor the bot's database file
carries the author's user id, and the case's words are in no file. `!cases` finds it by tag in
its club, finds what another club shared network-wide, and never another club's unshared case.
A club with approval has its chair approve a case first. The organisers' tag figures are
suppressed below three cases. An edit of one answer edits the posted message; `!export` sends
JSON and Markdown as encrypted files; withdrawing redacts the posted event and deletes the copy;
`!forget-me` withdraws the rest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from clubs.bots.base import Bot, handler_objects
from clubs.bots.cases.cases import Cases, month_of
from clubs.bots.cases.parse import terms_of
from clubs.bots.catalog import default_factories
from clubs.bots.host import BotFactory, HostServices
from clubs.bots.runtime import RuntimeSettings
from clubs.core.clock import ManualClock
from clubs.core.http import path
from clubs.core.ids import UserId
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

CANARY = f"canary-{secrets.token_hex(8)}"
START = time.time()
"""The bot's manual clock stands at the real time: a chair's `!start` older than a few minutes
by the bot's clock would be refused as stale."""


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


async def test_a_case_told_in_a_dm_posted_anonymously_found_in_scope_and_withdrawn(
    synapse: SynapseHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "facilitation")
    bot_user = account.user_id
    author = await synapse.new_user("author")
    chair = await synapse.new_user("chair")
    outsider = await synapse.new_user("other")
    almaty = await managed_room(
        synapse,
        network,
        invite=[bot_user, author.user_id, chair.user_id],
        key="cases",
        club="almaty",
        language="ru",
        powers={chair.user_id: 50, bot_user: 50},
    )
    tbilisi = await managed_room(
        synapse,
        network,
        invite=[bot_user, outsider.user_id],
        key="cases",
        club="tbilisi",
        language="ru",
        powers={outsider.user_id: 50, bot_user: 50},
        settings={"cases": {"approval": True}},
    )
    for person, room in ((author, almaty), (chair, almaty), (outsider, tbilisi)):
        await person.http.post(path(*CS, "join", room), {})

    holder: list[Bot] = []
    async with (
        bot_host(
            synapse,
            tmp_path,
            [account],
            {"facilitation": factory(holder)},
            network=network,
            clock=ManualClock(start=START),
            settings=RuntimeSettings(sync_timeout_ms=1000, commands_per_window=100),
        ) as host,
        peers([author, chair, outsider], synapse.url) as (mem, fac, out),
    ):
        (bot,) = holder
        cases = next(h for h in handler_objects(bot) if isinstance(h, Cases))
        ctx = host.runtime("facilitation").ctx
        await eventually(lambda: joined(author, almaty, bot_user), within=20)
        await eventually(lambda: joined(outsider, tbilisi, bot_user), within=20)
        mem_dm = await open_dm(author, bot_user)
        out_dm = await open_dm(outsider, bot_user)

        # Told one question at a time; a name as the relation is refused and asked again.
        await send_text(mem, mem_dm, "!случай")
        await said(mem, bot_user, mem_dm, "Расскажите случай")
        await send_text(mem, mem_dm, "Наташа")
        await said(mem, bot_user, mem_dm, "Не получилось: похоже на имя")
        answers = [
            "мама",
            "верит телевизору",
            f"мобилизация соседа {CANARY}",
            "спросила, что она сама видела",
            "она задумалась",
            "продолжу вопросами",
            "ТВ, мобилизация",
            "тревожно",
        ]
        for n, text in enumerate(answers, start=1):
            await send_text(mem, mem_dm, text)
            await said(mem, bot_user, mem_dm, f"Вопрос {n + 1} из 8" if n < 8 else "Вот ваш")
        await send_text(mem, mem_dm, "!случай отправить")
        (posted,) = await said(mem, bot_user, mem_dm, "Спасибо! Случай")
        assert "без имени" in posted
        (case,) = await (await cases.store(ctx)).mine(UserId(author.user_id))
        n = case.id

        # In the cases room without the author's name: decrypted, and the server's copy.
        (shown,) = await said(fac, bot_user, almaty, f"Случай {n}")
        assert CANARY in shown
        assert "Кто: мама" in shown
        (event,) = from_bot(fac, bot_user, almaty, f"Случай {n}")
        localpart = author.user_id.split(":")[0]
        assert localpart not in json.dumps(event.content, ensure_ascii=False)
        raw = await chair.http.get(path(*CS, "rooms", almaty, "event", event.event_id))
        assert raw["type"] == "m.room.encrypted"
        assert localpart not in json.dumps(raw)
        assert raw["sender"] == bot_user
        store = await cases.store(ctx)
        for table in ("cs_drafts", "cs_cases", "cs_terms"):
            rows = await store.db.fetchall(f"SELECT * FROM {table}")  # noqa: S608 - constants
            assert localpart not in " ".join(str(tuple(r)) for r in rows), table
        # Of the bot's database, only the runtime's record of the DM room names the author (to
        # answer them; `!forget-me` deletes it); the crypto store keeps their device keys.
        tables = await store.db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
        for t in tables:
            rows = await store.db.fetchall(f"SELECT * FROM {t['name']}")  # noqa: S608
            if localpart in " ".join(str(tuple(r)) for r in rows):
                assert t["name"] == "dm_rooms"

        # Other clubs' cases, as their authors' commands would have stored them.
        async def seed(club: str, tags: tuple[str, ...], source: str, **kw: bool) -> int:
            added = await store.add(
                user=outsider.user_id if kw.get("theirs") else chair.user_id,
                club=club,
                answers={"relation": "мама", "topic": "новости", "tags": ", ".join(tags)},
                tags=tags,
                terms=terms_of("мама", tags),
                named=False,
                shared=kw.get("shared", False),
                pending=kw.get("pending", False),
                month=month_of(START),
                source=source,
                now=START,
            )
            return added.id

        unshared = await seed("tbilisi", ("тв",), "$t1", theirs=True)
        shared = await seed("tbilisi", ("тв",), "$t2", shared=True, theirs=True)

        await send_text(fac, almaty, "!случаи мама тв")
        (found,) = await said(fac, bot_user, almaty, "Найдено случаев: 2")
        assert f"{n}. мама" in found
        assert f"{shared}. мама" in found
        assert "клуб tbilisi" in found
        assert f"{unshared}. мама" not in found
        await send_text(out, out_dm, "!cases ТВ мобилизация")
        await said(out, bot_user, out_dm, "Случаев по словам «тв мобилизация» не нашлось")
        await send_text(out, out_dm, f"!case {n}")
        await said(out, bot_user, out_dm, f"Случая {n}, доступного вам, нет")
        await send_text(fac, almaty, f"!случай {unshared}")
        await said(fac, bot_user, almaty, f"Случая {unshared}, доступного вам, нет")

        # On a session's agenda in the club: the case is shown when its item starts; another
        # club's unshared case cannot be put there.
        await send_text(fac, almaty, "!старт Разбор случаев")
        await send_text(fac, almaty, f"!повестка добавить 20м случай {unshared}")
        await said(fac, bot_user, almaty, f"Случай {unshared} нельзя поставить в эту повестку")
        await send_text(fac, almaty, f"!повестка добавить 20м случай {n}")
        (discussed,) = await said(fac, bot_user, almaty, f"Сейчас в повестке случай {n}.")
        assert CANARY in discussed
        assert "Кто: мама" in discussed
        assert localpart not in discussed  # the author did not sign it
        await send_text(fac, almaty, "!повестка")
        (agenda,) = await said(fac, bot_user, almaty, "Повестка")
        assert f"Случай {n}: мобилизация соседа" in agenda
        await send_text(fac, almaty, "!конец")
        await said(fac, bot_user, almaty, "Итоги встречи «Разбор случаев»")

        # A club with approval: its chair posts the case; the author is told.
        pending = await seed("tbilisi", ("санкции",), "$t3", pending=True)
        await send_text(out, out_dm, "!cases санкции")
        await said(out, bot_user, out_dm, "Случаев по словам «санкции» не нашлось")
        await send_text(fac, almaty, f"!случай одобрить {pending}")
        await said(fac, bot_user, almaty, f"Случая {pending}, ждущего вашего одобрения, нет")
        await send_text(out, out_dm, f"!case approve {pending}")
        await said(out, bot_user, out_dm, f"Случай {pending} опубликован")
        await said(out, bot_user, tbilisi, f"Случай {pending}")
        await send_text(out, out_dm, "!cases санкции")
        await said(out, bot_user, out_dm, "Найдено случаев: 1")

        # Figures: one case this month is hidden; three are counted by tag.
        await send_text(fac, almaty, "!случай статистика")
        (hidden,) = await said(fac, bot_user, almaty, "Случаи по месяцам")
        assert "меньше 3 случаев — скрыто" in hidden
        await seed("almaty", ("тв",), "$a1")
        await seed("almaty", ("тв", "санкции"), "$a2")
        await send_text(fac, almaty, "!случай статистика")
        counted = (await said(fac, bot_user, almaty, "Случаи по месяцам", 2))[1]
        assert "3 случая · тв: 3 · редких тегов: 2" in counted
        assert CANARY not in counted
        await send_text(mem, mem_dm, "!случай статистика")
        await said(mem, bot_user, mem_dm, "Статистику случаев видят только ведущие")

        # An edit of one answer edits the posted message.
        await send_text(mem, mem_dm, f"!случай правка {n} теги")
        await said(mem, bot_user, mem_dm, f"Случай {n}. Вопрос 7 из 8")
        await send_text(mem, mem_dm, "ТВ, санкции")
        await said(mem, bot_user, mem_dm, "Вот ваш", 2)
        await send_text(mem, mem_dm, "!случай отправить")
        await said(mem, bot_user, mem_dm, f"Случай {n} изменён")

        async def edited() -> list[Received]:
            return [
                r
                for r in from_bot(fac, bot_user, almaty)
                if r.content.get("m.relates_to", {}).get("event_id") == event.event_id
            ]

        (edit,) = await eventually(edited, within=20)
        assert "Теги: тв, санкции" in edit.content["m.new_content"]["body"]

        # Export: JSON and Markdown, both encrypted files.
        await send_text(mem, mem_dm, "!экспорт")
        await said(mem, bot_user, mem_dm, "Ваши данные — в двух")
        files = {r.body: r for r in from_bot(mem, bot_user, mem_dm) if r.msgtype == "m.file"}
        (json_name,) = [f for f in files if f.endswith(".json")]
        (md_name,) = [f for f in files if f.endswith(".md")]
        assert "url" not in files[json_name].content
        _, data = await mem.download_encrypted(files[json_name].content["file"])
        exported = json.loads(data)
        (mine,) = exported["parts"]["cases"]["cases"]
        assert CANARY in mine["topic"]
        assert mine["tags"] == "тв, санкции"
        assert exported["parts"]["strategies"]["people"] == []
        assert exported["parts"]["reflection"] == {"reflection_dm": False}
        _, md = await mem.download_encrypted(files[md_name].content["file"])
        assert "## Случаи" in md.decode()
        assert "## Стратегии" in md.decode()
        assert "## Рефлексия после встреч\n\nВыключена." in md.decode()

        # Withdrawn: the posted event is redacted and the copy deleted.
        await send_text(mem, mem_dm, f"!случай отозвать {n}")
        await said(mem, bot_user, mem_dm, f"Случай {n} отозван")

        async def redacted(room: str, event_id: str) -> bool:
            got = await outsider.http.get(path(*CS, "rooms", room, "event", event_id))
            return not got.get("content") and "redacted_because" in got.get("unsigned", {})

        async def redacted_in_almaty() -> bool:
            got = await chair.http.get(path(*CS, "rooms", almaty, "event", event.event_id))
            return not got.get("content") and "redacted_because" in got.get("unsigned", {})

        await eventually(redacted_in_almaty, within=20)
        assert await store.get(n) is None
        await send_text(fac, almaty, "!случаи мама тв")
        await said(fac, bot_user, almaty, "Найдено случаев: 3")  # shared + the two seeded

        # Forgetting: the chair's cases (seeded as theirs) are withdrawn too.
        (approved,) = from_bot(out, bot_user, tbilisi, f"Случай {pending}")
        fac_dm = await open_dm(chair, bot_user)
        await send_text(fac, fac_dm, "!рефлексия вкл")
        await said(fac, bot_user, fac_dm, "Хорошо: после встреч")
        assert chair.user_id in await bot.store.reflecting()
        await send_text(fac, fac_dm, "!забудь меня")
        (gone,) = await said(fac, bot_user, fac_dm, "Готово, всё удалено")
        assert "случаи и черновик: 3" in gone
        assert "рефлексия после встреч: выключена" in gone
        assert chair.user_id not in await bot.store.reflecting()
        await eventually(lambda: redacted(tbilisi, approved.event_id), within=20)
        found_after, _ = await store.search({"almaty", "tbilisi"}, [])
        assert sorted(c.id for c in found_after) == [unshared, shared]  # the outsider's own
        host.check_alive()

    ours = [r for r in caplog.records if not r.name.startswith("mau")]
    assert ours, "the bot logged nothing at DEBUG"
    for record in ours:
        assert CANARY not in record.getMessage(), record.name
    assert files_containing(tmp_path, CANARY.encode()) == []
