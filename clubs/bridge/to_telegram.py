"""Matrix → Telegram: a bridged room's messages (text, images), their edits and redactions,
sent into the portal's chat after the moderation hold, each part recorded as it is sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from clubs.bridge.formatting import (
    clean_name,
    escape,
    split,
    to_telegram,
    utf16_len,
)
from clubs.bridge.matrix import TooLarge
from clubs.bridge.media import (
    CAPTION_MAX,
    MATRIX_DOWNLOAD_MAX,
    TELEGRAM_DOCUMENT_MAX,
    TELEGRAM_PHOTO_MAX,
    CleanImage,
    MatrixMedia,
    MediaRefused,
    decrypt_file,
    matrix_media,
    strip_image,
)
from clubs.bridge.relaystate import (
    RelayState,
    Throttled,
    with_not_relayed,
)
from clubs.bridge.store import PortalRow, Sent
from clubs.core.crash import crashpoint
from clubs.core.errors import NotFound
from clubs.core.ids import EventId, RoomId, as_event_id

log = logging.getLogger("clubs.bridge.relay")


class ToTelegram(RelayState):
    async def _held_or_redacted(self, event: Mapping[str, Any]) -> bool:
        """Raises Throttled while the message is younger than the hold; then True if it was
        redacted meanwhile (by the moderation bot, a moderator or its sender)."""
        ts = event.get("origin_server_ts")
        if isinstance(ts, int) and not isinstance(ts, bool):
            wait = ts / 1000 + self.hold_s - time.time()
            if wait > 0:
                raise Throttled(wait)
        room, event_id = RoomId(str(event["room_id"])), EventId(str(event["event_id"]))
        if await self.matrix.is_redacted(room, event_id, self.bot):
            log.info("event %s was redacted while held: not relayed", event_id)
            return True
        return False

    async def _on_message(self, portal: PortalRow, event: Mapping[str, Any]) -> None:
        content = event["content"]
        event_id = EventId(str(event["event_id"]))
        relates = content.get("m.relates_to")
        if isinstance(relates, dict) and relates.get("rel_type") == "m.replace":
            target = as_event_id(relates.get("event_id"))
            new = content.get("m.new_content")
            if target is not None and isinstance(new, dict):
                await self._edit(portal, target, str(event.get("sender")), new)
            return
        name = await self._name(portal.room_id, str(event["sender"]))
        media = matrix_media(content)
        if media is not None:
            await self._media_to_telegram(portal, event_id, name or "Участник", media, content)
            return
        parts = to_telegram(name or "Участник", content)
        if parts is None:
            return
        await self._send_parts(portal, event_id, parts, await self._reply_target(portal, content))

    async def _send_parts(
        self, portal: PortalRow, event_id: EventId, parts: Sequence[str], reply_to: int | None
    ) -> None:
        done = {s.part for s in await self.store.parts_of(event_id)}
        for i, html in enumerate(parts):
            if i in done:
                continue  # sent before a crash or a retry
            message_id, chat = await self._send(portal, html, reply_to if i == 0 else None)
            await self.store.record([Sent(event_id, i, portal.room_id, chat, message_id, "matrix")])
            crashpoint("bridge_part_recorded")  # this part sent and recorded, the event not done
        self.health.count("relayed_to_telegram")

    async def _media_to_telegram(
        self,
        portal: PortalRow,
        event_id: EventId,
        name: str,
        media: MatrixMedia,
        content: Mapping[str, Any],
    ) -> None:
        """An image, stripped of its metadata, as a Telegram photo with "**Name**: caption";
        any other file is refused and only its caption (if any) crosses, as text."""
        if await self.store.parts_of(event_id):
            return  # sent before a crash or a retry
        head = f"<b>{escape(clean_name(name))}</b>"
        reply_to = await self._reply_target(portal, content)
        try:
            image = await self._matrix_image(portal, media)
        except MediaRefused as e:
            log.info("media of %s not relayed: %s", event_id, e.reason)
            self.health.count("media_refused")
            # Its caption, and a word that a file did not cross.
            body = with_not_relayed(media.caption or None, "")
            parts = to_telegram(name, {"msgtype": "m.text", "body": body})
            if parts:
                await self._send_parts(portal, event_id, parts, reply_to)
            return
        text = media.caption or ""
        rest: list[str] = []
        if text and utf16_len(clean_name(name)) + 2 + utf16_len(text) > CAPTION_MAX:
            rest = split(text)  # too long for a caption: the text follows as messages
            text = ""
        caption_html = f"{head}: {escape(text)}" if text else head

        async def upload(chat: int, reply: int | None) -> int:
            return await self.telegram.send_file(
                chat,
                image.data,
                filename=image.filename,
                mimetype=image.mimetype,
                caption_html=caption_html,
                as_photo=len(image.data) <= TELEGRAM_PHOTO_MAX,
                reply_to=reply,
            )

        message_id, chat = await self._paced(portal, upload, reply_to)
        await self.store.record([Sent(event_id, 0, portal.room_id, chat, message_id, "matrix")])
        for i, part in enumerate(rest, start=1):
            message_id, chat = await self._send(portal, escape(part))
            await self.store.record([Sent(event_id, i, portal.room_id, chat, message_id, "matrix")])
        self.health.count("relayed_to_telegram")

    async def _matrix_image(self, portal: PortalRow, media: MatrixMedia) -> CleanImage:
        """The image of a Matrix media message, downloaded, decrypted if need be, stripped."""
        if media.msgtype != "m.image":
            raise MediaRefused("not_an_image")
        if media.size is not None and media.size > MATRIX_DOWNLOAD_MAX:
            raise MediaRefused("too_large")
        if media.file is None and portal.encrypted:
            raise MediaRefused("damaged")  # a plain file in an encrypted room: not expected
        try:
            data = await self.matrix.download(media.url, self.bot, MATRIX_DOWNLOAD_MAX)
        except TooLarge:
            raise MediaRefused("too_large") from None
        except NotFound:
            raise MediaRefused("damaged") from None
        if media.file is not None:
            data = decrypt_file(data, media.file)
        image = await asyncio.to_thread(strip_image, data)  # CPU-bound: off the loop
        if len(image.data) > TELEGRAM_DOCUMENT_MAX:
            raise MediaRefused("too_large")
        return image

    async def _reply_target(self, portal: PortalRow, content: Mapping[str, Any]) -> int | None:
        """The Telegram message a Matrix reply answers, if that message crossed the bridge (a
        reply to anything else is sent as a plain message: no older history is quoted)."""
        relates = content.get("m.relates_to")
        reply = relates.get("m.in_reply_to") if isinstance(relates, dict) else None
        target = as_event_id(reply.get("event_id")) if isinstance(reply, dict) else None
        if target is None:
            return None
        parts = await self.store.parts_of(target)
        if not parts or parts[0].chat_id != self._rooms[portal.room_id].chat_id:
            return None
        return parts[0].message_id

    async def _edit(
        self, portal: PortalRow, target: EventId, sender: str, new: Mapping[str, Any]
    ) -> None:
        old = await self.store.parts_of(target)
        if not old or old[0].origin != "matrix":
            return  # not relayed by us (or too old): nothing to edit
        if new.get("msgtype") not in ("m.text", "m.notice", "m.emote"):
            log.info("edit of the caption of %s not followed", target)
            return  # a photo's caption: editMessageText would be refused by Telegram
        if await self.matrix.event_sender(portal.room_id, target, self.bot) != sender:
            log.info("edit of %s by someone else than its sender: ignored", target)
            return  # only the sender may edit a message (the spec's rule for m.replace)
        name = await self._name(portal.room_id, sender)
        parts = to_telegram(name or "Участник", new) or []
        sent: list[Sent] = []
        for i, html in enumerate(parts):
            if i < len(old):
                await self.telegram.edit_message(old[i].chat_id, old[i].message_id, html)
            else:
                message_id, chat = await self._send(portal, html)
                sent.append(Sent(target, i, portal.room_id, chat, message_id, "matrix"))
        for extra in old[len(parts) :]:
            await self.telegram.delete_message(extra.chat_id, extra.message_id)
        await self.store.record(sent)

    async def _on_redaction(self, portal: PortalRow, event: Mapping[str, Any]) -> list[str]:
        target = as_event_id(event["content"].get("redacts") or event.get("redacts"))
        if target is None:
            return []
        parts = await self.store.parts_of(target)
        for part in parts:
            await self.telegram.delete_message(part.chat_id, part.message_id)
        return [target] if parts else []
