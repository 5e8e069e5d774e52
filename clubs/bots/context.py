"""What bot handlers get instead of the raw client: send, reply, DM, react, edit, poll, pin,
jobs and the clock.

Every text a person reads is a template key rendered in the room's (or user's) language. Every
send goes through the outbox (recorded, then sent, then marked sent) with a transaction id
derived from the logical job and the event type, so a retry after a crash is deduplicated by
Synapse instead of posted twice, and a send that cannot go now is sent later, never lost.

DM rooms are created crash-safely: the intent is recorded first and the room carries an opaque
marker in its creation state, so a crash between `createRoom` and recording the room is
followed by adopting that room, not by a second one. Account data (`m.direct`) and pins are
read-modify-written only on a successful read: a 404 means "none yet"; any other failure
raises (and is retried) instead of overwriting what is there with a one-item value.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clubs.bots.attachstore import AttachmentState, AttachmentStore
from clubs.bots.joined import person_language
from clubs.bots.outbox import Outbox
from clubs.bots.polls import Poll, PollUpdate, Vote
from clubs.bots.pollstore import PollStore
from clubs.bots.polltracker import PollTracker
from clubs.bots.rooms import RoomDirectory, RoomInfo
from clubs.bots.store import RuntimeStore
from clubs.core.attachments import MediaRepo, encrypt, encrypted_file, file_content
from clubs.core.clock import Clock
from clubs.core.crash import crashpoint
from clubs.core.e2ee import E2eeClient, RoomEvent
from clubs.core.errors import ClubsError, NotFound
from clubs.core.events import Message
from clubs.core.html import Text, notice_content
from clubs.core.http import EventId, MatrixHttp, RoomId, UserId, path
from clubs.core.i18n import Catalog
from clubs.core.namespace import DM_MARKER
from clubs.core.sealed import Sealer
from clubs.core.txn import txn_id

if TYPE_CHECKING:
    from clubs.bots.jobs import JobRunner

log = logging.getLogger(__name__)

CS = ("_matrix", "client", "v3")
POLL_START = "org.matrix.msc3381.poll.start"
Spawnable = Coroutine[Any, Any, None] | Callable[[], Awaitable[None]]
"""A coroutine (run once) or a coroutine function (run again with backoff if it fails)."""


@dataclass
class BotContext:
    """One bot account's services, shared by all its handlers."""

    name: str
    client: E2eeClient
    http: MatrixHttp
    rooms: RoomDirectory
    store: RuntimeStore
    catalog: Catalog
    clock: Clock
    _spawn: Callable[[Spawnable, str], asyncio.Task[None]] = field(repr=False)
    outbox: Outbox = field(repr=False)
    jobs_runner: JobRunner | None = field(default=None, repr=False)
    sealer: Sealer | None = field(default=None, repr=False)
    """Seals what must not be readable at rest (attachment keys); `send_file` needs it."""
    _attachments: AttachmentStore | None = field(default=None, init=False, repr=False)
    _media: MediaRepo | None = field(default=None, init=False, repr=False)
    _polls: PollTracker | None = field(default=None, init=False, repr=False)
    _dm_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    """One DM creation and one `m.direct` write at a time per account."""

    @property
    def user_id(self) -> UserId:
        return self.client.user_id

    @property
    def jobs(self) -> JobRunner:
        """This bot's durable jobs (schedule, cancel, list)."""
        if self.jobs_runner is None:
            raise ClubsError(f"{self.name}: this bot declares no @on_job handler")
        return self.jobs_runner

    def spawn(self, work: Spawnable, name: str) -> asyncio.Task[None]:
        """Start a background task owned (and cancelled on stop) by the runtime. A failure is
        logged; given a coroutine function (not a coroutine) the task is restarted with backoff."""
        return self._spawn(work, name)

    def render(self, key: str, lang: str | None, **values: Any) -> Text:
        return self.catalog.render(key, lang, **values)

    async def send(
        self, room_id: RoomId, event_type: str, content: Mapping[str, Any], *, job: Iterable[str]
    ) -> EventId | None:
        """Send any event through the outbox; `job` names the logical job the txn id is derived
        from (with the event type: Synapse's deduplication ignores the type). Returns the event
        id, or None while the send waits in the outbox (room not synced yet, homeserver away)."""
        return await self.outbox.send(room_id, event_type, content, txn_id(event_type, *job))

    async def send_file(
        self,
        room_id: RoomId,
        filename: str,
        data: bytes,
        mimetype: str,
        *,
        job: Iterable[str],
        image: tuple[int, int] | None = None,
    ) -> EventId | None:
        """Send a file end-to-end encrypted: an `m.file` whose `file` is an `EncryptedFile`; the
        homeserver only ever gets the ciphertext. Returns like `send`. With `image` (width,
        height) it is an `m.image`, which clients show inline.

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
            record = await files.record(txn, room_id, mxc, sealed.keys, self.clock.now())
            crashpoint("file_reserved")
        if record.state is AttachmentState.RESERVED:
            await media.upload(record.mxc, sealed.ciphertext)
            crashpoint("file_uploaded")
            await files.mark_uploaded(txn)
        file = encrypted_file(record.mxc, record.keys)
        content = file_content(filename, mimetype, len(data), file)
        if image is not None:
            content["msgtype"] = "m.image"
            content["info"].update(w=image[0], h=image[1])
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
            await self._attachments.prune(self.clock.now())
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
        async with self._dm_lock:
            known = await self.store.dm_room(user_id)
            if known is not None:
                return RoomId(known)
            marker = await self.store.dm_intent(user_id)
            room_id = await self._find_marked_room(marker) if marker is not None else None
            if room_id is None:
                if marker is None:
                    marker = secrets.token_urlsafe(16)
                    await self.store.set_dm_intent(user_id, marker, self.clock.now())
                room_id = await self._create_dm(user_id, marker)
                crashpoint("dm_created")
            else:
                log.info("%s: adopted the DM room %s created before a restart", self.name, room_id)
            # m.direct before the record: a failed write leaves the intent, so a retry adopts
            # the room and writes m.direct again (a recorded room is never looked at again).
            await self._record_direct(user_id, room_id)
            await self.store.set_dm_room(user_id, room_id)
            return room_id

    async def _create_dm(self, user_id: UserId, marker: str) -> RoomId:
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
                    {
                        # Opaque (state is not encrypted): lets a restart find this room again.
                        "type": DM_MARKER,
                        "state_key": "",
                        "content": {"marker": marker},
                    },
                ],
            },
            label="createRoom (DM)",
        )
        return RoomId(created["room_id"])

    async def _find_marked_room(self, marker: str) -> RoomId | None:
        """A room we created for a DM before a crash: joined, and carrying our marker."""
        joined = await self.http.get(path(*CS, "joined_rooms"), label="joined_rooms")
        rooms = [r for r in joined.get("joined_rooms", []) if isinstance(r, str)]
        known = set(await self.store.dm_rooms())
        for room in rooms:
            if room in known:
                continue
            try:
                content = await self.http.get(
                    path(*CS, "rooms", room, "state", DM_MARKER, ""), label="state dm marker"
                )
            except NotFound:
                continue
            if content.get("marker") == marker:
                return RoomId(room)
        return None

    async def _record_direct(self, user_id: UserId, room_id: RoomId) -> None:
        """Add the room to our `m.direct` (read, add, write; only a 404 means "none yet")."""
        url = path(*CS, "user", self.user_id, "account_data", "m.direct")
        try:
            direct = await self.http.get(url, label="account_data m.direct")
        except NotFound:
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
        if lang is None:
            lang = await person_language(self.client, self.rooms, user_id) or "ru"
        return await self.notice(room_id, key, job=job, lang=lang, **values)

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
        event_id = await self.send(room_id, POLL_START, content, job=job)
        if event_id is not None:
            poll = Poll(tuple(a["id"] for a in answer_list), max(1, max_selections), disclosed)
            await self.polls.record(room_id, event_id, poll)
        return event_id

    @property
    def polls(self) -> PollTracker:
        """The polls this bot started (their votes follow from sync and `/relations`)."""
        if self._polls is None:
            store = PollStore(self.store.db, self.name, self.sealer)
            self._polls = PollTracker(
                store, self.client, self.http, self.rooms, self.clock.now, self.send, self.render
            )
        return self._polls

    async def forget_person(self, user_id: UserId) -> int:
        """What the runtime keeps about a person for this bot, deleted: their votes in its polls
        and the runtime's own rows about them (a bot's `!forget-me` calls it after deleting its
        own data). Returns how many rows went. A poll re-counted from the server later can bring
        a vote back until the poll's votes are pruned (a week after it ends): end the person's
        polls first."""
        votes = await PollStore(self.store.db, self.name, self.sealer).forget(user_id)
        return votes + await self.store.forget_person(user_id)

    async def end_poll(
        self, room_id: RoomId, poll_id: EventId, *, job: Iterable[str]
    ) -> PollUpdate | None:
        """End a poll this bot started, the text fallback giving the results; returns them
        (None if it is not this bot's poll or the room is not synced yet)."""
        return await self.polls.end(room_id, poll_id, job=job)

    async def poll_ballots(self, room_id: RoomId, poll_id: EventId) -> list[Vote]:
        """Who chose what in a poll this bot started: the votes that count now, oldest first."""
        return await self.polls.ballots(room_id, poll_id)

    async def poll_results(self, room_id: RoomId, poll_id: EventId) -> PollUpdate | None:
        """The current results of a poll this bot started (re-counted from the server the
        first time in a process); None if it is not this bot's poll."""
        return await self.polls.results(room_id, poll_id)

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

    async def pin(
        self, room_id: RoomId, event_id: EventId, *, replacing: Iterable[EventId] = ()
    ) -> None:
        """Pin an event (and unpin `replacing`, e.g. an older copy). Other pins are kept: only
        a 404 means "no pins yet"; any other failure raises instead of overwriting them."""
        url = path(*CS, "rooms", room_id, "state", "m.room.pinned_events", "")
        try:
            current = await self.http.get(url, label="state m.room.pinned_events")
        except NotFound:
            current = {}
        pinned = [e for e in current.get("pinned", []) if isinstance(e, str)]
        gone = set(replacing)
        wanted = [e for e in pinned if e not in gone and e != event_id] + [event_id]
        if wanted != pinned:
            await self.http.put(url, {"pinned": wanted}, label="pin")

    async def redact(self, room_id: RoomId, event_id: EventId, reason: str) -> None:
        """Redact an event (the bot needs the room's redact power for others' events). The txn
        id comes from the event: asking twice is one redaction."""
        await self.http.put(
            path(*CS, "rooms", room_id, "redact", event_id, txn_id("redact", room_id, event_id)),
            {"reason": reason},
            label="redact",
        )

    async def unpin(self, room_id: RoomId, event_id: EventId) -> None:
        """Unpin one event, keeping the room's other pins (same rules as `pin`)."""
        url = path(*CS, "rooms", room_id, "state", "m.room.pinned_events", "")
        try:
            current = await self.http.get(url, label="state m.room.pinned_events")
        except NotFound:
            return
        pinned = [e for e in current.get("pinned", []) if isinstance(e, str)]
        if event_id in pinned:
            await self.http.put(
                url, {"pinned": [e for e in pinned if e != event_id]}, label="unpin"
            )


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
    dm_language: str | None = None
    """In a DM: the sender's club language (a DM room has none of its own)."""

    @property
    def lang(self) -> str:
        return (self.dm_language if self.in_dm else None) or self.room.language
