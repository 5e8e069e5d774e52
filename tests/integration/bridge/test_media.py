"""Media across the bridge against a real Synapse and the fake Telegram: an image crosses both
ways re-encoded without its EXIF/GPS metadata (Matrix media upload and download, Telegram's
multipart sendPhoto, getFile and file download); a document, a file over Telegram's 20 MB
download limit and a Matrix file that is not an image are refused: their caption crosses with a
word that a file did not; a sticker crosses as its emoji; a redacted photo is deleted in
Telegram."""

from __future__ import annotations

import io
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from clubs.bridge.media import NOT_RELAYED
from clubs.bridge.service import Bridge
from clubs.core.attachments import parse_mxc
from clubs.core.http import RoomId, cs, path
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
from tests.unit.bridge.test_media import photo_with_gps

pytestmark = pytest.mark.integration

IVAN = {"id": 5550031, "is_bot": False, "first_name": "Иван", "last_name": "П."}
METADATA = (b"Exif", b"CanaryPhone", b"canary-comment")


@pytest.fixture
async def bridge(
    bridge_world: BridgeWorld, telegram: FakeTelegram, tmp_path: Path
) -> AsyncIterator[Bridge]:
    b = await bridge_world.bridge(telegram, [bridge_world.portal(KEY, CHAT)], tmp_path)
    yield b
    await b.stop()


CHAT = -1001000000031
KEY = unique_key()


async def upload(user: Account, data: bytes, mimetype: str) -> str:
    resp = await user.http.request_bytes(
        "POST", path("_matrix", "media", "v3", "upload"), data, content_type=mimetype
    )
    return str(resp["content_uri"])


async def download(user: Account, mxc: str) -> bytes:
    server, media_id = parse_mxc(mxc)
    url = user.http.base_url + path(
        "_matrix", "client", "v1", "media", "download", server, media_id
    )
    headers = {"Authorization": f"Bearer {user.http.access_token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        assert resp.status == 200
        return await resp.read()


async def test_images_cross_both_ways_without_metadata_and_other_files_do_not(
    bridge_world: BridgeWorld, telegram: FakeTelegram, bridge: Bridge
) -> None:
    telegram.add_chat(CHAT)
    anna = await bridge_world.synapse.new_user("anna", displayname="Анна")
    room: RoomId = await bridge_world.room(KEY, [anna])
    await eventually(lambda: active(bridge, room), within=15)

    # Matrix → Telegram: a phone photo with a caption becomes a photo without EXIF or GPS.
    original = photo_with_gps()
    mxc = await upload(anna, original, "image/jpeg")
    photo_event = await say(
        anna,
        room,
        {
            "msgtype": "m.image",
            "body": "наша встреча",
            "filename": "IMG_0001.jpg",
            "url": mxc,
            "info": {"mimetype": "image/jpeg", "size": len(original), "w": 40, "h": 20},
        },
    )
    await eventually(lambda: holds(len(telegram.photos(CHAT)) == 1), within=15)
    [sent] = telegram.photos(CHAT)
    assert all(marker not in sent for marker in METADATA)
    with Image.open(io.BytesIO(sent)) as im:
        assert not im.getexif()
        assert im.size == (20, 40)
    assert telegram.texts(CHAT) == ["Анна: наша встреча"]
    [call] = telegram.method_calls("sendPhoto")
    assert call.params["photo"].filename == "image.jpg"  # not the member's file name

    # A file that is not an image is refused: Telegram is told a file did not cross (its name
    # is not said); the next message still goes, in order.
    pdf = await upload(anna, b"%PDF-1.7 canary-author /GPS", "application/pdf")
    await say(anna, room, {"msgtype": "m.file", "body": "отчёт.pdf", "url": pdf})
    await say(anna, room, {"msgtype": "m.text", "body": "после файла"})
    await eventually(lambda: holds("Анна: после файла" in telegram.texts(CHAT)), within=15)
    assert telegram.method_calls("sendDocument") == []
    assert telegram.texts(CHAT)[1:] == [f"Анна: {NOT_RELAYED}", "Анна: после файла"]

    # Telegram → Matrix: Ivan's photo arrives from his ghost, uploaded stripped.
    await telegram.user_sends_photo(CHAT, IVAN, photo_with_gps(size=(64, 32)), "из Telegram")

    async def from_ivan() -> list[dict[str, Any]]:
        return [e for e in await messages(anna, room) if e["sender"].startswith("@tg_5550031:")]

    [image] = await eventually(from_ivan, within=15)
    # An edited caption is not followed: a text edit would replace the image with text.
    photo_mid = max(telegram.chats[CHAT].messages)
    await telegram.user_edits(CHAT, photo_mid, "подпись исправлена")
    content = image["content"]
    assert content["msgtype"] == "m.image"
    assert content["body"] == "из Telegram"
    assert content["filename"] == "image.jpg"
    assert content["info"]["mimetype"] == "image/jpeg"
    arrived = await download(anna, content["url"])
    assert len(arrived) == content["info"]["size"]
    assert all(marker not in arrived for marker in METADATA)
    with Image.open(io.BytesIO(arrived)) as im:
        assert not im.getexif()
        assert im.size == (32, 64)
    downloaded = [c.params["path"] for c in telegram.method_calls("file")]
    [asked] = [c.params["file_id"] for c in telegram.method_calls("getFile")]
    assert downloaded == [f"photos/file_{asked}"]

    # A document, and an image over the 20 MB download limit: only their captions cross.
    await telegram.user_sends_document(
        CHAT, IVAN, b"%PDF-1.7 canary", "паспорт.pdf", "application/pdf", caption="документ"
    )
    too_big = b"\xff\xd8" + secrets.token_bytes(16) * (21 * 1024 * 1024 // 16)
    await telegram.user_sends_document(
        CHAT, IVAN, too_big, "big.jpg", "image/jpeg", caption="большое"
    )
    await telegram.user_sends_sticker(CHAT, IVAN, "👍")
    await telegram.user_sends_sticker(CHAT, IVAN, None, kind="voice")
    await eventually(lambda: _count(from_ivan, 5), within=15)  # the caption edit: no event
    bodies = [(e["content"]["msgtype"], e["content"]["body"]) for e in await from_ivan()]
    assert bodies[1:] == [
        ("m.text", f"документ\n{NOT_RELAYED}"),
        ("m.text", f"большое\n{NOT_RELAYED}"),
        ("m.text", "👍"),  # a sticker crosses as its emoji
        ("m.text", NOT_RELAYED),  # a voice message: that something was said, not what
    ]
    # Neither was fetched: the PDF is no image, the big one announces its size.
    assert len(telegram.method_calls("getFile")) == len(telegram.method_calls("file")) == 1
    assert bridge.relay.health.media_refused == 4

    # A redaction of the photo deletes it in Telegram.
    await anna.http.put(cs("rooms", room, "redact", photo_event, secrets.token_hex(8)), {})
    await eventually(lambda: holds(telegram.photos(CHAT) == []), within=15)


async def _count(source: Any, n: int) -> bool:
    return len(await source()) >= n
