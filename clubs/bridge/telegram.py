"""A small Telegram Bot API client (aiohttp): long polling, send, edit, delete, files.

Wire format: `POST {api}/bot{token}/{method}` with a JSON body; the answer is
`{"ok": true, "result": …}` or `{"ok": false, "error_code": N, "description": "…",
"parameters": {"retry_after": s, "migrate_to_chat_id": id}}`.

- A 429 is retried after its `retry_after` seconds (at most `max_retries` times, each wait
  capped at `MAX_RETRY_AFTER_S`), then raised as `TelegramRateLimited`.
- An answer naming `migrate_to_chat_id` (a group became a supergroup) raises `ChatMigrated`:
  the caller moves the portal to the new id and sends again.
- A failed connection, a timeout or a 5xx raises `TelegramUnavailable` (worth retrying later).

Files: `sendPhoto` / `sendDocument` upload multipart (photos up to 10 MB, other files 50 MB);
`download` asks `getFile` for a path and reads `{api}/file/bot{token}/{path}` (20 MB at most).

The bot token is part of every URL, so no URL, query or body is ever logged or put into an
exception: messages name the method only. `description` texts come from Telegram and never
quote message content.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp

from clubs.core.errors import ClubsError

log = logging.getLogger(__name__)

SEND_PERMISSIONS = (
    # Bot API `ChatPermissions`: the rights to say anything in a chat.
    "can_send_messages",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
    "can_send_polls",
    "can_send_other_messages",
    "can_add_web_page_previews",
)

MAX_RETRY_AFTER_S = 300
ALLOWED_UPDATES = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "my_chat_member",
)
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, ConnectionError, ValueError)

Sleep = Callable[[float], Awaitable[None]]


class TelegramError(ClubsError):
    def __init__(self, method: str, code: int, description: str) -> None:
        super().__init__(f"Telegram {method}: {code} {description}")
        self.method = method
        self.code = code
        self.description = description


class TelegramUnavailable(TelegramError):
    """Telegram could not be reached or failed on its side: try again later."""


class TelegramRateLimited(TelegramError):
    def __init__(self, method: str, retry_after: int) -> None:
        super().__init__(method, 429, f"retry after {retry_after}")
        self.retry_after = retry_after


class FileTooLarge(TelegramError):
    """A file bigger than a bot may download (20 MB)."""


class ChatMigrated(TelegramError):
    def __init__(self, method: str, new_chat_id: int) -> None:
        super().__init__(method, 400, "group chat was upgraded to a supergroup chat")
        self.new_chat_id = new_chat_id


class BotApi:
    def __init__(
        self,
        token: str,
        api: str = "https://api.telegram.org",
        *,
        session: aiohttp.ClientSession | None = None,
        max_retries: int = 5,
        timeout_s: float = 30.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._token = token
        self._api = api.rstrip("/")
        self._own_session = session is None
        self._session = session
        self._max_retries = max_retries
        self._timeout_s = timeout_s
        self._sleep = sleep
        self.waited_s = 0.0
        """Seconds spent waiting on 429s (for tests and health)."""

    def __repr__(self) -> str:  # never the token
        return "BotApi(<token>)"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self, method: str, params: Mapping[str, Any], *, timeout_s: float | None = None
    ) -> Any:
        """Call one method and return its `result`, retrying after 429s."""
        return await self._call(method, lambda: {"json": dict(params)}, timeout_s)

    async def call_multipart(
        self,
        method: str,
        params: Mapping[str, Any],
        field: str,
        filename: str,
        data: bytes,
        mimetype: str,
    ) -> Any:
        """Call one method with a file upload (multipart/form-data, as the Bot API takes new
        files); other parameters as form fields (objects as JSON)."""

        def body() -> dict[str, Any]:
            form = aiohttp.FormData()
            for key, value in params.items():
                text = value if isinstance(value, str) else json.dumps(value)
                form.add_field(key, text)
            form.add_field(field, data, filename=filename, content_type=mimetype)
            return {"data": form}

        return await self._call(method, body, None)

    async def _call(
        self, method: str, body: Callable[[], dict[str, Any]], timeout_s: float | None
    ) -> Any:
        url = f"{self._api}/bot{self._token}/{method}"
        timeout = aiohttp.ClientTimeout(total=timeout_s or self._timeout_s)
        attempt = 0
        while True:
            try:
                async with self.session.post(url, timeout=timeout, **body()) as resp:
                    status = resp.status
                    try:
                        answer = await resp.json(content_type=None)
                    except ValueError:
                        answer = None
            except _TRANSPORT_ERRORS as e:
                raise TelegramUnavailable(method, 0, type(e).__name__) from None
            if isinstance(answer, dict) and answer.get("ok") is True and "result" in answer:
                return answer["result"]
            if not isinstance(answer, dict):
                raise TelegramUnavailable(method, status, "not a Bot API answer")
            code = answer.get("error_code")
            code = code if isinstance(code, int) else status
            description = str(answer.get("description", ""))[:200]
            parameters = answer.get("parameters")
            parameters = parameters if isinstance(parameters, dict) else {}
            migrated = parameters.get("migrate_to_chat_id")
            if isinstance(migrated, int) and not isinstance(migrated, bool):
                raise ChatMigrated(method, migrated)
            if code == 429:
                retry_after = parameters.get("retry_after")
                wait = retry_after if isinstance(retry_after, int) and retry_after >= 0 else 1
                if attempt >= self._max_retries or wait > MAX_RETRY_AFTER_S:
                    raise TelegramRateLimited(method, wait)
                attempt += 1
                log.info("Telegram %s rate limited: waiting %d s", method, wait)
                self.waited_s += wait
                await self._sleep(wait)
                continue
            if code >= 500:
                raise TelegramUnavailable(method, code, description)
            raise TelegramError(method, code, description)

    async def get_me(self) -> dict[str, Any]:
        me = await self.call("getMe", {})
        return me if isinstance(me, dict) else {}

    async def get_updates(
        self, offset: int | None, timeout_s: int, allowed: Sequence[str] = ALLOWED_UPDATES
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"timeout": timeout_s, "allowed_updates": list(allowed)}
        if offset is not None:
            params["offset"] = offset
        result = await self.call("getUpdates", params, timeout_s=timeout_s + 15)
        if not isinstance(result, list):
            return []
        return [u for u in result if isinstance(u, dict) and isinstance(u.get("update_id"), int)]

    async def send_message(self, chat_id: int, html: str, *, reply_to: int | None = None) -> int:
        """Send one HTML message (at most 4,096 characters of text), as a reply to `reply_to`
        if given (sent anyway if that message is gone); returns its message id."""
        params: dict[str, Any] = {
            "chat_id": chat_id,
            "text": html,
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        if reply_to is not None:
            params["reply_parameters"] = {
                "message_id": reply_to,
                "allow_sending_without_reply": True,
            }
        result = await self.call("sendMessage", params)
        message_id = result.get("message_id") if isinstance(result, dict) else None
        if not isinstance(message_id, int):
            raise TelegramError("sendMessage", 0, "no message id in the answer")
        return message_id

    async def edit_message(self, chat_id: int, message_id: int, html: str) -> None:
        try:
            await self.call(
                "editMessageText",
                {
                    "chat_id": chat_id,
                    "message_id": message_id,
                    "text": html,
                    "parse_mode": "HTML",
                    "link_preview_options": {"is_disabled": True},
                },
            )
        except TelegramError as e:
            if e.code == 400 and "not modified" in e.description:
                return
            raise

    async def send_file(
        self,
        chat_id: int,
        data: bytes,
        *,
        filename: str,
        mimetype: str,
        caption_html: str | None = None,
        as_photo: bool = True,
        reply_to: int | None = None,
    ) -> int:
        """Upload one file (`sendPhoto`, or `sendDocument` with `as_photo=False`) with an HTML
        caption (at most 1,024 characters of text); returns the message id."""
        method, field = ("sendPhoto", "photo") if as_photo else ("sendDocument", "document")
        params: dict[str, Any] = {"chat_id": chat_id}
        if caption_html:
            params["caption"] = caption_html
            params["parse_mode"] = "HTML"
        if reply_to is not None:
            params["reply_parameters"] = {
                "message_id": reply_to,
                "allow_sending_without_reply": True,
            }
        result = await self.call_multipart(method, params, field, filename, data, mimetype)
        message_id = result.get("message_id") if isinstance(result, dict) else None
        if not isinstance(message_id, int):
            raise TelegramError(method, 0, "no message id in the answer")
        return message_id

    async def download(self, file_id: str, limit: int) -> bytes:
        """A file's bytes: `getFile` for its path, then `{api}/file/bot<token>/<path>`.
        `FileTooLarge` when it is (or announces itself) bigger than `limit` bytes."""
        info = await self.call("getFile", {"file_id": file_id})
        file_path = info.get("file_path") if isinstance(info, dict) else None
        size = info.get("file_size") if isinstance(info, dict) else None
        if isinstance(size, int) and size > limit:
            raise FileTooLarge("getFile", 400, "file is too big")
        if not isinstance(file_path, str) or not file_path or ".." in file_path:
            raise TelegramError("getFile", 0, "no file path in the answer")
        url = f"{self._api}/file/bot{self._token}/{file_path}"
        timeout = aiohttp.ClientTimeout(total=self._timeout_s * 4)
        try:
            async with self.session.get(url, timeout=timeout) as resp:
                if resp.status >= 500:
                    raise TelegramUnavailable("file", resp.status, "download failed")
                if resp.status != 200:
                    raise TelegramError("file", resp.status, "download refused")
                chunks: list[bytes] = []
                total = 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    total += len(chunk)
                    if total > limit:
                        raise FileTooLarge("file", 400, "file is too big")
                    chunks.append(chunk)
        except _TRANSPORT_ERRORS as e:
            raise TelegramUnavailable("file", 0, type(e).__name__) from None
        return b"".join(chunks)

    async def ban_chat_member(self, chat_id: int, user_id: int) -> None:
        await self.call("banChatMember", {"chat_id": chat_id, "user_id": user_id})

    async def unban_chat_member(self, chat_id: int, user_id: int) -> None:
        await self.call(
            "unbanChatMember", {"chat_id": chat_id, "user_id": user_id, "only_if_banned": True}
        )

    async def restrict_chat_member(self, chat_id: int, user_id: int, *, can_send: bool) -> None:
        """Take a member's right to send anything in the chat (`can_send=False`), or give it
        back (`True` for every permission lifts the restriction: the chat's defaults apply)."""
        permissions = dict.fromkeys(SEND_PERMISSIONS, can_send)
        await self.call(
            "restrictChatMember",
            {
                "chat_id": chat_id,
                "user_id": user_id,
                "permissions": permissions,
                "use_independent_chat_permissions": True,
            },
        )

    async def leave_chat(self, chat_id: int) -> None:
        await self.call("leaveChat", {"chat_id": chat_id})

    async def delete_message(self, chat_id: int, message_id: int) -> bool:
        """Delete a message; False when Telegram no longer allows it (gone, or older than 48 h)."""
        try:
            await self.call("deleteMessage", {"chat_id": chat_id, "message_id": message_id})
        except TelegramError as e:
            if e.code == 400 and not isinstance(e, ChatMigrated):
                log.info("Telegram refused a deletion: %s", e.description)
                return False
            raise
        return True
