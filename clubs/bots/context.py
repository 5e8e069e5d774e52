"""What bot handlers get instead of the raw client: send, reply, DM, react, edit, poll, pin.

Every text a person reads is a template key rendered in the room's (or user's) language; every
send carries a transaction id derived from the logical job, so a retry after a crash is
deduplicated by Synapse instead of posted twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clubs.bots.attachstore import AttachmentState, AttachmentStore
from clubs.bots.rooms import RoomDirectory, RoomInfo
from clubs.bots.store import RuntimeStore
from clubs.core.attachments import MediaRepo, encrypt, encrypted_file, file_content
from clubs.core.crash import crashpoint
from clubs.core.e2ee import E2eeClient, RoomEvent
from clubs.core.errors import ClubsError
from clubs.core.events import Message
from clubs.core.html import Text, notice_content
from clubs.core.http import EventId, MatrixHttp, RoomId, UserId, path
from clubs.core.i18n import Catalog
from clubs.core.sealed import Sealer
from clubs.core.txn import txn_id

log = logging.getLogger(__name__)

CS = ("_matrix", "client", "v3")
POLL_START = "org.matrix.msc3381.poll.start"


@dataclass(frozen=True)
class PendingSend:
    room_id: RoomId
    event_type: str
    content: dict[str, Any]
    txn_id: str
    queued_at: float

    def __repr__(self) -> str:  # content never reaches a log through a repr
        return f"PendingSend(room_id={self.room_id!r}, event_type={self.event_type!r})"


@dataclass
class BotContext:
    """One bot account's services, shared by all its handlers."""

    name: str
    client: E2eeClient
    http: MatrixHttp
    rooms: RoomDirectory
    store: RuntimeStore
    catalog: Catalog
    clock: Callable[[], float]
    _spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]] = field(repr=False)
    pending: list[PendingSend] = field(default_factory=list, repr=False)
    """Sends into rooms this client has not synced yet (a DM just created); the runtime sends
    them after the next sync has brought the room in."""
    sealer: Sealer | None = field(default=None, repr=False)
    """Seals what must not be readable at rest (attachment keys); `send_file` needs it."""
    _attachments: AttachmentStore | None = field(default=None, init=False, repr=False)
    _media: MediaRepo | None = field(default=None, init=False, repr=False)

    @property
    def user_id(self) -> UserId:
        return self.client.user_id

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start a background task owned (and cancelled on stop) by the runtime."""
        return self._spawn(coro, name)

    def render(self, key: str, lang: str | None, **values: Any) -> Text:
        return self.catalog.render(key, lang, **values)

    async def send(
        self, room_id: RoomId, event_type: str, content: Mapping[str, Any], *, job: Iterable[str]
    ) -> EventId | None:
        """Send any event; `job` names the logical job the txn id is derived from. Returns None
        when the room is not synced yet and the send was queued for after the next sync."""
        txn = txn_id(*job)
        if not self.client.knows_room(room_id):
            self.pending.append(PendingSend(room_id, event_type, dict(content), txn, self.clock()))
            return None
        crashpoint("before_send")
        event_id = await self.client.send(room_id, event_type, content, txn_id=txn)
        crashpoint("after_send")
        return event_id

    async def send_file(
        self, room_id: RoomId, filename: str, data: bytes, mimetype: str, *, job: Iterable[str]
    ) -> EventId | None:
        """Send a file end-to-end encrypted: an `m.file` whose `file` is an `EncryptedFile`; the
        homeserver only ever gets the ciphertext. Returns like `send`.

        Crash-safe without duplicates: the mxc is reserved and recorded with the file's sealed
        key and IV under the job's txn id before anything is uploaded. A retry of the job re-uses
        them, so the same bytes give the same ciphertext, the upload answers 409 (already there)
        and the event goes out with the same txn id, which Synapse deduplicates. A crash costs at
        most an unused reserved mxc. If a retry brings other bytes, they get a new key, IV and
        mxc (never the old key stream); the event already sent, if any, stays the one.
        """
        job = tuple(job)
        txn = txn_id(*job)
        files, media = await self._file_services()
        await media.check_size(len(data))
        record = await files.find(txn)
        if record is not None and record.state is AttachmentState.SENT and record.event_id:
            return record.event_id
        sealed = encrypt(data, record.keys) if record is not None else None
        if record is None or sealed is None or sealed.keys.sha256 != record.keys.sha256:
            sealed = encrypt(data)
            mxc = await media.reserve()
            record = await files.record(txn, room_id, mxc, sealed.keys, self.clock())
            crashpoint("file_reserved")
        if record.state is AttachmentState.RESERVED:
            await media.upload(record.mxc, sealed.ciphertext)
            crashpoint("file_uploaded")
            await files.mark_uploaded(txn)
        file = encrypted_file(record.mxc, record.keys)
        content = file_content(filename, mimetype, len(data), file)
        event_id = await self.send(room_id, "m.room.message", content, job=job)
        if event_id is not None:
            await files.mark_sent(txn, event_id)
        return event_id

    async def _file_services(self) -> tuple[AttachmentStore, MediaRepo]:
        if self.sealer is None:
            raise ClubsError(
                f"{self.name}: sending files needs a sealer (attachment keys are never stored "
                "in clear)"
            )
        if self._attachments is None:
            self._attachments = await AttachmentStore.open(self.store.db, self.name, self.sealer)
            await self._attachments.prune(self.clock())
        if self._media is None:
            self._media = MediaRepo(self.http)
        return self._attachments, self._media

    async def notice(
        self,
        room_id: RoomId,
        key: str,
        *,
        job: Iterable[str],
        lang: str | None = None,
        mention: Iterable[UserId] = (),
        relates_to: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> EventId | None:
        """Post a rendered `m.notice` (language: the room's club language unless given)."""
        if lang is None:
            lang = (await self.rooms.info(room_id)).language
        content = notice_content(self.render(key, lang, **values), mention)
        if relates_to is not None:
            content["m.relates_to"] = dict(relates_to)
        return await self.send(room_id, "m.room.message", content, job=job)

    async def dm_room(self, user_id: UserId) -> RoomId:
        """The encrypted DM room with a user, created (and recorded in m.direct) if needed."""
        known = await self.store.dm_room(user_id)
        if known is not None:
            return RoomId(known)
        created = await self.http.post(
            path(*CS, "createRoom"),
            {
                "preset": "trusted_private_chat",
                "is_direct": True,
                "invite": [user_id],
                "room_version": "12",
                "initial_state": [
                    {
                        "type": "m.room.encryption",
                        "state_key": "",
                        "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                    },
                    {
                        # The first message goes out while the person is only invited.
                        "type": "m.room.history_visibility",
                        "state_key": "",
                        "content": {"history_visibility": "invited"},
                    },
                    {
                        "type": "m.room.guest_access",
                        "state_key": "",
                        "content": {"guest_access": "forbidden"},
                    },
                ],
            },
            label="createRoom (DM)",
        )
        room_id = RoomId(created["room_id"])
        await self.store.set_dm_room(user_id, room_id)
        await self._record_direct(user_id, room_id)
        return room_id

    async def _record_direct(self, user_id: UserId, room_id: RoomId) -> None:
        url = path(*CS, "user", self.user_id, "account_data", "m.direct")
        try:
            direct = await self.http.get(url, label="account_data m.direct")
        except Exception:  # absent on first use
            direct = {}
        rooms = direct.get(user_id)
        rooms = [r for r in rooms if isinstance(r, str)] if isinstance(rooms, list) else []
        if room_id not in rooms:
            direct[user_id] = [*rooms, room_id]
            await self.http.put(url, direct, label="account_data m.direct")

    async def dm(
        self,
        user_id: UserId,
        key: str,
        *,
        job: Iterable[str],
        lang: str | None = None,
        **values: Any,
    ) -> EventId | None:
        room_id = await self.dm_room(user_id)
        return await self.notice(room_id, key, job=job, lang=lang or "ru", **values)

    async def poll(
        self,
        room_id: RoomId,
        question: str,
        answers: Iterable[str],
        *,
        job: Iterable[str],
        disclosed: bool = False,
        max_selections: int = 1,
    ) -> EventId | None:
        """An encrypted poll (MSC3381, as Element sends it). Answers get ids a1, a2, …"""
        answer_list = [
            {"id": f"a{i}", "org.matrix.msc1767.text": text} for i, text in enumerate(answers, 1)
        ]
        fallback = (
            question
            + "\n"
            + "\n".join(
                f"{i}. {a['org.matrix.msc1767.text']}" for i, a in enumerate(answer_list, 1)
            )
        )
        content = {
            POLL_START: {
                "question": {"org.matrix.msc1767.text": question},
                "kind": "org.matrix.msc3381.poll.disclosed"
                if disclosed
                else "org.matrix.msc3381.poll.undisclosed",
                "max_selections": max_selections,
                "answers": answer_list,
            },
            "org.matrix.msc1767.text": fallback,
        }
        return await self.send(room_id, POLL_START, content, job=job)

    async def react(
        self, room_id: RoomId, event_id: EventId, key: str, *, job: Iterable[str]
    ) -> EventId | None:
        """A reaction. Reactions are NOT encrypted (clients send them in clear): never signal
        anything sensitive with one."""
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        return await self.send(room_id, "m.reaction", content, job=job)

    async def edit(
        self, room_id: RoomId, event_id: EventId, text: Text, *, job: Iterable[str]
    ) -> EventId | None:
        new = notice_content(text)
        content = {
            **new,
            "body": "* " + text.body,
            "m.new_content": new,
            "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
        }
        return await self.send(room_id, "m.room.message", content, job=job)

    async def pin(self, room_id: RoomId, event_id: EventId) -> None:
        url = path(*CS, "rooms", room_id, "state", "m.room.pinned_events", "")
        try:
            current = await self.http.get(url, label="state m.room.pinned_events")
        except Exception:
            current = {}
        pinned = [e for e in current.get("pinned", []) if isinstance(e, str)]
        if event_id not in pinned:
            await self.http.put(url, {"pinned": [*pinned, event_id]}, label="pin")


@dataclass
class EventContext:
    """One timeline event being handled, with the bot's services."""

    bot: BotContext
    event: RoomEvent
    room: RoomInfo
    message: Message | None

    @property
    def room_id(self) -> RoomId:
        return self.event.room_id

    @property
    def sender(self) -> UserId:
        return self.event.sender

    @property
    def lang(self) -> str:
        return self.room.language

    def job(self, *parts: str) -> tuple[str, ...]:
        """A logical job id scoped to this bot and event (for deterministic txn ids)."""
        return (self.bot.name, self.event.event_id, *parts)

    async def reply(
        self, key: str, *, mention: Iterable[UserId] = (), part: str = "reply", **values: Any
    ) -> EventId | None:
        """Answer in the room as an `m.notice` replying to the event."""
        return await self.bot.notice(
            self.room_id,
            key,
            job=self.job(part),
            lang=self.lang,
            mention=mention,
            relates_to={"m.in_reply_to": {"event_id": self.event.event_id}},
            **values,
        )

    async def reply_in_thread(
        self, key: str, *, part: str = "thread", **values: Any
    ) -> EventId | None:
        root = self.event.event_id
        return await self.bot.notice(
            self.room_id,
            key,
            job=self.job(part),
            lang=self.lang,
            relates_to={
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": root},
            },
            **values,
        )

    async def dm(
        self, user_id: UserId, key: str, *, part: str = "dm", **values: Any
    ) -> EventId | None:
        return await self.bot.dm(user_id, key, job=self.job(part), lang=self.lang, **values)

    async def react(self, key: str, *, part: str = "react") -> EventId | None:
        return await self.bot.react(self.room_id, self.event.event_id, key, job=self.job(part))


@dataclass
class CommandContext(EventContext):
    """A command being handled: who may do what, and how it was typed."""

    power: int = 0
    in_dm: bool = False
    invoked_as: str = ""
