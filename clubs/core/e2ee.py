"""A bot account's end-to-end encrypted Matrix client: one stable device, an encrypted nio store,
cross-signing, and a deliberate trust policy for sharing room keys.

What it refuses, and why (the P-labels are explained in docs/security.md):
- no store, or a store that would be encrypted with nio's `DEFAULT_KEY` or an empty key: without
  a store nio silently sends plaintext into encrypted rooms (P10), and its default key is public;
- a device whose keys are on the server while the local store is gone: running it would mean a
  new Olm identity behind an old device id, which peers cannot talk to (P1);
- a device whose keys are no longer on the server (e.g. after a logout) while the store says they
  were uploaded: nio would never upload them again (P2);
- sending to a room it does not know (it could not tell whether the room is encrypted);
- a store that another process has open (two writers would fork the Olm state).

It never logs out and never logs in again to get a fresh device. Room keys go only to devices
that their owner has cross-signed (`clubs.core.trust`); every other device is blacklisted in nio
on purpose — nio's blanket `ignore_unverified_devices=True` is never used — and is told so with
an `m.room_key.withheld` (code `m.unverified`), once per session: Element then shows the member
why the message cannot be read ("not verified") instead of waiting for a key forever.

The sync here is one request: the caller owns the loop and the `next_batch` it persists (pass it
back as `since`). This module is the only one that imports nio; nothing nio-typed leaves it.

Rooms are loaded lazily. A resumed client never asks for the full state of every room (for four
bots in 100 rooms that was most of a start-up): it learns the list from `/joined_rooms`, takes
incremental syncs, and loads a room's current state (`room_state`) the first time it must know
its members or whether it is encrypted — before the first send into it, at the latest. A room
marked encrypted in the store stays encrypted (encryption cannot be turned off).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nio
from nio.crypto.device import TrustState as NioTrust
from nio.store import SqliteStore

from clubs.core.admin import Session, login_password
from clubs.core.crash import crashpoint
from clubs.core.crosssign import CrossSigningState, ensure_cross_signing, stored_keys
from clubs.core.errors import ClubsError, Forbidden, MatrixError, NotFound, RateLimited, Unreachable
from clubs.core.http import DeviceId, EventId, JsonDict, MatrixHttp, RoomId, UserId, path
from clubs.core.secrets import Vault
from clubs.core.trust import MasterKeyPins, UserVerdict, evaluate_user

log = logging.getLogger(__name__)

CS = ("_matrix", "client", "v3")
PICKLE_KEY_MIN_CHARS = 32
REFUSED_PICKLE_KEYS = frozenset({"DEFAULT_KEY"})
"""nio's built-in default passphrase (nio base_client.py ClientConfig.pickle_key)."""
KEYS_QUERY_BATCH = 100
PINS_FILE = "master_keys.json"
MEGOLM = "m.megolm.v1.aes-sha2"
WITHHELD_REASON = "The sender's policy: room keys go only to devices cross-signed by their owner."
WITHHELD_KEEP = 1000
"""Outbound sessions whose withheld notices are remembered (older ones are long rotated)."""
LOCK_FILE = ".lock"
UNDECRYPTED_KEEP = 2000
"""Events waiting for their key, at most (the runtime persists the same bound)."""
WITHHELD_TYPES = frozenset({"m.room_key.withheld", "org.matrix.room_key.withheld"})
KEY_REQUESTS_PER_SENDER = 20
"""Distinct sessions whose key we ask one sender for, per process: a flood of events under
made-up session ids must not turn into a flood of to-device requests."""
GAP_FILL_PAGE = 250
GAP_FILL_MAX_EVENTS = 5000
"""At most this many events are fetched to fill one room's gap after a limited sync."""
TIMELINE_LIMIT = 50
"""Events per room in one incremental sync before it is "limited" (a burst in a busy room then
needs no `/messages` round trip to fill the gap)."""
SYNC_FILTER: dict[str, Any] = {
    # What a bot never reads is never computed by Synapse nor parsed here.
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
    "room": {
        "timeline": {"limit": TIMELINE_LIMIT},
        "ephemeral": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    },
}
FIRST_SYNC_FILTER: dict[str, Any] = {
    # The very first sync only takes a position (its backlog is never replayed) and the state.
    **SYNC_FILTER,
    "room": {**SYNC_FILTER["room"], "timeline": {"limit": 1}},
}


def _sync_filter(since: str | None, timeline_types: Sequence[str] | None) -> dict[str, Any]:
    if since is None:
        return FIRST_SYNC_FILTER
    if timeline_types is None:
        return SYNC_FILTER
    timeline = {**SYNC_FILTER["room"]["timeline"], "types": list(timeline_types)}
    return {**SYNC_FILTER, "room": {**SYNC_FILTER["room"], "timeline": timeline}}


class StoreError(ClubsError):
    """The bot's crypto store is missing, unusable, or would be protected by a weak key."""


class DeviceError(ClubsError):
    """The bot's device on the server does not match its local store; an operator must decide."""


def check_pickle_key(key: str | None) -> str:
    """Return `key` if it is fit to encrypt the store; refuse nio's default and weak keys."""
    if key is None or not key.strip():
        raise StoreError("the crypto store key is empty; refusing to run without a real key")
    if key in REFUSED_PICKLE_KEYS:
        raise StoreError(f"the crypto store key is nio's public default {key!r}; refusing it")
    if len(key) < PICKLE_KEY_MIN_CHARS:
        raise StoreError(
            f"the crypto store key is shorter than {PICKLE_KEY_MIN_CHARS} characters; refusing it"
        )
    return key


def store_file(store_dir: Path, user_id: str, device_id: str) -> Path:
    """Where nio's SqliteStore keeps this device's keys and sessions."""
    return store_dir / f"{user_id}_{device_id}.db"


def pickle_key_name(user_id: str) -> str:
    return f"{user_id}/pickle_key"


@dataclass(frozen=True)
class RoomEvent:
    """One timeline event of a joined room, decrypted if it was encrypted and we could."""

    room_id: RoomId
    event_id: EventId
    sender: UserId
    type: str
    content: Mapping[str, Any]
    origin_server_ts: int
    state_key: str | None = None
    encrypted: bool = False
    """It arrived as `m.room.encrypted`."""
    decrypted: bool = False
    """... and we could decrypt it (`type`/`content` are then the plaintext ones)."""
    sender_trusted: bool = False
    """The sending device is cross-signed by its owner under our trust policy (encrypted only)."""

    def as_json(self) -> dict[str, Any]:
        """The event as client-server JSON (decrypted type and content), for
        `clubs.core.events.parse_message` and friends."""
        out: dict[str, Any] = {
            "type": self.type,
            "content": dict(self.content),
            "event_id": self.event_id,
            "sender": self.sender,
            "room_id": self.room_id,
            "origin_server_ts": self.origin_server_ts,
        }
        if self.state_key is not None:
            out["state_key"] = self.state_key
        return out

    def __repr__(self) -> str:  # content never reaches a log through a repr
        return (
            f"RoomEvent(room_id={self.room_id!r}, event_id={self.event_id!r}, type={self.type!r})"
        )


@dataclass(frozen=True)
class Invite:
    """An invitation to us: who sent it, and whether they marked it as a direct chat."""

    room_id: RoomId
    inviter: UserId | None
    is_direct: bool


@dataclass(frozen=True)
class SyncBatch:
    next_batch: str
    events: list[RoomEvent] = field(default_factory=list)
    invites: list[Invite] = field(default_factory=list)
    """Rooms we are invited to (the caller decides whether to join)."""
    to_device: int = 0
    """To-device messages this sync brought (room keys among them: events that waited for a
    key may decrypt now)."""


MEMBERSHIPS = frozenset({"invite", "join", "knock", "leave", "ban"})


def _member_event(raw: JsonDict) -> nio.RoomMemberEvent | None:
    """An `m.room.member` state event as nio's `RoomMemberEvent`, checked by hand against the
    same rules as nio's JSON schema (which nio runs on every event, and which is most of the
    cost of loading a room's state: a restarted bot loads every room it is in). None: not
    plainly well-formed; `nio.Event.parse_event` then decides."""
    content = raw.get("content")
    unsigned = raw.get("unsigned", {})
    ts = raw.get("origin_server_ts")
    if not (
        raw.get("type") == "m.room.member"
        and isinstance(raw.get("event_id"), str)
        and _is_user_id(raw.get("sender"))
        and _is_user_id(raw.get("state_key"))
        and type(ts) is int
        and ts >= 0
        and _is_membership(content, "reason")
        and isinstance(unsigned, dict)
        and isinstance(unsigned.get("transaction_id", ""), str)
    ):
        return None
    assert isinstance(content, dict)  # (checked by _is_membership)
    prev = unsigned.get("prev_content")
    if "prev_content" in unsigned and not _is_membership(prev):
        return None
    return nio.RoomMemberEvent(
        raw,
        raw["state_key"],
        content["membership"],
        prev["membership"] if prev else None,
        content,
        prev,
    )


def _is_user_id(value: object) -> bool:
    return isinstance(value, str) and value.startswith("@") and ":" in value


def _is_membership(content: object, *optional: str) -> bool:
    return (
        isinstance(content, dict)
        and isinstance(content.get("membership"), str)
        and content["membership"] in MEMBERSHIPS
        and all(
            isinstance(content.get(k), (str, type(None)))
            for k in ("displayname", "avatar_url", *optional)
        )
    )


class E2eeClient:
    """One bot account's encrypted client. Create with `E2eeClient.open(...)`."""

    def __init__(
        self,
        client: nio.AsyncClient,
        http: MatrixHttp,
        vault: Vault,
        pins: MasterKeyPins,
        session: Session,
        cross_signing: CrossSigningState | None,
        lock_fd: int | None = None,
    ) -> None:
        self._client = client
        self._lock_fd = lock_fd
        self._http = http
        self._vault = vault
        self._pins = pins
        self.session = session
        self.cross_signing = cross_signing
        self._joined: set[RoomId] | None = None
        """The rooms we are joined to (None until the first sync)."""
        self._loaded: set[RoomId] = set()
        """Rooms whose whole current state nio holds (members, encryption)."""
        self._loading: dict[RoomId, asyncio.Future[list[JsonDict]]] = {}
        self._withheld: OrderedDict[str, set[tuple[str, str]]] = OrderedDict()
        """Per outbound session id: the devices already told that its key is withheld."""
        self._dirty_users: set[str] = set()
        self._undecrypted: OrderedDict[str, tuple[RoomId, Any]] = OrderedDict()
        """Recent events we could not decrypt (bounded), retried when keys arrive."""
        self._keys_arrived = False
        """To-device messages came since the last retry: a room key may be among them."""
        self._withheld_from_us: OrderedDict[str, tuple[str, str]] = OrderedDict()
        """Per Megolm session id: the (sender, code) of an `m.room_key.withheld` sent to us."""
        self._requested: set[str] = set()
        """Sessions whose key we asked for in this process."""
        self._requests_to: Counter[str] = Counter()
        """Key requests sent per sender in this process (bounded by KEY_REQUESTS_PER_SENDER)."""
        self.identity_changed: set[UserId] = set()
        """Users whose master key changed since we pinned it: they get no room keys until
        `accept_identity_change` (with the `hold` policy)."""
        self.identity_policy = "accept"
        """What a changed master key of a user (an identity reset) does: `accept` pins the new
        key at once, as Matrix clients do for identities nobody verified; `hold` withholds room
        keys until an operator accepts it (`!trust`)."""
        self.identity_changes: list[tuple[UserId, str]] = []
        """(user, new master key) seen changed in this process, for the runtime to announce
        (it drains the list)."""
        self._changes_seen: set[tuple[str, str]] = set()

    # --- lifecycle ----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        base_url: str,
        vault: Vault,
        user_id: UserId,
        store_dir: Path,
        *,
        cross_sign: bool = True,
        request_timeout_s: float = 60.0,
    ) -> E2eeClient:
        """Open the bot's device from the vault and its store, checking it against the server.

        The vault holds the account's access token and device id (written by
        `clubs.core.admin.ensure_service_account`), or at least its password for one first
        login; the store key is created in the vault on first start.
        """
        session = await _stored_session(base_url, vault, user_id)
        stored_key = vault.get(pickle_key_name(user_id))
        if stored_key is not None:
            check_pickle_key(stored_key)  # before touching the disk
        lock_fd = _lock_store(store_dir, user_id)
        http = MatrixHttp(base_url, session.access_token)
        try:
            db = store_file(store_dir, user_id, session.device_id)
            store_existed = db.exists()
            if stored_key is None:
                if store_existed:
                    raise StoreError(
                        f"{db}: the crypto store exists but the vault holds no key for it; "
                        "restore the vault that created it"
                    )
                stored_key = secrets.token_urlsafe(32)
                vault.set(pickle_key_name(user_id), stored_key)
            pickle_key = check_pickle_key(stored_key)
            with _unreachable(f"opening the device of {user_id}"):
                server_keys = await _check_device_on_server(http, session, store_existed, db)
            client = _nio_client(base_url, session, store_dir, pickle_key, request_timeout_s)
            try:
                with _unreachable(f"opening the device of {user_id}"):
                    await _load_store(client, session, db, server_keys)
                    state = None
                    if cross_sign:
                        state = await ensure_cross_signing(
                            http, vault, session.user_id, session.device_id
                        )
                pins = MasterKeyPins(store_dir / PINS_FILE)
                own = stored_keys(vault, session.user_id)
                if own is not None and pins.get(session.user_id) != own.master_public:
                    pins.replace(session.user_id, own.master_public)  # ours: the vault decides
            except BaseException:
                await _close_nio(client)
                raise
        except BaseException:
            await http.close()
            _unlock_store(lock_fd)
            raise
        log.info("opened device %s of %s", session.device_id, session.user_id)
        return cls(client, http, vault, pins, session, state, lock_fd)

    async def close(self) -> None:
        """Close connections and the store. Never logs out: the device and its keys stay."""
        await _close_nio(self._client)
        await self._http.close()
        _unlock_store(self._lock_fd)
        self._lock_fd = None

    async def __aenter__(self) -> E2eeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def user_id(self) -> UserId:
        return self.session.user_id

    @property
    def device_id(self) -> DeviceId:
        return self.session.device_id

    @property
    def device_ed25519(self) -> str:
        return str(self._olm.account.identity_keys["ed25519"])

    @property
    def _olm(self) -> Any:
        olm = self._client.olm
        if olm is None:  # never: open() refuses to return without it
            raise StoreError("the crypto store is not loaded")
        return olm

    # --- sync ---------------------------------------------------------------------------------

    async def sync(
        self,
        since: str | None = None,
        timeout_ms: int = 30_000,
        *,
        timeline_types: Sequence[str] | None = None,
    ) -> SyncBatch:
        """One `/sync` (long-polling up to `timeout_ms`), decrypted, plus the crypto housekeeping
        it calls for (key upload, device-list queries, Olm sessions, to-device messages).

        `timeline_types` narrows the incremental timelines to those event types, for a device
        that reads room events some other way (the bridge's, from its application-service
        transactions): a busy room's messages then neither wake nor fill its sync.

        Without `since` this is an initial sync (every room's state, one event of backlog).
        The first call with a stored `since` learns the joined rooms from `/joined_rooms` and
        stays incremental: room state is loaded when it is needed (`room_state`).
        """
        with _unreachable(f"sync of {self.user_id}"):
            if since is not None and self._joined is None:
                self._joined = await self._fetch_joined_rooms()
            # nio skips a response whose `next_batch` it has already seen: a batch the runtime
            # retries from the same position must be decrypted and handled again.
            self._client.next_batch = since
            resp = await self._client.sync(
                timeout=timeout_ms,
                since=since,
                sync_filter=_sync_filter(since, timeline_types),
            )
            if isinstance(resp, nio.ErrorResponse):
                raise _matrix_error(resp, "GET", "sync")
            if resp.to_device_events:
                # nio has stored the room keys these carried; our position is not committed,
                # so after a crash here Synapse delivers them again (docs/security.md, kill points).
                crashpoint("after_to_device")
                self._keys_arrived = True
                self._note_withheld(resp.to_device_events)
            self._track_rooms(resp, initial=since is None)
            self._dirty_users.update(resp.device_list.changed)
            if resp.device_key_count.signed_curve25519 == 0 and self._client.olm is not None:
                # nio skips a count of 0 (falsy): a device whose one-time keys were all claimed,
                # or dropped by a restore, would never upload new ones.
                self._client.olm.uploaded_key_count = 0
            await self._housekeeping()
            if self._dirty_users:
                await self.refresh_trust(self._dirty_users)
            events: list[RoomEvent] = []
            for room_id, info in resp.rooms.join.items():
                timeline = list(info.timeline.events)
                gappy = info.timeline.limited and info.timeline.prev_batch
                # A narrowed timeline is not read (see `timeline_types`): no gap to fill. The
                # state nio follows comes whole in a limited sync's state block.
                if since is not None and gappy and timeline_types is None:
                    gap = await self._fill_gap(room_id, info.timeline.prev_batch, since)
                    timeline = gap + timeline
                events += [ev for raw in timeline if (ev := self._room_event(RoomId(room_id), raw))]
        return SyncBatch(
            next_batch=resp.next_batch,
            events=events,
            invites=[self._invite(RoomId(r), info) for r, info in resp.rooms.invite.items()],
            to_device=len(resp.to_device_events),
        )

    async def load_joined_rooms(self) -> list[RoomId]:
        """The rooms we are joined to, asking the server if no sync has told us yet."""
        if self._joined is None:
            with _unreachable(f"joined rooms of {self.user_id}"):
                fetched = await self._fetch_joined_rooms()
            if self._joined is None:
                self._joined = fetched
        return sorted(self._joined)

    async def _fetch_joined_rooms(self) -> set[RoomId]:
        joined = await self._http.get(path(*CS, "joined_rooms"), label="joined_rooms")
        rooms = joined.get("joined_rooms")
        if not isinstance(rooms, list):
            return set()
        return {RoomId(r) for r in rooms if isinstance(r, str)}

    def _track_rooms(self, resp: Any, *, initial: bool) -> None:
        """Keep the joined-room list, and which rooms' state nio holds whole: all of them after
        an initial sync; a room newly joined since the last sync (Synapse sends its full
        state); none that we were in before a restart (loaded on demand)."""
        joined = self._joined if self._joined is not None else set()
        for room_id in resp.rooms.join:
            room = RoomId(room_id)
            if initial or room not in joined:
                self._loaded.add(room)
            joined.add(room)
        for room_id in resp.rooms.leave:
            joined.discard(RoomId(room_id))
            self._loaded.discard(RoomId(room_id))
        self._joined = joined

    async def _fill_gap(self, room_id: str, prev_batch: str, since: str) -> list[Any]:
        """The events a limited ("gappy") timeline left out, oldest first.

        Synapse sends at most `TIMELINE_LIMIT` events per room in one sync (our filter's limit);
        when more arrived since `since`
        (a busy room, or a restart after downtime) the timeline is `limited` and the rest must
        be paged from `/messages`, back from `prev_batch` to `since`, or they are lost.
        """
        older: list[Any] = []
        start = prev_batch
        while len(older) < GAP_FILL_MAX_EVENTS:
            resp = await self._client.room_messages(
                room_id,
                start=start,
                end=since,
                direction=nio.MessageDirection.back,
                limit=GAP_FILL_PAGE,
            )
            if isinstance(resp, nio.ErrorResponse):
                error = _matrix_error(resp, "GET", "messages")
                if isinstance(error, Forbidden | NotFound):
                    # We left (or were removed) since the sync was computed: the room's
                    # history is no longer ours to read, and retrying would fail the same way
                    # and hold every other room's events back.
                    log.warning(
                        "%s: the events missed in %s cannot be read (%s); skipped",
                        self.user_id,
                        room_id,
                        error.errcode,
                    )
                    break
                raise error
            older += resp.chunk
            if len(resp.chunk) < GAP_FILL_PAGE or not resp.end:
                break
            start = resp.end
        else:
            log.warning(
                "%s: more than %d events missed in %s since the last sync; older ones skipped",
                self.user_id,
                GAP_FILL_MAX_EVENTS,
                room_id,
            )
        older.reverse()
        return older

    def _invite(self, room_id: RoomId, info: Any) -> Invite:
        for ev in getattr(info, "invite_state", []):
            if (
                isinstance(ev, nio.InviteMemberEvent)
                and ev.state_key == self.user_id
                and ev.membership == "invite"
            ):
                direct = isinstance(ev.content, dict) and ev.content.get("is_direct") is True
                return Invite(room_id, UserId(ev.sender), direct)
        return Invite(room_id, None, False)

    async def _housekeeping(self) -> None:
        c = self._client
        if c.outgoing_to_device_messages:
            for r in await c.send_to_device_messages():
                if isinstance(r, nio.ErrorResponse):
                    log.warning("to-device send of %s failed: %s", self.user_id, r.status_code)
        if c.should_upload_keys:
            _check(await c.keys_upload(), "POST", "keys/upload")
        if c.should_query_keys:
            self._dirty_users.update(c.users_for_key_query)
            _check(await c.keys_query(), "POST", "keys/query")
        if c.should_claim_keys:
            _check(await c.keys_claim(c.get_users_for_key_claiming()), "POST", "keys/claim")

    def _room_event(self, room_id: RoomId, ev: Any) -> RoomEvent | None:
        source = getattr(ev, "source", None)
        if not isinstance(source, dict):
            return None
        event_id = source.get("event_id") or getattr(ev, "event_id", None)
        sender = source.get("sender") or getattr(ev, "sender", None)
        if not isinstance(event_id, str) or not isinstance(sender, str):
            return None
        ts = source.get("origin_server_ts")
        content = source.get("content")
        encrypted = isinstance(ev, nio.MegolmEvent) or bool(getattr(ev, "decrypted", False))
        if isinstance(ev, nio.MegolmEvent):
            self._undecrypted[event_id] = (room_id, ev)
            while len(self._undecrypted) > UNDECRYPTED_KEEP:
                self._undecrypted.popitem(last=False)
        decrypted = encrypted and not isinstance(ev, nio.MegolmEvent)
        trusted = False
        if decrypted:
            sender_key = getattr(ev, "sender_key", None)
            device = (
                self._olm.device_store.device_from_sender_key(sender, sender_key)
                if isinstance(sender_key, str)
                else None
            )
            trusted = device is not None and device.trust_state == NioTrust.verified
        state_key = source.get("state_key")
        return RoomEvent(
            room_id=room_id,
            event_id=EventId(event_id),
            sender=UserId(sender),
            type=str(source.get("type", "")),
            content=content if isinstance(content, dict) else {},
            origin_server_ts=ts if isinstance(ts, int) else 0,
            state_key=state_key if isinstance(state_key, str) else None,
            encrypted=encrypted,
            decrypted=decrypted,
            sender_trusted=trusted,
        )

    def _note_withheld(self, events: Iterable[Any]) -> None:
        for ev in events:
            source = getattr(ev, "source", None)
            if not isinstance(source, dict) or source.get("type") not in WITHHELD_TYPES:
                continue
            content = source.get("content")
            sender = source.get("sender")
            if not isinstance(content, dict) or not isinstance(sender, str):
                continue
            session, code = content.get("session_id"), content.get("code")
            if isinstance(session, str) and isinstance(code, str):
                self._withheld_from_us[session] = (sender, code[:64])
                self._withheld_from_us.move_to_end(session)
                while len(self._withheld_from_us) > WITHHELD_KEEP:
                    self._withheld_from_us.popitem(last=False)
                log.info("%s: a room key was withheld from us (%s)", self.user_id, code[:64])

    def withheld_code(self, event_id: str) -> str | None:
        """Why the sender withheld the key of an event we could not decrypt (`m.unverified`,
        `m.blacklisted`, `m.unauthorised`, `m.unavailable`, `m.no_olm`), if they told us."""
        held = self._undecrypted.get(event_id)
        if held is None:
            return None
        session = getattr(held[1], "session_id", None)
        found = self._withheld_from_us.get(session) if isinstance(session, str) else None
        return found[1] if found is not None and found[0] == held[1].sender else None

    def withheld_waiting(self) -> list[tuple[str, RoomId, UserId, str]]:
        """Events still waiting for a key that their sender told us is withheld:
        (event id, room id, sender, code)."""
        if not self._withheld_from_us:
            return []
        found = []
        for event_id, (room_id, megolm) in self._undecrypted.items():
            session = getattr(megolm, "session_id", None)
            told = self._withheld_from_us.get(session) if isinstance(session, str) else None
            if told is not None and told[0] == megolm.sender:
                found.append((event_id, room_id, UserId(megolm.sender), told[1]))
        return found

    def encrypted_source(self, event_id: str) -> dict[str, Any] | None:
        """The encrypted event as the server sent it, for an event still waiting for its key
        (ciphertext and routing only: what the runtime persists to retry after a restart)."""
        held = self._undecrypted.get(event_id)
        source = getattr(held[1], "source", None) if held is not None else None
        return dict(source) if isinstance(source, dict) else None

    def restore_waiting(self, events: Iterable[tuple[str, RoomId, Mapping[str, Any]]]) -> int:
        """Take back events that waited for their key before a restart (event id, room id,
        encrypted JSON); they are retried with the next sync. Returns how many were usable."""
        restored = 0
        for event_id, room_id, raw in events:
            try:
                parsed = nio.Event.parse_encrypted_event(dict(raw))
            except Exception:  # noqa: S112 - a damaged row: nothing to retry
                continue
            if not isinstance(parsed, nio.MegolmEvent):
                continue
            parsed.room_id = room_id
            self._undecrypted[event_id] = (room_id, parsed)
            restored += 1
        while len(self._undecrypted) > UNDECRYPTED_KEEP:
            self._undecrypted.popitem(last=False)
        self._keys_arrived = True  # the store may hold keys that came while we were down
        return restored

    def forget_waiting(self, event_ids: Iterable[str]) -> None:
        for event_id in event_ids:
            self._undecrypted.pop(event_id, None)

    async def request_keys(self, event_id: str) -> None:
        """Ask the sender's devices and our own other devices for the key of an event we could
        not decrypt (`m.room_key_request`), once per session per process."""
        held = self._undecrypted.get(event_id)
        if held is None:
            return
        await self._request_key(held[1])

    async def request_key_for(self, room_id: RoomId, raw: Mapping[str, Any]) -> None:
        """`request_keys` for an encrypted event given as JSON (one that reached us some other
        way than our sync: the bridge's transactions); hostile input is ignored."""
        try:
            parsed = nio.Event.parse_encrypted_event(dict(raw))
        except Exception:  # not an encrypted event at all: nothing to ask for
            return
        if isinstance(parsed, nio.MegolmEvent):
            parsed.room_id = room_id
            await self._request_key(parsed)

    async def _request_key(self, megolm: nio.MegolmEvent) -> None:
        session = getattr(megolm, "session_id", None)
        if not isinstance(session, str) or session in self._requested:
            return
        if self._requests_to[megolm.sender] >= KEY_REQUESTS_PER_SENDER:
            return
        self._requested.add(session)
        self._requests_to[megolm.sender] += 1
        request = dict(megolm.as_key_request(megolm.sender, self.device_id).content)
        messages: dict[str, dict[str, Any]] = {megolm.sender: {"*": request}}
        if megolm.sender != self.user_id:
            messages[self.user_id] = {"*": request}
        txn = "keyreq-" + hashlib.sha256(f"{session}|{self.device_id}".encode()).hexdigest()[:32]
        try:
            with _unreachable(f"key request by {self.user_id}"):
                await self._http.put(
                    path(*CS, "sendToDevice", "m.room_key_request", txn),
                    {"messages": messages},
                    label="sendToDevice m.room_key_request",
                )
        except ClubsError as e:
            self._requested.discard(session)
            log.debug("%s: key request not sent: %s", self.user_id, type(e).__name__)

    async def decrypt_json(self, room_id: RoomId, raw: Mapping[str, Any]) -> RoomEvent | None:
        """Decrypt one event given as JSON (e.g. a reported event from the admin API), if this
        device holds its key; None otherwise (never raises on hostile input)."""
        try:
            parsed = nio.Event.parse_encrypted_event(dict(raw))
            if not isinstance(parsed, nio.MegolmEvent):
                return None
            parsed.room_id = room_id
            decrypted = self._client.decrypt_event(parsed)
        except Exception:  # no key, or not an event at all
            return None
        return self._room_event(room_id, decrypted) if decrypted is not None else None

    def retry_undecrypted(self) -> list[RoomEvent]:
        """Events that failed to decrypt earlier and decrypt now (keys arrived since). Tried
        only after a sync that brought to-device messages (or a restore), so a pile of events
        whose keys never come costs nothing per sync."""
        if not self._keys_arrived:
            return []
        self._keys_arrived = False
        done: list[RoomEvent] = []
        for event_id, (room_id, megolm) in list(self._undecrypted.items()):
            try:
                decrypted = self._client.decrypt_event(megolm)
            except Exception:  # noqa: S112 - still no key, or a hostile payload: keep waiting
                continue
            del self._undecrypted[event_id]
            if decrypted is not None and (ev := self._room_event(room_id, decrypted)):
                done.append(ev)
        return done

    # --- rooms --------------------------------------------------------------------------------

    def knows_room(self, room_id: RoomId) -> bool:
        """Whether we are joined to the room as of the last sync (sends to it can go out)."""
        return self._joined is not None and room_id in self._joined

    def joined_rooms(self) -> list[RoomId]:
        return sorted(self._joined) if self._joined is not None else []

    async def members(self, room_id: RoomId) -> frozenset[UserId]:
        """Joined and invited members (the room's state is loaded first if nio lacks it)."""
        if room_id not in self._loaded:
            await self.room_state(room_id)
        room = self._client.rooms.get(room_id)
        return frozenset(UserId(u) for u in room.users) if room is not None else frozenset()

    async def is_encrypted(self, room_id: RoomId) -> bool:
        """Whether the room is encrypted; a room not yet known to be is checked on the server."""
        if self._known_encrypted(room_id):
            return True
        if room_id not in self._loaded:
            await self.room_state(room_id)
        return self._known_encrypted(room_id)

    def _known_encrypted(self, room_id: RoomId) -> bool:
        room = self._client.rooms.get(room_id)
        return room_id in self._client.encrypted_rooms or bool(room and room.encrypted)

    async def room_state(self, room_id: RoomId) -> list[JsonDict]:
        """The room's current state events (one request), which also bring nio's view of the
        room up to date: members, encryption. Concurrent callers share one request."""
        pending = self._loading.get(room_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[list[JsonDict]] = asyncio.get_running_loop().create_future()
        self._loading[room_id] = future
        try:
            with _unreachable(f"room state by {self.user_id}"):
                events = await self._http.get_list(
                    path(*CS, "rooms", room_id, "state"), label="room state"
                )
            state = [ev for ev in events if isinstance(ev, dict)]
            self._apply_state(room_id, state)
            future.set_result(state)
            return state
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                # Only the first caller was cancelled: the others get a transient error (their
                # batch is retried) rather than a cancellation that is not theirs.
                e = Unreachable(f"room state of {room_id}: the request was cancelled")
            future.set_exception(e)
            future.exception()  # retrieved: a lone caller does not leave it unobserved
            raise
        finally:
            del self._loading[room_id]

    def _apply_state(self, room_id: RoomId, state: list[JsonDict]) -> None:
        c = self._client
        if self._joined is None or room_id not in self._joined:
            return  # not (or no longer) ours: nio keeps rooms we are in only
        room = c.rooms.get(room_id)
        if room is None:
            room = c.rooms[room_id] = nio.MatrixRoom(
                room_id, self.user_id, room_id in c.encrypted_rooms
            )
        encrypted = False
        for raw in state:
            try:
                ev = _member_event(raw) if raw.get("type") == "m.room.member" else None
                if ev is None:
                    ev = nio.Event.parse_event(raw)
            except Exception:  # noqa: S112 - a malformed state event: nio would skip it too
                continue
            if isinstance(ev, nio.RoomEncryptionEvent):
                encrypted = True
            if isinstance(ev, nio.RoomMemberEvent):
                if room.handle_membership(ev):
                    c.invalidate_outbound_session(room_id)
            elif not isinstance(ev, (nio.UnknownBadEvent, nio.BadEvent)):
                room.handle_event(ev)
        if encrypted and room_id not in c.encrypted_rooms:
            c.encrypted_rooms.add(room_id)
            if c.store is not None:
                c.store.save_encrypted_rooms([room_id])
        room.members_synced = True
        if room.encrypted and c.olm is not None:
            c.olm.update_tracked_users(room)
        self._loaded.add(room_id)

    async def leave(self, room_id: RoomId) -> None:
        """Leave (or decline an invite to) a room."""
        with _unreachable(f"leave by {self.user_id}"):
            resp = await self._client.room_leave(room_id)
        _check(resp, "POST", "leave")
        if self._joined is not None:
            self._joined.discard(room_id)
        self._loaded.discard(room_id)

    async def join(self, room_id: RoomId) -> None:
        with _unreachable(f"join by {self.user_id}"):
            resp = await self._client.join(room_id)
        _check(resp, "POST", "join")

    async def send(
        self,
        room_id: RoomId,
        event_type: str,
        content: Mapping[str, Any],
        *,
        txn_id: str | None = None,
    ) -> EventId:
        """Send an event, encrypted if the room is encrypted; room keys go only to devices that
        their owners cross-signed. `txn_id` makes a retry idempotent (Synapse deduplicates per
        device). Raises StoreError rather than ever sending plaintext into an encrypted room."""
        if not self.knows_room(room_id):
            raise ClubsError(f"{self.user_id} is not joined to room {room_id} (sync first)")
        if room_id not in self._loaded:
            await self.room_state(room_id)  # members and encryption, before anything goes out
        room = self._client.rooms[room_id]
        encrypted = room.encrypted or room_id in self._client.encrypted_rooms
        if encrypted and not room.members_synced:
            # Members known from syncs only: a sync can bring a room before an invite that
            # already happened (the bot's own createRoom was still inviting), and nio would then
            # fill in with /joined_members, which lists no invitee: the room key would skip
            # them. The room's state has every joined and invited member.
            await self.room_state(room_id)
            room = self._client.rooms[room_id]
        if encrypted and self._client.olm is None:
            raise StoreError("refusing to send into an encrypted room without a crypto store")
        with _unreachable(f"send by {self.user_id}"):
            if encrypted:
                await self._prepare_encrypted_room(room_id)
            try:
                resp = await self._client.room_send(
                    room_id, event_type, dict(content), tx_id=txn_id
                )
            except nio.OlmUnverifiedDeviceError:
                # A device appeared between our trust pass and the share: decide, then retry.
                await self.refresh_trust(list(room.users))
                resp = await self._client.room_send(
                    room_id, event_type, dict(content), tx_id=txn_id
                )
        _check(resp, "PUT", "send")
        if encrypted:
            await self._tell_withheld(room_id)
        return EventId(resp.event_id)

    async def _tell_withheld(self, room_id: RoomId) -> None:
        """Tell the devices the room key was withheld from (not cross-signed by their owner),
        once per session. Best effort: a failure is retried with the next send."""
        session = self._olm.outbound_group_sessions.get(room_id)
        if session is None:
            return
        told = self._withheld.setdefault(session.id, set())
        self._withheld.move_to_end(session.id)
        while len(self._withheld) > WITHHELD_KEEP:
            self._withheld.popitem(last=False)
        own = (self.user_id, self.device_id)
        targets = sorted(set(session.users_ignored) - told - {own})
        if not targets:
            return
        content = {
            "algorithm": MEGOLM,
            "room_id": room_id,
            "session_id": session.id,
            "sender_key": self._olm.account.identity_keys["curve25519"],
            "code": "m.unverified",
            "reason": WITHHELD_REASON,
        }
        messages: dict[str, dict[str, Any]] = {}
        for user, device in targets:
            messages.setdefault(user, {})[device] = content
        digest = hashlib.sha256(repr(targets).encode()).hexdigest()[:16]
        txn = f"withheld-{session.id[:16]}-{digest}"
        try:
            await self._http.put(
                path(*CS, "sendToDevice", "m.room_key.withheld", txn),
                {"messages": messages},
                label="sendToDevice m.room_key.withheld",
            )
        except ClubsError as e:
            log.debug("%s: withheld notice not sent: %s", self.user_id, type(e).__name__)
            return
        told.update(targets)
        log.debug("%s: told %d device(s) a room key is withheld", self.user_id, len(targets))

    async def _prepare_encrypted_room(self, room_id: RoomId) -> None:
        c = self._client
        room = c.rooms[room_id]
        if c.should_query_keys:
            self._dirty_users.update(c.users_for_key_query)
            _check(await c.keys_query(), "POST", "keys/query")
        undecided = {
            user
            for user in room.users
            for device in self._olm.device_store.active_user_devices(user)
            if device.trust_state not in (NioTrust.verified, NioTrust.blacklisted)
            and not (user == self.user_id and device.id == self.device_id)
        }
        todo = undecided | (self._dirty_users & set(room.users))
        if todo:
            await self.refresh_trust(todo)

    # --- trust --------------------------------------------------------------------------------

    async def refresh_trust(self, users: Iterable[str]) -> dict[str, UserVerdict]:
        """Query the users' cross-signing keys and mark each of their devices in nio: verified
        if cross-signed by the pinned (or first seen) master key, blacklisted otherwise."""
        users = sorted(set(users))
        verdicts: dict[str, UserVerdict] = {}
        for i in range(0, len(users), KEYS_QUERY_BATCH):
            batch = users[i : i + KEYS_QUERY_BATCH]
            with _unreachable(f"keys/query by {self.user_id}"):
                query = await self._http.post(
                    path(*CS, "keys", "query"),
                    {"device_keys": {u: [] for u in batch}},
                    label="keys/query",
                )
            for user in batch:
                verdict = evaluate_user(query, user, self._pins.get(user))
                if verdict.identity_changed and verdict.master_key is not None:
                    change = (user, verdict.master_key)
                    if change not in self._changes_seen:
                        self._changes_seen.add(change)
                        self.identity_changes.append((UserId(user), verdict.master_key))
                    if self.identity_policy == "accept":
                        log.warning("the master key of %s changed; accepted (policy)", user)
                        self._pins.replace(user, verdict.master_key)
                        verdict = evaluate_user(query, user, verdict.master_key)
                verdicts[user] = self._apply_verdict(verdict)
        self._dirty_users.difference_update(users)
        return verdicts

    def _apply_verdict(self, verdict: UserVerdict) -> UserVerdict:
        user = verdict.user_id
        if verdict.master_key is not None and self._pins.pin(user, verdict.master_key):
            log.info("pinned the master key of %s", user)
        if verdict.identity_changed:
            if UserId(user) not in self.identity_changed:
                log.warning("the master key of %s changed; withholding room keys", user)
            self.identity_changed.add(UserId(user))
        else:
            self.identity_changed.discard(UserId(user))
        trusted = untrusted = 0
        for device in list(self._olm.device_store.active_user_devices(user)):
            if user == self.user_id and device.id == self.device_id:
                continue
            if verdict.trusts(device.id, device.ed25519, device.curve25519):
                trusted += 1
                if device.trust_state != NioTrust.verified:
                    self._client.verify_device(device)  # replaces any earlier state
            else:
                untrusted += 1
                if device.trust_state != NioTrust.blacklisted:
                    self._client.blacklist_device(device)
        log.debug("trust of %s: %d cross-signed, %d withheld", user, trusted, untrusted)
        return verdict

    async def accept_identity_change(self, user_id: UserId) -> None:
        """Trust `user_id`'s current master key from now on (an operator's decision)."""
        with _unreachable(f"keys/query by {self.user_id}"):
            query = await self._http.post(
                path(*CS, "keys", "query"), {"device_keys": {user_id: []}}, label="keys/query"
            )
        verdict = evaluate_user(query, user_id, None)
        if verdict.master_key is None:
            raise ClubsError(f"{user_id} has no cross-signing master key to accept")
        self._pins.replace(user_id, verdict.master_key)
        await self.refresh_trust([user_id])


# --- helpers ----------------------------------------------------------------------------------


async def _stored_session(base_url: str, vault: Vault, user_id: UserId) -> Session:
    token = vault.get(f"{user_id}/access_token")
    device = vault.get(f"{user_id}/device_id")
    if token and device:
        return Session(user_id, DeviceId(device), token)
    password = vault.get(f"{user_id}/password")
    if password is None:
        raise StoreError(f"the vault holds no session and no password for {user_id}")
    async with MatrixHttp(base_url) as anon:
        session = await login_password(anon, user_id, password, device)
    vault.set(f"{user_id}/access_token", session.access_token)
    vault.set(f"{user_id}/device_id", session.device_id)
    log.info("logged %s in once, on device %s", user_id, session.device_id)
    return session


async def _check_device_on_server(
    http: MatrixHttp, session: Session, store_existed: bool, db: Path
) -> JsonDict | None:
    """The device's key object on the server (None if it has none), after checking that the
    token belongs to this very device and that a missing store is not hiding a live device."""
    try:
        who = await http.get(path(*CS, "account", "whoami"))
    except Forbidden:
        raise DeviceError(
            f"the stored access token of {session.user_id} is no longer valid; "
            "renew it with ensure_service_account (same device id)"
        ) from None
    if who.get("user_id") != session.user_id or who.get("device_id") != session.device_id:
        raise DeviceError(
            f"the stored access token of {session.user_id} belongs to device "
            f"{who.get('device_id')}, not {session.device_id}"
        )
    query = await http.post(
        path(*CS, "keys", "query"),
        {"device_keys": {session.user_id: [session.device_id]}},
        label="keys/query",
    )
    device = query.get("device_keys", {}).get(session.user_id, {}).get(session.device_id)
    device = device if isinstance(device, dict) else None
    if device is not None and not store_existed:
        raise DeviceError(
            f"device {session.device_id} of {session.user_id} has keys on the server but its "
            f"crypto store {db} is missing; restore the store, or delete the device and log in "
            "on a new one (running it would give peers undecryptable messages)"
        )
    return device


def _lock_store(store_dir: Path, user_id: str = "") -> int:
    """Hold an exclusive lock on the store directory for as long as the client is open: one
    process per bot account (its one device), whatever shard of clubs each would serve. The
    holder's pid is written into the lock file for the refusal's message."""
    store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(store_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f"bot account {user_id}" if user_id else "the crypto store"
        by = f" (pid {holder})" if holder.isdigit() else ""
        raise StoreError(
            f"{store_dir}: {who} is already run by another process{by}; one process per "
            "account: give each shard its own accounts, or stop that process first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _unlock_store(fd: int | None) -> None:
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


async def _close_nio(client: nio.AsyncClient) -> None:
    await client.close()
    if client.store is not None:
        client.store.database.close()


def _nio_client(
    base_url: str, session: Session, store_dir: Path, pickle_key: str, request_timeout_s: float
) -> nio.AsyncClient:
    config = nio.AsyncClientConfig(
        store=SqliteStore,
        encryption_enabled=True,
        pickle_key=pickle_key,
        store_sync_tokens=False,  # the caller persists next_batch after its handlers commit
        max_limit_exceeded=3,
        max_timeouts=0,  # the caller's loop retries, with backoff
        request_timeout=request_timeout_s,
    )
    return nio.AsyncClient(
        base_url, session.user_id, session.device_id, store_path=str(store_dir), config=config
    )


async def _load_store(
    client: nio.AsyncClient, session: Session, db: Path, server_keys: JsonDict | None
) -> None:
    try:
        client.restore_login(session.user_id, session.device_id, session.access_token)
    except Exception as e:  # vodozemac/peewee errors: a wrong key or a damaged file
        raise StoreError(f"{db}: cannot open the crypto store: {type(e).__name__}") from None
    if client.olm is None or client.store is None:
        raise StoreError(f"{db}: the crypto store did not load; refusing to run without it")
    with contextlib.suppress(OSError):
        os.chmod(db, 0o600)
    ours = client.olm.account.identity_keys
    if server_keys is not None:
        listed = server_keys.get("keys", {})
        if listed.get(f"ed25519:{session.device_id}") != ours["ed25519"]:
            raise DeviceError(
                f"device {session.device_id} of {session.user_id} has different keys on the "
                f"server than in its crypto store {db}; refusing to run a half-broken device"
            )
        if not client.olm.account.shared:  # uploaded, but the store missed the mark
            client.olm.mark_keys_as_published()
            client.olm.account.shared = True
            client.olm.save_account()
    elif client.olm.account.shared:
        raise DeviceError(
            f"the keys of device {session.device_id} of {session.user_id} are no longer on the "
            "server (was it logged out?); delete the store and the device, then log in anew"
        )
    if client.should_upload_keys:
        _check(await client.keys_upload(), "POST", "keys/upload")


@contextlib.contextmanager
def _unreachable(what: str) -> Iterator[None]:
    """aiohttp's connection errors and timeouts become `Unreachable` at the core boundary."""
    try:
        yield
    except (aiohttp.ClientError, TimeoutError) as e:
        raise Unreachable(f"{what}: {type(e).__name__}") from None


def _check(resp: Any, method: str, label: str) -> None:
    if isinstance(resp, nio.ErrorResponse):
        raise _matrix_error(resp, method, label)


def _matrix_error(resp: Any, method: str, label: str) -> MatrixError:
    errcode = str(resp.status_code or "M_UNKNOWN")
    transport = getattr(resp, "transport_response", None)
    status = int(getattr(transport, "status", 0) or 0)
    message = str(resp.message or "")
    kw: dict[str, Any] = {"method": method, "path": label}
    if errcode in ("M_FORBIDDEN", "M_UNKNOWN_TOKEN", "M_MISSING_TOKEN") or status in (401, 403):
        return Forbidden(status or 403, errcode, message, **kw)
    if errcode == "M_NOT_FOUND" or status == 404:
        return NotFound(status or 404, errcode, message, **kw)
    if errcode == "M_LIMIT_EXCEEDED" or status == 429:
        return RateLimited(
            status or 429, errcode, message, retry_after_ms=resp.retry_after_ms, **kw
        )
    return MatrixError(status, errcode, message, **kw)
