"""Telegram → Matrix: the long poll (`getUpdates`, its offset confirmed after each update),
messages from a chat's members by their ghosts (or encrypted by the bot's device), edits,
images, the bot added to a chat no room bridges.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from clubs.bridge.bridgemetrics import RELAY_LAG
from clubs.bridge.formatting import (
    matrix_edit,
    telegram_name,
    telegram_text,
    to_matrix,
)
from clubs.bridge.matrix import TooLarge
from clubs.bridge.media import (
    TELEGRAM_DOWNLOAD_MAX,
    MediaRefused,
    TelegramFile,
    image_content,
    sticker_emoji,
    strip_image,
    telegram_media,
)
from clubs.bridge.registration import PREFIX, ghost_user
from clubs.bridge.relaystate import (
    POLL_BACKOFF_MAX_S,
    RelayState,
    Retry,
    describe_error,
    transient,
    with_not_relayed,
)
from clubs.bridge.store import PortalRow, Sent
from clubs.bridge.telegram import (
    FileTooLarge,
    TelegramRateLimited,
)
from clubs.core.attachments import encrypt, encrypted_file
from clubs.core.crash import crashpoint
from clubs.core.ids import RoomId, UserId
from clubs.core.txn import txn_id

log = logging.getLogger("clubs.bridge.relay")

OFFSET_KEY = "telegram_offset"


class ToMatrix(RelayState):
    async def run_poller(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self.poll_once()
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.health.telegram(False)
                wait = backoff
                if isinstance(e, TelegramRateLimited):
                    wait = max(wait, float(e.retry_after))
                log.warning(
                    "Telegram polling failed (%s); again in %.0f s", describe_error(e), wait
                )
                await asyncio.sleep(wait)
                backoff = min(POLL_BACKOFF_MAX_S, backoff * 2)

    async def poll_once(self) -> int:
        """One getUpdates round: handle each update, then confirm it (the offset, persisted)."""
        if self.telegram_bot_id is None:
            me = await self.telegram.get_me()
            self.telegram_bot_id = me.get("id") if isinstance(me.get("id"), int) else None
        stored = await self.store.get_setting(OFFSET_KEY)
        offset = int(stored) if stored else None
        updates = await self.telegram.get_updates(offset, self.poll_timeout_s)
        self.health.telegram(True)
        for update in updates:
            update_id = int(update["update_id"])
            try:
                await self.handle_update(update)
            except Exception as e:
                if transient(e):
                    raise Retry(f"update {update_id}: {type(e).__name__}") from None
                log.warning("update %d dropped: %s", update_id, describe_error(e))
                self.health.count("dropped")
            crashpoint("bridge_update_handled")  # relayed, the offset not yet stored
            await self.store.set_setting(OFFSET_KEY, str(update_id + 1))
        return len(updates)

    async def handle_update(self, update: Mapping[str, Any]) -> None:
        member = update.get("my_chat_member")
        if isinstance(member, dict):
            await self._on_bot_membership(member)
            return
        for kind in ("message", "channel_post", "edited_message", "edited_channel_post"):
            message = update.get(kind)
            if isinstance(message, dict):
                await self._on_telegram(message, edited=kind.startswith("edited_"))
                return

    async def _on_bot_membership(self, update: Mapping[str, Any]) -> None:
        """The bot was added to a chat: it leaves any chat the network file does not bridge, so
        that nobody can make it read (or post into) a chat of their choosing."""
        chat = update.get("chat")
        new = update.get("new_chat_member")
        chat_id = chat.get("id") if isinstance(chat, dict) else None
        status = new.get("status") if isinstance(new, dict) else None
        if not isinstance(chat_id, int) or status not in ("member", "administrator", "restricted"):
            return
        known = {p.chat for p in self.portals} | {p.chat_id for p in self._rooms.values()}
        if chat_id in known:
            return
        log.warning("added to Telegram chat %d, which no room bridges: leaving it", chat_id)
        await self.telegram.leave_chat(chat_id)

    async def _on_telegram(self, message: Mapping[str, Any], *, edited: bool) -> None:
        chat = message.get("chat")
        chat_id = chat.get("id") if isinstance(chat, dict) else None
        message_id = message.get("message_id")
        if not isinstance(chat_id, int) or not isinstance(message_id, int):
            return
        migrated = message.get("migrate_to_chat_id")
        if isinstance(migrated, int) and not isinstance(migrated, bool):
            await self._migrate(chat_id, migrated)
            return
        portal = self.portal_for_chat(chat_id)
        if portal is None or portal.mode != "relay":
            return
        if portal.room_id in self._paused:
            self.health.count("not_relayed_paused")
            return  # paused by the room's moderators: nothing crosses, nothing waits
        sender = message.get("from")
        if not isinstance(sender, dict) or not isinstance(sender.get("id"), int):
            return  # a channel post without an author: not relayed
        if sender.get("id") == self.telegram_bot_id:
            return
        text = telegram_text(message)
        if edited and telegram_media(message) is not None:
            # A caption edited: the Matrix event is an image (or the word that a file did not
            # cross); a text edit would replace it with text. Not followed.
            log.info("edit of the caption of Telegram message %d not followed", message_id)
            return
        media = None if edited else telegram_media(message)
        refused = False
        if media == "refused":
            media = None
            emoji = sticker_emoji(message)
            if emoji is not None and text is None:
                text = emoji  # a sticker crosses as the emoji it stands for
            else:
                log.info("media of Telegram message %d not relayed: not an image", message_id)
                self.health.count("media_refused")
                refused = True
        if text is None and media is None and not refused:
            return
        ghost: UserId | None = None
        prefix = ""
        if portal.encrypted:
            # No ghosts in encrypted rooms: the bot's cross-signed device speaks for them.
            if self.device is None:
                return
            prefix = f"{telegram_name(sender)}: "
            text = f"{prefix}{text}" if text is not None else None
        else:
            ghost = await self._ghost(sender, portal.room_id)
        if refused:
            text = with_not_relayed(text, prefix)
        if edited:
            original = await self.store.event_of(chat_id, message_id)
            if original is None or original.origin != "telegram" or text is None:
                return
            edit_date = message.get("edit_date")
            await self._post(
                portal,
                matrix_edit(original.event_id, text),
                txn_id("tg-edit", str(chat_id), str(message_id), str(edit_date)),
                ghost,
            )
            return
        if await self.store.event_of(chat_id, message_id) is not None:
            return  # relayed before a crash
        date = message.get("date")
        content: dict[str, Any] | None = None
        if isinstance(media, TelegramFile):
            caption = (
                text if text is not None else telegram_name(sender) if portal.encrypted else ""
            )
            content = await self._telegram_image(portal, media, caption, ghost, message_id)
            if content is None:  # refused: its caption and a word that a file did not cross
                text = with_not_relayed(text, prefix)
        if content is None:
            if text is None:
                return
            content = to_matrix(text)
        answered = message.get("reply_to_message")
        if isinstance(answered, dict) and isinstance(answered.get("message_id"), int):
            original = await self.store.event_of(chat_id, answered["message_id"])
            if original is not None:  # only a message that crossed the bridge is linked
                content["m.relates_to"] = {"m.in_reply_to": {"event_id": original.event_id}}
        event_id = await self._post(
            portal,
            content,
            txn_id("tg", str(chat_id), str(message_id)),
            ghost,
            ts_ms=date * 1000 if isinstance(date, int) else None,
        )
        await self.store.record(
            [Sent(event_id, 0, portal.room_id, chat_id, message_id, "telegram")]
        )
        self.health.count("relayed_to_matrix")
        if isinstance(date, int) and not isinstance(date, bool):
            RELAY_LAG.observe(max(0.0, time.time() - date), direction="to_matrix")

    async def _telegram_image(
        self, portal: PortalRow, media: TelegramFile, caption: str, ghost: UserId | None, mid: int
    ) -> dict[str, Any] | None:
        """A Telegram image as Matrix `m.image` content, stripped of its metadata, uploaded by
        the ghost (or, for an encrypted room, encrypted and uploaded by the bot); None when it
        is refused (then only the caption crosses)."""
        try:
            if media.size is not None and media.size > TELEGRAM_DOWNLOAD_MAX:
                raise MediaRefused("too_large")
            try:
                data = await self.telegram.download(media.file_id, TELEGRAM_DOWNLOAD_MAX)
            except FileTooLarge:
                raise MediaRefused("too_large") from None
            image = await asyncio.to_thread(strip_image, data)  # CPU-bound: off the loop
            if ghost is not None:
                url = await self.matrix.upload(image.data, image.mimetype, ghost)
                return image_content(image, caption or image.filename, url=url)
            sealed = encrypt(image.data)
            url = await self.matrix.upload(sealed.ciphertext, "application/octet-stream", self.bot)
            return image_content(image, caption, file=encrypted_file(url, sealed.keys))
        except TooLarge:
            reason = "too_large"
        except MediaRefused as e:
            reason = e.reason
        log.info("media of Telegram message %d not relayed: %s", mid, reason)
        self.health.count("media_refused")
        return None

    async def _ghost(self, user: Mapping[str, Any], room: RoomId) -> UserId:
        """The sender's ghost, registered, named and joined to the room."""
        telegram_id = int(user["id"])
        ghost = ghost_user(telegram_id, self.server_name)
        name = telegram_name(user)
        profile = hashlib.sha256(name.encode()).hexdigest()
        stored = await self.store.ghost_profile(telegram_id)
        if stored is None:
            await self.matrix.ensure_registered(f"{PREFIX}{telegram_id}")
        if stored != profile:
            await self.matrix.set_displayname(ghost, name)
            await self.store.set_ghost_profile(telegram_id, profile)
        if (room, ghost) not in self._joined:
            await self.matrix.ensure_joined(room, ghost, self.bot)
            self._joined.add((room, ghost))
        return ghost

    async def user_exists(self, user_id: str) -> bool:
        if user_id == self.bot:
            return True
        local = user_id[1:].partition(":")[0]
        rest = local[len(PREFIX) :]
        if not local.startswith(PREFIX) or not rest.isdigit():
            return False
        return await self.store.ghost_profile(int(rest)) is not None
