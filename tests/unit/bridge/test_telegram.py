"""The Bot API client against the fake Telegram: 429s, migration, errors, long polling."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clubs.bridge.telegram import (
    BotApi,
    ChatMigrated,
    TelegramError,
    TelegramRateLimited,
    TelegramUnavailable,
)
from tests.faketelegram import FakeTelegram

TOKEN = "123456:secret-bot-token"
CHAT = -1001234


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    tg = FakeTelegram(TOKEN, poll_cap_s=0.2)
    await tg.start()
    tg.add_chat(CHAT)
    yield tg
    await tg.stop()


@pytest.fixture
async def waits() -> list[float]:
    return []


@pytest.fixture
async def api(fake: FakeTelegram, waits: list[float]) -> AsyncIterator[BotApi]:
    async def sleep(s: float) -> None:
        waits.append(s)

    client = BotApi(TOKEN, fake.url, sleep=sleep, max_retries=3)
    yield client
    await client.close()


async def test_send_edit_delete(fake: FakeTelegram, api: BotApi) -> None:
    mid = await api.send_message(CHAT, "<b>Анна</b>: привет &amp; пока")
    assert fake.texts(CHAT) == ["Анна: привет & пока"]
    await api.edit_message(CHAT, mid, "<b>Анна</b>: привет!")
    assert fake.texts(CHAT) == ["Анна: привет!"]
    await api.edit_message(CHAT, mid, "<b>Анна</b>: привет!")  # not modified: not an error
    assert await api.delete_message(CHAT, mid) is True
    assert fake.texts(CHAT) == []
    assert await api.delete_message(CHAT, mid) is False


async def test_a_429_is_retried_after_its_retry_after(
    fake: FakeTelegram, api: BotApi, waits: list[float]
) -> None:
    fake.fail_next("sendMessage", 429, retry_after=7, times=2)
    await api.send_message(CHAT, "hi")
    assert waits == [7, 7]
    assert len(fake.method_calls("sendMessage")) == 3
    assert fake.texts(CHAT) == ["hi"]


async def test_a_429_that_persists_is_raised_with_its_wait(
    fake: FakeTelegram, api: BotApi, waits: list[float]
) -> None:
    fake.fail_next("sendMessage", 429, retry_after=2, times=10)
    with pytest.raises(TelegramRateLimited) as caught:
        await api.send_message(CHAT, "hi")
    assert caught.value.retry_after == 2
    assert waits == [2, 2, 2]
    assert fake.texts(CHAT) == []


async def test_a_real_wait_is_honoured(fake: FakeTelegram) -> None:
    client = BotApi(TOKEN, fake.url)
    try:
        fake.fail_next("sendMessage", 429, retry_after=1)
        await client.send_message(CHAT, "hi")
        first, second = fake.method_calls("sendMessage")
        assert second.at - first.at >= 0.95
    finally:
        await client.close()


async def test_a_migrated_group_names_its_new_id(fake: FakeTelegram, api: BotApi) -> None:
    await fake.migrate(CHAT, -1009999)
    with pytest.raises(ChatMigrated) as caught:
        await api.send_message(CHAT, "hi")
    assert caught.value.new_chat_id == -1009999
    await api.send_message(caught.value.new_chat_id, "hi")
    assert fake.texts(-1009999) == ["hi"]


async def test_errors_never_carry_the_token(fake: FakeTelegram, api: BotApi) -> None:
    with pytest.raises(TelegramError) as bad:
        await api.send_message(CHAT, "a <x> b")
    assert bad.value.code == 400
    assert "can't parse entities" in bad.value.description
    fake.fail_next("sendMessage", 502)
    with pytest.raises(TelegramUnavailable):
        await api.send_message(CHAT, "hi")
    gone = BotApi(TOKEN, "http://127.0.0.1:9")
    with pytest.raises(TelegramUnavailable) as down:
        await gone.send_message(CHAT, "hi")
    await gone.close()
    wrong = BotApi("1:wrong", fake.url)
    with pytest.raises(TelegramError) as unauthorised:
        await wrong.get_me()
    await wrong.close()
    assert unauthorised.value.code == 401
    for e in (bad.value, down.value, unauthorised.value):
        assert "secret-bot-token" not in str(e)
    assert "secret" not in repr(api)


async def test_updates_are_confirmed_by_the_offset(fake: FakeTelegram, api: BotApi) -> None:
    user = {"id": 42, "is_bot": False, "first_name": "Иван"}
    await fake.user_says(CHAT, user, "one")
    await fake.user_says(CHAT, user, "two")
    first = await api.get_updates(None, 0)
    assert [u["message"]["text"] for u in first] == ["one", "two"]
    again = await api.get_updates(first[0]["update_id"] + 1, 0)
    assert [u["message"]["text"] for u in again] == ["two"]
    assert await api.get_updates(again[-1]["update_id"] + 1, 1) == []


async def test_files_go_up_multipart_and_come_down_within_the_limit(
    api: BotApi, fake: FakeTelegram
) -> None:
    from clubs.bridge.telegram import FileTooLarge
    from tests.unit.bridge.test_media import photo_with_gps

    photo = photo_with_gps()
    mid = await api.send_file(
        CHAT, photo, filename="image.jpg", mimetype="image/jpeg", caption_html="<b>Анна</b>: фото"
    )
    message = fake.chats[CHAT].messages[mid]
    assert message["caption"] == "Анна: фото"
    file_id = message["photo"][-1]["file_id"]
    assert fake.files[file_id] == photo
    assert await api.download(file_id, limit=len(photo)) == photo
    with pytest.raises(FileTooLarge):
        await api.download(file_id, limit=len(photo) - 1)
    with pytest.raises(TelegramError) as e:  # Telegram's caption limit, after parsing
        await api.send_file(
            CHAT, photo, filename="image.jpg", mimetype="image/jpeg", caption_html="я" * 1025
        )
    assert "caption is too long" in e.value.description
    with pytest.raises(TelegramError):  # a document is not a photo: the fake decodes photos
        await api.send_file(CHAT, b"%PDF", filename="a.pdf", mimetype="application/pdf")
    doc = await api.send_file(
        CHAT, b"%PDF", filename="a.pdf", mimetype="application/pdf", as_photo=False
    )
    assert fake.chats[CHAT].messages[doc]["document"]["file_name"] == "a.pdf"
    assert TOKEN not in repr(api)
