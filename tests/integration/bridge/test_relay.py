"""The bridge against a real Synapse and the fake Telegram: both directions, edits, deletions,
the 4,096-character split, 429s, supergroup migration, refused rooms, forged and replayed
transactions, and a bridge stopped with work accepted but not done."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clubs.bridge import roomcommands
from clubs.bridge.config import Mode
from clubs.bridge.pacing import Pacer
from clubs.bridge.registration import ensure_tokens
from clubs.bridge.service import Bridge
from clubs.core.http import RoomId, cs
from clubs.core.logs import RedactingFilter
from tests.faketelegram import FakeTelegram
from tests.harness import Account, eventually
from tests.integration.bridge.conftest import (
    BridgeWorld,
    active,
    holds,
    messages,
    say,
    unique_key,
)

pytestmark = pytest.mark.integration

IVAN = {"id": 5550001, "is_bot": False, "first_name": "Иван", "last_name": "П."}


@pytest.fixture
async def anna(bridge_world: BridgeWorld) -> Account:
    return await bridge_world.synapse.new_user("anna", displayname="Анна")


@pytest.fixture
async def running(
    bridge_world: BridgeWorld, telegram: FakeTelegram, tmp_path: Path
) -> AsyncIterator[list[Bridge]]:
    """Bridges a test starts (stopped at the end, whatever happened)."""
    started: list[Bridge] = []
    yield started
    for b in started:
        await b.stop()


async def start(
    world: BridgeWorld, telegram: FakeTelegram, started: list[Bridge], data: Path, *portals: Any
) -> Bridge:
    bridge = await world.bridge(telegram, portals, data)
    started.append(bridge)
    return bridge


async def bridged(
    world: BridgeWorld,
    telegram: FakeTelegram,
    started: list[Bridge],
    data: Path,
    member: Account,
    chat: int,
    mode: Mode = "relay",
    chat_type: str = "supergroup",
) -> tuple[Bridge, RoomId]:
    """A Telegram chat, a bridge whose one portal is a new room bridged to it, the room (with
    `member`), once the bridge relays it."""
    telegram.add_chat(chat, chat_type)
    key = unique_key()
    bridge = await start(world, telegram, started, data, world.portal(key, chat, mode))
    room = await world.room(key, [member])
    await eventually(lambda: active(bridge, room), within=15)
    return bridge, room


async def test_relay_round_trip_with_edits_and_deletions(
    bridge_world: BridgeWorld,
    telegram: FakeTelegram,
    running: list[Bridge],
    anna: Account,
    tmp_path: Path,
) -> None:
    chat = -1001000000001
    _bridge, room = await bridged(bridge_world, telegram, running, tmp_path, anna, chat)

    # Matrix → Telegram, escaped, with the display name (never the Matrix id).
    first = await say(anna, room, {"msgtype": "m.text", "body": "Привет <всем> & до встречи"})
    await eventually(lambda: holds(telegram.texts(chat) == ["Анна: Привет <всем> & до встречи"]))
    [sent] = telegram.sent(chat)
    assert sent["html"] == "<b>Анна</b>: Привет &lt;всем&gt; &amp; до встречи"
    assert anna.user_id not in sent["html"]

    # An edit on Matrix edits the Telegram message.
    await say(
        anna,
        room,
        {
            "msgtype": "m.text",
            "body": "* исправлено",
            "m.new_content": {"msgtype": "m.text", "body": "исправлено"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": first},
        },
    )
    await eventually(lambda: holds(telegram.texts(chat) == ["Анна: исправлено"]))

    # A redaction on Matrix deletes it in Telegram.
    await anna.http.put(cs("rooms", room, "redact", first, secrets.token_hex(8)), {})
    await eventually(lambda: holds(telegram.texts(chat) == []))

    # A new display name in the room shows from her next message on (the name is cached and
    # forgotten when her membership event passes through, in the room's order).
    member_state = cs("rooms", room, "state", "m.room.member", anna.user_id)
    await anna.http.put(member_state, {"membership": "join", "displayname": "Анна К."})
    renamed = await say(anna, room, {"msgtype": "m.text", "body": "новое имя"})
    await eventually(lambda: holds(telegram.texts(chat) == ["Анна К.: новое имя"]))
    await anna.http.put(member_state, {"membership": "join", "displayname": "Анна"})
    await anna.http.put(cs("rooms", room, "redact", renamed, secrets.token_hex(8)), {})
    await eventually(lambda: holds(telegram.texts(chat) == []))

    # Telegram → Matrix: the sender's ghost, named from Telegram, at the message's time.
    mid = await telegram.user_says(chat, IVAN, "Здравствуйте!")

    async def from_ghost() -> list[dict[str, Any]]:
        return [e for e in await messages(anna, room) if e["sender"].startswith("@tg_5550001:")]

    [ghost_event] = await eventually(from_ghost, within=15)
    assert ghost_event["content"]["body"] == "Здравствуйте!"
    profile = await anna.http.get(cs("profile", ghost_event["sender"]))
    assert profile["displayname"] == "Иван П. (Telegram)"

    # A Telegram edit becomes a Matrix edit of the ghost's message.
    await telegram.user_edits(chat, mid, "Здравствуйте все!")

    async def edited() -> list[dict[str, Any]]:
        return [
            e
            for e in await from_ghost()
            if e["content"].get("m.relates_to", {}).get("event_id") == ghost_event["event_id"]
        ]

    [edit] = await eventually(edited, within=15)
    assert edit["content"]["m.new_content"]["body"] == "Здравствуйте все!"

    # Replies stay replies when what they answer crossed the bridge.
    await say(
        anna,
        room,
        {
            "msgtype": "m.text",
            "body": f"> <{ghost_event['sender']}> Здравствуйте все!\n\nи вам",
            "m.relates_to": {"m.in_reply_to": {"event_id": ghost_event["event_id"]}},
        },
    )
    await eventually(lambda: holds("Анна: и вам" in telegram.texts(chat)))
    [answer] = [m for m in telegram.sent(chat) if m["text"] == "Анна: и вам"]
    assert answer["reply_to_message"]["message_id"] == mid
    await telegram.user_says(chat, IVAN, "спасибо", reply_to=answer["message_id"])

    async def thanked() -> list[dict[str, Any]]:
        return [e for e in await from_ghost() if e["content"].get("body") == "спасибо"]

    [thanks] = await eventually(thanked, within=15)
    anna_reply = [e for e in await messages(anna, room) if "и вам" in e["content"].get("body", "")]
    assert thanks["content"]["m.relates_to"] == {
        "m.in_reply_to": {"event_id": anna_reply[0]["event_id"]}
    }

    # A ban of the ghost bans the Telegram user in the chat; lifting it lifts that ban.
    admin = bridge_world.synapse.admin.http
    await admin.post(cs("rooms", room, "ban"), {"user_id": ghost_event["sender"]})
    await eventually(lambda: holds(telegram.chats[chat].banned == {IVAN["id"]}), within=15)
    await telegram.user_says(chat, IVAN, "меня не слышно")  # banned: not relayed
    await eventually(lambda: holds(telegram.updates == []), within=10)  # handled and confirmed
    await admin.post(cs("rooms", room, "unban"), {"user_id": ghost_event["sender"]})
    await eventually(lambda: holds(telegram.chats[chat].banned == set()), within=15)
    await telegram.user_says(chat, IVAN, "снова здесь")  # the ghost joins again to say it

    async def back() -> list[dict[str, Any]]:
        return [e for e in await from_ghost() if e["content"].get("body") == "снова здесь"]

    await eventually(back, within=15)
    assert not [e for e in await from_ghost() if e["content"].get("body") == "меня не слышно"]

    # A moderator's redaction of the ghost's message deletes it in Telegram too.
    assert "Здравствуйте все!" in telegram.texts(chat)
    await bridge_world.synapse.admin.http.put(
        cs("rooms", room, "redact", ghost_event["event_id"], secrets.token_hex(8)), {}
    )
    await eventually(lambda: holds("Здравствуйте все!" not in telegram.texts(chat)))
    # Nothing the bridge said went back across: the Matrix side has only Ivan's two events.
    assert len(await from_ghost()) == 4  # Ivan's message, his edit, his thanks, his return
    assert len(telegram.method_calls("sendMessage")) == 3  # with the renamed one above


async def test_moderators_pause_and_resume_the_relay_with_tg_commands(
    bridge_world: BridgeWorld,
    telegram: FakeTelegram,
    running: list[Bridge],
    anna: Account,
    tmp_path: Path,
) -> None:
    chat = -1001000000009
    bridge, room = await bridged(bridge_world, telegram, running, tmp_path, anna, chat)
    admin = bridge_world.synapse.admin  # the room's creator: a moderator and more
    bot = bridge.relay.bot

    async def answer_to(command: str) -> str:
        async def found() -> list[str]:
            return [
                str(e["content"]["body"])
                for e in await messages(anna, room)
                if e["sender"] == bot
                and e["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")
                == command
            ]

        [body] = await eventually(found, within=15)
        return body

    # A member who is not a moderator cannot pause; anyone gets the status and the help.
    refused = await say(anna, room, {"msgtype": "m.text", "body": "!tg pause"})
    assert await answer_to(refused) == roomcommands.NOT_ALLOWED
    assert "both ways, on;" in await answer_to(
        await say(anna, room, {"msgtype": "m.text", "body": "!tg status"})
    )
    assert await answer_to(await say(anna, room, {"msgtype": "m.text", "body": "!tg"})) == (
        roomcommands.HELP
    )

    # A moderator pauses: nothing crosses either way, and the Telegram chat is told why.
    paused = await say(admin, room, {"msgtype": "m.text", "body": "!tg pause"})
    assert await answer_to(paused) == roomcommands.PAUSED
    await eventually(lambda: holds(telegram.texts(chat) == [roomcommands.TELEGRAM_PAUSED]))
    await say(anna, room, {"msgtype": "m.text", "body": "сказано в паузе"})
    await telegram.user_says(chat, IVAN, "из Telegram в паузе")
    await eventually(
        lambda: holds(bridge.relay.health.not_relayed_paused == 2), within=15
    )  # both directions seen and held back, not queued
    assert "paused by the moderators" in await answer_to(
        await say(anna, room, {"msgtype": "m.text", "body": "!tg status"})
    )

    # The pause holds across a restart of the bridge.
    await bridge.stop()
    running.remove(bridge)
    bridge = await start(bridge_world, telegram, running, tmp_path, bridge.relay.portals[0])
    assert room in bridge.relay._paused

    # Resumed: the next messages cross; what was said during the pause never does.
    resumed = await say(admin, room, {"msgtype": "m.text", "body": "!tg resume"})
    assert await answer_to(resumed) == roomcommands.RESUMED
    await say(anna, room, {"msgtype": "m.text", "body": "после паузы"})
    await eventually(lambda: holds("Анна: после паузы" in telegram.texts(chat)))
    assert [m["text"] for m in telegram.sent(chat)] == [
        roomcommands.TELEGRAM_PAUSED,
        roomcommands.TELEGRAM_RESUMED,
        "Анна: после паузы",
    ]  # the bot's messages: no command and nothing said in the pause
    await telegram.user_says(chat, IVAN, "из Telegram после паузы")

    async def ghost_bodies() -> list[str]:
        return [
            str(e["content"]["body"])
            for e in await messages(anna, room)
            if e["sender"].startswith("@tg_5550001:")
        ]

    await eventually(lambda: _has(ghost_bodies, "из Telegram после паузы"), within=15)
    assert "из Telegram в паузе" not in await ghost_bodies()


async def _has(bodies: Any, text: str) -> bool:
    return text in await bodies()


async def test_a_long_message_is_split_and_a_429_is_waited_out(
    bridge_world: BridgeWorld,
    telegram: FakeTelegram,
    running: list[Bridge],
    anna: Account,
    tmp_path: Path,
) -> None:
    chat = -1001000000002
    _bridge, room = await bridged(bridge_world, telegram, running, tmp_path, anna, chat, "mirror")
    telegram.fail_next("sendMessage", 429, retry_after=3)  # longer than the first backoff (2 s)
    body = "\n".join(f"строка {i}: " + "текст " * 12 for i in range(120))  # about 10,000 chars
    await say(anna, room, {"msgtype": "m.text", "body": body})
    await eventually(lambda: holds(len(telegram.texts(chat)) == 3), within=15)
    texts = telegram.texts(chat)
    assert "".join(texts) == "Анна: " + body
    assert all(len(t) <= 4096 for t in texts)
    refused, retried, *_ = telegram.method_calls("sendMessage")
    assert retried.at - refused.at >= 2.95
    assert len(telegram.method_calls("sendMessage")) == 4  # one refused, three parts


async def test_a_group_that_becomes_a_supergroup_is_followed(
    bridge_world: BridgeWorld,
    telegram: FakeTelegram,
    running: list[Bridge],
    anna: Account,
    tmp_path: Path,
) -> None:
    group, supergroup, again = -2000000001, -1002000000001, -1002000000002
    bridge, room = await bridged(
        bridge_world, telegram, running, tmp_path, anna, group, chat_type="group"
    )
    await say(anna, room, {"msgtype": "m.text", "body": "до"})
    await eventually(lambda: holds(telegram.texts(group) == ["Анна: до"]))

    # The service message in the old group moves the portal.
    await telegram.migrate(group, supergroup)
    await eventually(lambda: holds(bridge.relay._rooms[room].chat_id == supergroup), within=10)
    await say(anna, room, {"msgtype": "m.text", "body": "после"})
    await eventually(lambda: holds(telegram.texts(supergroup) == ["Анна: после"]))

    # A send refused with migrate_to_chat_id moves it too (the update was never seen).
    telegram.add_chat(again)
    telegram.chats[supergroup].migrated_to = again
    await say(anna, room, {"msgtype": "m.text", "body": "снова"})
    await eventually(lambda: holds(telegram.texts(again) == ["Анна: снова"]))
    assert bridge.relay._rooms[room].chat_id == again
    # Telegram → Matrix follows the new id as well.
    await telegram.user_says(again, IVAN, "я тут")

    async def relayed() -> bool:
        return any(e["content"].get("body") == "я тут" for e in await messages(anna, room))

    await eventually(relayed, within=15)


async def test_mirror_mode_relays_one_way_only(
    bridge_world: BridgeWorld,
    telegram: FakeTelegram,
    running: list[Bridge],
    anna: Account,
    tmp_path: Path,
) -> None:
    chat = -1001000000003
    bridge, room = await bridged(bridge_world, telegram, running, tmp_path, anna, chat, "mirror")
    await telegram.user_says(chat, IVAN, "ответ из Telegram")
    await say(anna, room, {"msgtype": "m.text", "body": "анонс"})
    await eventually(lambda: holds("Анна: анонс" in telegram.texts(chat)))
    await eventually(lambda: holds(telegram.updates == []), within=10)  # confirmed, not relayed
    assert [e["content"]["body"] for e in await messages(anna, room)] == ["анонс"]
    # Added to a chat no room bridges, the bot leaves it; its own chat it keeps.
    await telegram.bot_added(-1009999999999, IVAN)
    await telegram.bot_added(chat, IVAN)
    await eventually(lambda: holds(not telegram.chats[-1009999999999].bot_member), within=10)
    await eventually(lambda: holds(telegram.updates == []), within=10)
    assert telegram.chats[chat].bot_member
    assert [c.params["chat_id"] for c in telegram.method_calls("leaveChat")] == [-1009999999999]
    # Telegram failing once puts the message off; the next one waits for it: order is kept.
    telegram.fail_next("sendMessage", 502)
    await say(anna, room, {"msgtype": "m.text", "body": "раз"})
    await say(anna, room, {"msgtype": "m.text", "body": "два"})
    await eventually(lambda: holds(len(telegram.texts(chat)) == 4), within=15)
    assert telegram.texts(chat)[-2:] == ["Анна: раз", "Анна: два"]
    # Paced below the chat's limit (here 2 in 2 s): the rest wait, in order, without a 429.
    bridge.relay.pacer = Pacer(per_minute=2, window_s=2.0)
    for n in ("три", "четыре", "пять", "шесть"):
        await say(anna, room, {"msgtype": "m.text", "body": n})
    await eventually(lambda: holds(len(telegram.texts(chat)) == 8), within=15)
    assert telegram.texts(chat)[-4:] == ["Анна: три", "Анна: четыре", "Анна: пять", "Анна: шесть"]
    calls = telegram.method_calls("sendMessage")[-4:]
    assert calls[2].at - calls[0].at >= 1.9


async def test_an_encrypted_room_is_refused_and_an_undesignated_one_left(
    bridge_world: BridgeWorld,
    telegram: FakeTelegram,
    running: list[Bridge],
    anna: Account,
    tmp_path: Path,
) -> None:
    chat = -1001000000004
    telegram.add_chat(chat)
    key = unique_key()
    bridge = await start(bridge_world, telegram, running, tmp_path, bridge_world.portal(key, chat))
    room = await bridge_world.room(key, [anna], encrypted=True)

    async def notice() -> list[dict[str, Any]]:
        return [e for e in await messages(anna, room) if e["sender"] == bridge.relay.bot]

    async def left(where: RoomId) -> bool:
        members = await anna.http.get(cs("rooms", where, "members"))
        return any(
            e["state_key"] == bridge.relay.bot and e["content"]["membership"] == "leave"
            for e in members["chunk"]
        )

    [refusal] = await eventually(notice, within=15)
    assert refusal["content"]["msgtype"] == "m.notice"
    assert "encrypted" in refusal["content"]["body"]
    assert bridge.relay._rooms[room].state == "refused"
    await telegram.user_says(chat, IVAN, "никто не услышит")
    await eventually(lambda: holds(telegram.updates == []), within=10)
    assert telegram.method_calls("sendMessage") == []
    assert [e["sender"] for e in await messages(anna, room)] == [bridge.relay.bot]
    await eventually(lambda: left(room), within=15)  # and the bot is gone

    other = await bridge_world.room(unique_key(), [anna])  # the network file does not name it
    await eventually(lambda: left(other), within=15)
    assert other not in bridge.relay._rooms


async def test_forged_transactions_are_refused_and_a_replay_applied_once(
    bridge_world: BridgeWorld,
    telegram: FakeTelegram,
    running: list[Bridge],
    anna: Account,
    tmp_path: Path,
) -> None:
    chat = -1001000000005
    bridge, room = await bridged(bridge_world, telegram, running, tmp_path, anna, chat, "mirror")
    event = {
        "type": "m.room.message",
        "room_id": room,
        "sender": anna.user_id,
        "event_id": "$forged-" + secrets.token_hex(6),
        "origin_server_ts": 0,
        "content": {"msgtype": "m.text", "body": "подделка"},
    }
    txn = "forged-" + secrets.token_hex(4)
    url = f"{bridge_world.config.url}/_matrix/app/v1/transactions/{txn}"
    hs_token = ensure_tokens(bridge_world.vault).hs_token
    as_token = ensure_tokens(bridge_world.vault).as_token
    before = await scrape(bridge_world.config.url)
    async with aiohttp.ClientSession() as http:
        for headers, params, status in [
            ({}, {}, 401),
            ({"Authorization": "Bearer wrong"}, {}, 403),
            ({"Authorization": f"Bearer {as_token}"}, {}, 403),  # the other token
            ({}, {"access_token": hs_token}, 401),  # tokens in URLs are not taken
        ]:
            async with http.put(url, json={"events": [event]}, headers=headers, params=params) as r:
                assert r.status == status
        assert not await bridge.relay.store.txn_seen(txn)  # (Synapse's own may come and go)
        queued = await bridge.relay.store.due(now=1e12)
        assert event["event_id"] not in [i.event["event_id"] for i in queued]
        # The homeserver's token, the same transaction three times: one message.
        for _ in range(3):
            auth = {"Authorization": f"Bearer {hs_token}"}
            async with http.put(url, json={"events": [event]}, headers=auth) as r:
                assert r.status == 200
    await eventually(lambda: holds(telegram.texts(chat) == ["Анна: подделка"]))
    assert await bridge.relay.store.txn_seen(txn)
    assert len(telegram.method_calls("sendMessage")) == 1
    # Monitoring saw it (the registry is the process's: deltas; Synapse's own transactions may
    # be accepted meanwhile): four refusals, our replays, the relayed message and its lag.
    after = await scrape(bridge_world.config.url)

    def delta(series: str) -> float:
        return after.get(series, 0.0) - before.get(series, 0.0)

    assert delta('clubs_bridge_transactions_total{outcome="refused"}') == 4
    assert delta('clubs_bridge_transactions_total{outcome="replayed"}') >= 2
    assert delta('clubs_bridge_transactions_total{outcome="accepted"}') >= 1
    assert delta('clubs_bridge_events_total{what="relayed_to_telegram"}') >= 1
    assert delta('clubs_bridge_relay_lag_seconds_count{direction="to_telegram"}') >= 1
    assert after["clubs_bridge_telegram_ok"] == 1


async def scrape(url: str) -> dict[str, float]:
    """The bridge's /metrics as {series: value}; no room, chat or content in it."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert "!" not in text  # no room id
    assert "подделка" not in text
    return {
        series: float(value)
        for series, value in (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
    }


async def test_a_bridge_stopped_with_accepted_work_loses_and_doubles_nothing(
    bridge_world: BridgeWorld,
    telegram: FakeTelegram,
    running: list[Bridge],
    anna: Account,
    tmp_path: Path,
) -> None:
    chat = -1001000000006
    telegram.add_chat(chat)
    key = unique_key()
    portal = bridge_world.portal(key, chat)
    first = await start(bridge_world, telegram, running, tmp_path, portal)
    room = await bridge_world.room(key, [anna])
    await eventually(lambda: active(first, room), within=15)
    await telegram.user_says(chat, IVAN, "одно сообщение")

    async def from_ivan() -> list[dict[str, Any]]:
        return [e for e in await messages(anna, room) if e["sender"].startswith("@tg_5550001:")]

    await eventually(from_ivan, within=15)

    # The worker dies; the homeserver's transaction is still accepted (stored) and answered.
    first.tasks[0].cancel()
    await say(anna, room, {"msgtype": "m.text", "body": "принято, не отправлено"})
    await eventually(lambda: first.relay.store.inbox_size(), within=15)
    # The Telegram offset is lost too, as if the process died before writing it.
    await first.relay.store.set_setting("telegram_offset", "1")
    await first.stop()
    running.remove(first)
    assert telegram.texts(chat) == ["одно сообщение"]

    second = await start(bridge_world, telegram, running, tmp_path, portal)
    await eventually(lambda: holds("Анна: принято, не отправлено" in telegram.texts(chat)))
    await eventually(lambda: holds(telegram.updates == []), within=10)
    await eventually(lambda: holds(second.relay.health.last_poll > 0), within=10)
    assert telegram.texts(chat) == ["одно сообщение", "Анна: принято, не отправлено"]
    assert len(await from_ivan()) == 1
    assert await second.relay.store.inbox_size() == 0


async def test_hostile_input_never_stops_the_bridge_and_content_stays_out_of_logs(
    bridge_world: BridgeWorld,
    telegram: FakeTelegram,
    running: list[Bridge],
    anna: Account,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # As in production (`setup_logging` puts it on every handler): the bot's E2EE device runs
    # nio, which quotes whole sync responses at DEBUG; the filter cuts those lines.
    caplog.handler.addFilter(RedactingFilter())
    chat = -1001000000007
    telegram.add_chat(chat)
    key = unique_key()
    bridge = await start(bridge_world, telegram, running, tmp_path, bridge_world.portal(key, chat))
    room = await bridge_world.room(key, [anna])
    mallory = await bridge_world.synapse.new_user("mallory", displayname="Mallory")
    await bridge_world.synapse.admin.http.post(
        cs("rooms", room, "invite"), {"user_id": mallory.user_id}
    )
    await mallory.http.post(cs("join", room), {})
    await eventually(lambda: active(bridge, room), within=15)

    # Matrix: odd contents from a real member, and an edit of Anna's message by someone else.
    original = await say(anna, room, {"msgtype": "m.text", "body": "canary-one 7c1f"})
    await eventually(lambda: holds(telegram.texts(chat) == ["Анна: canary-one 7c1f"]))
    odd: list[dict[str, Any]] = [
        {"msgtype": "m.text", "body": "x", "m.new_content": 5},
        {"msgtype": "m.weird", "body": "x", "m.relates_to": {"m.in_reply_to": 5}},
        {"msgtype": "m.text", "body": "x", "m.relates_to": "nonsense"},
        {"msgtype": "m.text", "body": "x", "m.relates_to": {"rel_type": "m.replace"}},
        {
            "msgtype": "m.text",
            "body": "* взлом",
            "m.new_content": {"msgtype": "m.text", "body": "взлом"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    ]
    for content in odd:
        await say(mallory, room, content)
    # Telegram: updates that are not what they should be.
    hostile: list[Any] = [
        {"message": {"message_id": "x", "chat": {"id": chat}}},
        {"message": {"message_id": 999, "chat": "x", "text": "y"}},
        {"message": {"message_id": 998, "chat": {"id": chat}, "from": "x", "text": "y"}},
        {"message": {"message_id": 997, "chat": {"id": chat}, "from": {"id": 1}, "text": 5}},
        {"edited_message": {"message_id": 12345, "chat": {"id": chat}, "from": IVAN, "text": "y"}},
        {"channel_post": None},
    ]
    for h in hostile:
        telegram.updates.append({"update_id": telegram.next_update, **h})
        telegram.next_update += 1
    await telegram.user_says(chat, IVAN, "canary-two 9d2e")
    await say(anna, room, {"msgtype": "m.text", "body": "всё ещё работает"})

    async def ivan_relayed() -> bool:
        return any(
            e["content"].get("body") == "canary-two 9d2e" for e in await messages(anna, room)
        )

    await eventually(ivan_relayed, within=15)
    await eventually(lambda: holds("Анна: всё ещё работает" in telegram.texts(chat)))
    assert "Анна: canary-one 7c1f" in telegram.texts(chat)  # the forged edit changed nothing
    assert not any("взлом" in t for t in telegram.texts(chat))
    assert "bridging" in caplog.text  # the bridge's own log lines were captured
    for canary in ("canary-one", "canary-two", "Анна", "Иван", BOT_TOKEN_PART):
        assert canary not in caplog.text
        for f in tmp_path.rglob("*"):
            if f.is_file():
                assert canary.encode() not in f.read_bytes(), f


BOT_TOKEN_PART = "fake-telegram-bot-token"
