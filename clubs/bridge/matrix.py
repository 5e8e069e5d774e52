"""The application service's own view of the homeserver: the client-server API with its as_token.

Every request names the account it acts for (`?user_id=`, identity assertion): the bridge's bot
or a ghost, all inside the exclusive namespace. Ghosts are registered with the application
service login type and `inhibit_login` (no device, no access token, no password), and message
sends carry `?ts=` (the Telegram message's time) and a transaction id derived from the Telegram
message, so a send repeated after a crash is absorbed by the homeserver.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import urlencode

import aiohttp

from clubs.core.attachments import parse_mxc
from clubs.core.errors import ClubsError, Forbidden, MatrixError, NotFound, Unreachable
from clubs.core.http import JsonDict, MatrixHttp, cs, path
from clubs.core.ids import EventId, RoomId, UserId

log = logging.getLogger(__name__)


DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=120)


class TooLarge(ClubsError):
    """A file bigger than the bridge reads or the homeserver accepts."""


class AsMatrix:
    def __init__(self, http: MatrixHttp) -> None:
        self.http = http
        self._upload_max: int | None = None

    async def ensure_registered(self, localpart: str) -> bool:
        """Register a namespaced account (no password, no login). True if it was created."""
        try:
            await self.http.post(
                cs("register"),
                {
                    "type": "m.login.application_service",
                    "username": localpart,
                    "inhibit_login": True,
                },
                label="register (appservice)",
            )
        except MatrixError as e:
            if e.errcode == "M_USER_IN_USE":
                return False
            raise
        return True

    async def set_displayname(self, user: UserId, name: str) -> None:
        await self.http.put(
            cs("profile", user, "displayname"),
            {"displayname": name},
            query={"user_id": user},
            label="set displayname",
        )

    async def join(self, room: RoomId, user: UserId) -> None:
        await self.http.post(cs("join", room), {}, query={"user_id": user}, label="join")

    async def leave(self, room: RoomId, user: UserId) -> None:
        await self.http.post(cs("rooms", room, "leave"), {}, query={"user_id": user}, label="leave")

    async def invite(self, room: RoomId, invitee: UserId, by: UserId) -> None:
        await self.http.post(
            cs("rooms", room, "invite"),
            {"user_id": invitee},
            query={"user_id": by},
            label="invite",
        )

    async def ensure_joined(self, room: RoomId, user: UserId, inviter: UserId) -> None:
        """Join `user` (a ghost) to `room`, invited by the bridge's bot if needed."""
        try:
            await self.join(room, user)
            return
        except Forbidden:
            pass
        await self.invite(room, user, inviter)
        await self.join(room, user)

    async def state(self, room: RoomId, user: UserId) -> list[Any]:
        return await self.http.get_list(
            cs("rooms", room, "state"), query={"user_id": user}, label="room state"
        )

    async def pin(self, room: RoomId, event_id: EventId, user: UserId) -> None:
        """Add `event_id` to the room's pinned events (first), keeping the others."""
        url = cs("rooms", room, "state", "m.room.pinned_events", "")
        try:
            current = await self.http.get(url, query={"user_id": user}, label="pinned events")
        except NotFound:
            current = {}
        pinned = current.get("pinned")
        old = [e for e in pinned if isinstance(e, str)] if isinstance(pinned, list) else []
        if event_id in old:
            return
        await self.http.put(url, {"pinned": [event_id, *old]}, query={"user_id": user}, label="pin")

    async def unpin(self, room: RoomId, event_id: EventId, user: UserId) -> None:
        """Take `event_id` out of the room's pinned events, keeping the others."""
        url = cs("rooms", room, "state", "m.room.pinned_events", "")
        try:
            current = await self.http.get(url, query={"user_id": user}, label="pinned events")
        except NotFound:
            return
        pinned = current.get("pinned")
        old = [e for e in pinned if isinstance(e, str)] if isinstance(pinned, list) else []
        if event_id not in old:
            return
        kept = [e for e in old if e != event_id]
        await self.http.put(url, {"pinned": kept}, query={"user_id": user}, label="unpin")

    async def event_sender(self, room: RoomId, event_id: EventId, user: UserId) -> str | None:
        """Who sent an event (None if it cannot be read)."""
        try:
            event = await self.http.get(
                cs("rooms", room, "event", event_id), query={"user_id": user}, label="event"
            )
        except MatrixError:
            return None
        sender = event.get("sender")
        return sender if isinstance(sender, str) else None

    async def is_redacted(self, room: RoomId, event_id: EventId, user: UserId) -> bool:
        """Whether the event was redacted (or can no longer be read)."""
        try:
            event = await self.http.get(
                cs("rooms", room, "event", event_id), query={"user_id": user}, label="event"
            )
        except NotFound:
            return True
        unsigned = event.get("unsigned")
        return isinstance(unsigned, dict) and "redacted_because" in unsigned

    async def member_name(self, room: RoomId, member: str, user: UserId) -> str | None:
        """The member's display name in the room, or None."""
        try:
            content = await self.http.get(
                cs("rooms", room, "state", "m.room.member", member),
                query={"user_id": user},
                label="member state",
            )
        except MatrixError:
            return None
        name = content.get("displayname")
        return name if isinstance(name, str) and name.strip() else None

    async def send(
        self,
        room: RoomId,
        event_type: str,
        content: JsonDict,
        txn: str,
        *,
        user: UserId,
        ts_ms: int | None = None,
    ) -> EventId:
        query: dict[str, str] = {"user_id": user}
        if ts_ms is not None:
            query["ts"] = str(ts_ms)
        resp = await self.http.put(
            cs("rooms", room, "send", event_type, txn), content, query=query, label="send"
        )
        return EventId(str(resp.get("event_id", "")))

    async def download(self, mxc: str, user: UserId, limit: int) -> bytes:
        """A file from the media repository (authenticated media, as `user`), at most `limit`
        bytes: `TooLarge` beyond that, `NotFound` when it is not there."""
        server, media_id = parse_mxc(mxc)
        url = self.http.base_url + path(
            "_matrix", "client", "v1", "media", "download", server, media_id
        )
        headers = {"Authorization": f"Bearer {self.http.access_token}"}
        try:
            async with self.http.session.get(
                url, params={"user_id": user}, headers=headers, timeout=DOWNLOAD_TIMEOUT
            ) as resp:
                if resp.status == 404:
                    raise NotFound(404, "M_NOT_FOUND", "no such media", method="GET", path="media")
                if resp.status >= 500:
                    raise Unreachable(f"GET media: {resp.status}")
                if resp.status >= 400:
                    raise MatrixError(
                        resp.status, "M_UNKNOWN", "media download failed", method="GET",
                        path="media",
                    )  # fmt: skip
                chunks: list[bytes] = []
                total = 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    total += len(chunk)
                    if total > limit:
                        raise TooLarge(f"the file is over {limit} bytes")
                    chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
            raise Unreachable(f"GET media: {type(e).__name__}") from None
        return b"".join(chunks)

    async def upload(self, data: bytes, mimetype: str, user: UserId) -> str:
        """Upload `data` as `user`; returns its mxc URI. Over the homeserver's limit (read once,
        `m.upload.size`): `TooLarge`, before anything is sent."""
        if self._upload_max is None:
            config = await self.http.get(
                path("_matrix", "client", "v1", "media", "config"),
                query={"user_id": user},
                label="media/config",
            )
            limit = config.get("m.upload.size")
            self._upload_max = limit if isinstance(limit, int) and limit > 0 else 0
        if self._upload_max and len(data) > self._upload_max:
            raise TooLarge(f"the homeserver takes at most {self._upload_max} bytes")
        resp = await self.http.request_bytes(
            "POST",
            path("_matrix", "media", "v3", "upload") + "?" + urlencode({"user_id": user}),
            data,
            content_type=mimetype,
            label="media/upload",
        )
        uri = resp.get("content_uri")
        if not isinstance(uri, str):
            raise MatrixError(500, "M_UNKNOWN", "no content_uri", method="POST", path="upload")
        parse_mxc(uri)
        return uri

    async def ping(self, service_id: str) -> int | None:
        """Ask the homeserver to ping us (it also retries transactions it holds back)."""
        try:
            resp = await self.http.post(
                path("_matrix", "client", "v1", "appservice", service_id, "ping"),
                {"transaction_id": secrets.token_hex(8)},
                label="appservice ping",
            )
        except MatrixError as e:
            log.warning("the homeserver could not ping the bridge: %s", e.errcode)
            return None
        duration = resp.get("duration_ms")
        return duration if isinstance(duration, int) else None
