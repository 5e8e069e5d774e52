"""An in-process fake of the Telegram Bot API (aiohttp), for tests: Telegram is unreachable here.

It follows the Bot API's documented wire format: `/bot<token>/<method>` with JSON or query
parameters; answers `{"ok": true, "result": …}` or `{"ok": false, "error_code": N,
"description": "…", "parameters": {"retry_after": N, "migrate_to_chat_id": id}}`; Update,
Message, User and Chat objects with their documented field names.

What it checks like Telegram does: the token (401 "Unauthorized"), `parse_mode: HTML` text
(only Telegram's tags; an unescaped `<` or `&` is 400 "can't parse entities"), the 4,096
characters of text after parsing (400 "message is too long"), an empty text, a message that was
never sent (edit, delete), an edit that changes nothing ("message is not modified"), and a chat
that became a supergroup (400 with `migrate_to_chat_id`). `getUpdates` confirms updates below
`offset` and long-polls up to `timeout` seconds (capped by `poll_cap_s`).

Files, as the Bot API documents them: `sendPhoto` and `sendDocument` take a multipart upload
(photos at most 10 MB, other files 50 MB: larger ones get 413 "Request Entity Too Large"; a
caption at most 1,024 characters after parsing); their messages carry `photo` (an array of
PhotoSize: file_id, file_unique_id, width, height, file_size) or `document` (file_id,
file_unique_id, file_name, mime_type, file_size). `getFile` answers a File (file_id,
file_unique_id, file_size, file_path) and refuses files over 20 MB ("file is too big"); the
bytes are served at `/file/bot<token>/<file_path>`.

Test helpers: `user_says`, `user_edits`, `user_sends_photo`, `user_sends_document`, `migrate`,
`fail_next` (inject a 429 or any error), `texts(chat)` (what the chat shows now, tags stripped),
`files` (every stored file's bytes by file id) and `calls` (every method called).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

LIMIT = 4096
CAPTION_LIMIT = 1024
MB = 1024 * 1024
PHOTO_UPLOAD_MAX = 10 * MB
DOCUMENT_UPLOAD_MAX = 50 * MB
DOWNLOAD_MAX = 20 * MB
TAGS = frozenset(
    {
        "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
        "a", "tg-emoji", "code", "pre", "blockquote",
    }
)  # fmt: skip
_TAG = re.compile(r"<(/?)([a-z][a-z-]*)((?:\s+[a-z-]+(?:=\"[^\"<>]*\")?)*)\s*>")
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});")


class ParseError(ValueError):
    pass


def parse_html(text: str) -> str:
    """The visible text of Telegram HTML, or ParseError as Telegram refuses it."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "<":
            m = _TAG.match(text, i)
            if m is None:
                raise ParseError(f"Unsupported start tag at byte offset {i}")
            closing, name = m.group(1), m.group(2)
            if name not in TAGS:
                raise ParseError(f'Unsupported start tag "{name}" at byte offset {i}')
            if closing:
                if not stack or stack.pop() != name:
                    raise ParseError(f'Unmatched end tag at byte offset {i}, expected "</{name}>"')
            else:
                stack.append(name)
            i = m.end()
        elif ch == "&":
            m = _ENTITY.match(text, i)
            if m is None:
                raise ParseError(f"Unsupported HTML entity at byte offset {i}")
            out.append(html.unescape(m.group()))
            i = m.end()
        elif ch == ">":
            raise ParseError(f"Unexpected character > at byte offset {i}")
        else:
            out.append(ch)
            i += 1
    if stack:
        raise ParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Chat:
    id: int
    type: str = "supergroup"
    title: str = "Test group"
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    migrated_to: int | None = None
    next_id: int = 1
    bot_member: bool = True
    banned: set[int] = field(default_factory=set)
    restricted: set[int] = field(default_factory=set)
    """Members who may not send (restrictChatMember with can_send_messages false)."""


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float


class FakeTelegram:
    def __init__(self, token: str, *, poll_cap_s: float = 1.0) -> None:
        self.token = token
        self.poll_cap_s = poll_cap_s
        self.bot = {"id": 7000001, "is_bot": True, "first_name": "Clubs bridge", "username": "b"}
        self.chats: dict[int, Chat] = {}
        self.updates: list[dict[str, Any]] = []
        self.next_update = 100
        self.calls: list[Call] = []
        self._faults: dict[str, list[dict[str, Any]]] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.files: dict[str, bytes] = {}
        """Every file the fake holds (uploaded by the bot or sent by users), by file id."""
        self._paths: dict[str, str] = {}
        self._next_file = 1

    # --- server --------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=DOCUMENT_UPLOAD_MAX + MB)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _fail(401, "Unauthorized")
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = json.loads(await request.read())
                except ValueError:
                    return _fail(400, "Bad Request: invalid JSON")
                params.update(body if isinstance(body, dict) else {})
            else:
                for key, value in (await request.post()).items():
                    if isinstance(value, web.FileField):
                        params[key] = Upload(value.filename, value.content_type, value.file.read())
                    elif key in ("reply_parameters",):
                        params[key] = json.loads(str(value))
                    else:
                        params[key] = value
        self.calls.append(Call(method, params, time.monotonic()))
        faults = self._faults.get(method)
        if faults:
            return web.json_response(faults.pop(0))
        handler = getattr(self, "_m_" + method, None)
        if handler is None:
            return _fail(404, "Not Found")
        try:
            result = await handler(params)
        except _Refused as e:
            return web.json_response(e.answer)
        return web.json_response({"ok": True, "result": result})

    # --- methods -------------------------------------------------------------------------------

    async def _m_getMe(self, params: dict[str, Any]) -> Any:
        return self.bot

    async def _m_getUpdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset", 0))
        timeout = min(float(params.get("timeout", 0)), self.poll_cap_s)
        limit = int(params.get("limit", 100))
        if offset:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        async with self._changed:
            if not self.updates and timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout)
        return self.updates[:limit]

    async def _m_sendMessage(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params.get("chat_id"))
        text = self._text(params)
        answered = None
        reply = params.get("reply_parameters")
        if isinstance(reply, dict):
            answered = chat.messages.get(int(reply.get("message_id", 0)))
            if answered is None and not reply.get("allow_sending_without_reply"):
                raise _Refused(_answer(400, "Bad Request: message to be replied not found"))
        message = self._message(chat, self.bot, text, reply_to=answered)
        message["html"] = params.get("text")
        return _public(message)

    async def _m_sendPhoto(self, params: dict[str, Any]) -> Any:
        return self._send_file(params, "photo", PHOTO_UPLOAD_MAX)

    async def _m_sendDocument(self, params: dict[str, Any]) -> Any:
        return self._send_file(params, "document", DOCUMENT_UPLOAD_MAX)

    def _send_file(self, params: dict[str, Any], field: str, limit: int) -> Any:
        chat = self._chat(params.get("chat_id"))
        upload = params.get(field)
        if not isinstance(upload, Upload) or not upload.data:
            raise _Refused(_answer(400, f"Bad Request: there is no {field} in the request"))
        if len(upload.data) > limit:
            raise _Refused(_answer(413, "Request Entity Too Large"))
        caption = None
        if params.get("caption"):
            caption = self._text(
                {"text": params["caption"], "parse_mode": params.get("parse_mode")}
            )
            if utf16_len(caption) > CAPTION_LIMIT:
                raise _Refused(_answer(400, "Bad Request: message caption is too long"))
        answered = None
        reply = params.get("reply_parameters")
        if isinstance(reply, dict):
            answered = chat.messages.get(int(reply.get("message_id", 0)))
        message = self._message(chat, self.bot, None, reply_to=answered)
        message.update(self._file_fields(field, upload.data, upload.filename, upload.content_type))
        if caption is not None:
            message["caption"] = caption
            message["html"] = params.get("caption")
        return _public(message)

    def _file_fields(
        self, field: str, data: bytes, filename: str | None, mime_type: str | None
    ) -> dict[str, Any]:
        file_id = f"F{self._next_file:06d}x" + "A" * 20
        self._next_file += 1
        self.files[file_id] = data
        self._paths[file_id] = f"{'photos' if field == 'photo' else 'documents'}/file_{file_id}"
        common = {"file_id": file_id, "file_unique_id": file_id[:8], "file_size": len(data)}
        if field == "photo":
            width, height = _dimensions(data)
            return {"photo": [{**common, "width": width, "height": height}]}
        return {
            "document": {
                **common,
                "file_name": filename or "file",
                "mime_type": mime_type or "application/octet-stream",
            }
        }

    async def _m_getFile(self, params: dict[str, Any]) -> Any:
        file_id = str(params.get("file_id", ""))
        data = self.files.get(file_id)
        if data is None:
            raise _Refused(_answer(400, "Bad Request: invalid file_id"))
        if len(data) > DOWNLOAD_MAX:
            raise _Refused(_answer(400, "Bad Request: file is too big"))
        return {
            "file_id": file_id,
            "file_unique_id": file_id[:8],
            "file_size": len(data),
            "file_path": self._paths[file_id],
        }

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _fail(401, "Unauthorized")
        wanted = request.match_info["path"]
        self.calls.append(Call("file", {"path": wanted}, time.monotonic()))
        for file_id, path in self._paths.items():
            if path == wanted and len(self.files[file_id]) <= DOWNLOAD_MAX:
                return web.Response(body=self.files[file_id])
        return web.Response(status=404, text="Not Found")

    async def _m_editMessageText(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params.get("chat_id"))
        message = chat.messages.get(int(params.get("message_id", 0)))
        if message is None:
            raise _Refused(_answer(400, "Bad Request: message to edit not found"))
        text = self._text(params)
        if text == message.get("text"):
            raise _Refused(
                _answer(
                    400,
                    "Bad Request: message is not modified: specified new message content and "
                    "reply markup are exactly the same as a current content and reply markup "
                    "of the message",
                )
            )
        message["text"] = text
        message["html"] = params.get("text")
        message["edit_date"] = int(time.time())
        return _public(message)

    async def _m_deleteMessage(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params.get("chat_id"))
        if chat.messages.pop(int(params.get("message_id", 0)), None) is None:
            raise _Refused(_answer(400, "Bad Request: message to delete not found"))
        return True

    async def _m_banChatMember(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params.get("chat_id"))
        chat.banned.add(int(params["user_id"]))
        return True

    async def _m_restrictChatMember(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params.get("chat_id"))
        permissions = params.get("permissions")
        if not isinstance(permissions, dict) or not isinstance(
            permissions.get("can_send_messages"), bool
        ):
            raise _Refused(_answer(400, "Bad Request: invalid permissions specified"))
        if permissions["can_send_messages"]:
            chat.restricted.discard(int(params["user_id"]))
        else:
            chat.restricted.add(int(params["user_id"]))
        return True

    async def _m_unbanChatMember(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params.get("chat_id"))
        chat.banned.discard(int(params["user_id"]))
        return True

    async def _m_leaveChat(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params.get("chat_id"))
        chat.bot_member = False
        return True

    def _chat(self, chat_id: object) -> Chat:
        try:
            cid = int(str(chat_id))
        except ValueError:
            raise _Refused(_answer(400, "Bad Request: chat not found")) from None
        chat = self.chats.get(cid)
        if chat is None:
            raise _Refused(_answer(400, "Bad Request: chat not found"))
        if chat.migrated_to is not None:
            raise _Refused(
                _answer(
                    400,
                    "Bad Request: group chat was upgraded to a supergroup chat",
                    {"migrate_to_chat_id": chat.migrated_to},
                )
            )
        return chat

    def _text(self, params: dict[str, Any]) -> str:
        raw = params.get("text")
        if not isinstance(raw, str):
            raise _Refused(_answer(400, "Bad Request: message text is empty"))
        if params.get("parse_mode") == "HTML":
            try:
                text = parse_html(raw)
            except ParseError as e:
                raise _Refused(_answer(400, f"Bad Request: can't parse entities: {e}")) from None
        else:
            text = raw
        if not text.strip():
            raise _Refused(_answer(400, "Bad Request: message text is empty"))
        if utf16_len(text) > LIMIT:
            raise _Refused(_answer(400, "Bad Request: message is too long"))
        return text

    def _message(
        self,
        chat: Chat,
        sender: dict[str, Any],
        text: str | None,
        reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": chat.next_id,
            "date": int(time.time()),
            "chat": {"id": chat.id, "type": chat.type, "title": chat.title},
            "from": sender,
        }
        if text is not None:
            message["text"] = text
        if reply_to is not None:
            message["reply_to_message"] = _public(
                {k: v for k, v in reply_to.items() if k != "reply_to_message"}
            )
        chat.next_id += 1
        chat.messages[message["message_id"]] = message
        return message

    # --- test helpers --------------------------------------------------------------------------

    def add_chat(self, chat_id: int, type: str = "supergroup") -> Chat:
        chat = Chat(chat_id, type)
        self.chats[chat_id] = chat
        return chat

    async def push(self, kind: str, message: dict[str, Any]) -> None:
        async with self._changed:
            self.updates.append({"update_id": self.next_update, kind: _public(message)})
            self.next_update += 1
            self._changed.notify_all()

    async def user_says(
        self, chat_id: int, user: dict[str, Any], text: str, reply_to: int | None = None
    ) -> int:
        chat = self.chats[chat_id]
        answered = chat.messages[reply_to] if reply_to is not None else None
        message = self._message(chat, user, text, reply_to=answered)
        await self.push("message", message)
        return int(message["message_id"])

    async def user_sends_photo(
        self, chat_id: int, user: dict[str, Any], data: bytes, caption: str | None = None
    ) -> int:
        """A user sends a photo. Telegram keeps several sizes; the fake keeps a thumbnail-sized
        entry (same bytes, announced 90x90) and the full one, as `photo` lists them."""
        chat = self.chats[chat_id]
        message = self._message(chat, user, None)
        fields = self._file_fields("photo", data, None, None)
        [full] = fields["photo"]
        thumb = {**full, "width": 90, "height": 90}
        message["photo"] = [thumb, full]
        if caption is not None:
            message["caption"] = caption
        await self.push("message", message)
        return int(message["message_id"])

    async def user_sends_document(
        self,
        chat_id: int,
        user: dict[str, Any],
        data: bytes,
        file_name: str,
        mime_type: str,
        caption: str | None = None,
    ) -> int:
        chat = self.chats[chat_id]
        message = self._message(chat, user, None)
        message.update(self._file_fields("document", data, file_name, mime_type))
        if caption is not None:
            message["caption"] = caption
        await self.push("message", message)
        return int(message["message_id"])

    async def user_sends_sticker(
        self, chat_id: int, user: dict[str, Any], emoji: str | None, kind: str = "sticker"
    ) -> int:
        """A user sends a sticker standing for `emoji` (or another media `kind` without a file
        the bridge fetches: a voice message, a video note…)."""
        chat = self.chats[chat_id]
        message = self._message(chat, user, None)
        message[kind] = {"file_id": f"{kind}-{chat.next_id}", "file_unique_id": "u", "width": 512}
        if emoji is not None:
            message[kind]["emoji"] = emoji
        await self.push("message", message)
        return int(message["message_id"])

    def photos(self, chat_id: int) -> list[bytes]:
        """The bytes of every photo the bot posted in a chat, oldest first."""
        return [
            self.files[m["photo"][-1]["file_id"]]
            for m in self.chats[chat_id].messages.values()
            if m["from"] is self.bot and "photo" in m
        ]

    async def user_edits(self, chat_id: int, message_id: int, text: str) -> None:
        """A user edits a message: its text, or its caption when it carries media."""
        message = self.chats[chat_id].messages[message_id]
        media = any(k in message for k in ("photo", "document", "video", "audio", "voice"))
        message["caption" if media else "text"] = text
        message["edit_date"] = int(time.time())
        await self.push("edited_message", message)

    async def migrate(self, old: int, new: int) -> None:
        """A group becomes a supergroup: a service message in each, and the old id refuses."""
        chat = self.chats[old]
        self.add_chat(new)
        chat.migrated_to = new
        service = self._message(chat, self.bot, "")
        del service["text"]
        service["migrate_to_chat_id"] = new
        await self.push("message", service)

    async def bot_added(self, chat_id: int, by: dict[str, Any]) -> None:
        """Someone adds the bot to a chat (a `my_chat_member` update)."""
        chat = self.chats.get(chat_id) or self.add_chat(chat_id, "group")
        chat.bot_member = True
        async with self._changed:
            self.updates.append(
                {
                    "update_id": self.next_update,
                    "my_chat_member": {
                        "chat": {"id": chat.id, "type": chat.type, "title": chat.title},
                        "from": by,
                        "date": int(time.time()),
                        "old_chat_member": {"user": self.bot, "status": "left"},
                        "new_chat_member": {"user": self.bot, "status": "member"},
                    },
                }
            )
            self.next_update += 1
            self._changed.notify_all()

    def fail_next(
        self, method: str, code: int = 429, *, retry_after: int | None = None, times: int = 1
    ) -> None:
        if code == 429:
            answer = _answer(
                429,
                f"Too Many Requests: retry after {retry_after or 1}",
                {"retry_after": retry_after or 1},
            )
        else:
            answer = _answer(code, "Internal Server Error" if code >= 500 else "Bad Request")
        self._faults.setdefault(method, []).extend([answer] * times)

    def texts(self, chat_id: int) -> list[str]:
        """What each message shows: its text, or its caption (media)."""
        return [
            str(m.get("text", m.get("caption", ""))) for m in self.chats[chat_id].messages.values()
        ]

    def sent(self, chat_id: int) -> list[dict[str, Any]]:
        """The bot's own messages in a chat, oldest first."""
        return [
            m
            for m in self.chats[chat_id].messages.values()
            if m["from"] is self.bot and "text" in m
        ]

    def method_calls(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]


@dataclass
class Upload:
    """A file in a multipart request."""

    filename: str | None
    content_type: str | None
    data: bytes


def _dimensions(data: bytes) -> tuple[int, int]:
    """Width and height as Telegram reports them (it decodes the photo)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.width), int(im.height)
    except Exception:
        raise _Refused(_answer(400, "Bad Request: IMAGE_PROCESS_FAILED")) from None


class _Refused(Exception):
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer


def _answer(
    code: int, description: str, parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    answer: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        answer["parameters"] = parameters
    return answer


def _fail(code: int, description: str) -> web.Response:
    return web.json_response(_answer(code, description), status=code)


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "html"}
