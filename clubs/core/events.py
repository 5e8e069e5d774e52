"""Raw events (from /sync, or after decryption) turned into small typed values, or None.

Everything here takes hostile input: any JSON value where an event is expected, wrong types in
every field, lone surrogates, 64 KiB bodies. Nothing raises; what is not a well-formed message is
None, and the sync loop moves on. The formatted body is kept as received: it is untrusted HTML
and must go through `clubs.core.html.sanitize` before it is ever shown again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from clubs.core.html import scrub
from clubs.core.ids import EventId, RoomId, UserId, as_event_id, as_room_id, as_user_id

MAX_EVENT_BYTES = 65_536
"""The spec's limit for a whole event; no field of a conforming event is longer."""

HTML_FORMAT = "org.matrix.custom.html"


@dataclass(frozen=True)
class Message:
    """An `m.room.message` as bots see it. Text fields are always encodable as UTF-8."""

    event_id: EventId
    room_id: RoomId
    sender: UserId
    origin_server_ts: int
    msgtype: str
    body: str
    formatted_body: str | None
    relation: str | None
    """`rel_type` of `m.relates_to` (`m.replace`, `m.thread`, `m.annotation`, ...), if any."""
    relates_to: EventId | None
    """The event that relation points at. It may be unknown, or in another room."""
    reply_to: EventId | None
    """`m.in_reply_to`, unless it is only a thread's fallback for clients without threads."""

    @property
    def is_edit(self) -> bool:
        """Edits never execute commands: the original was already seen (or never was)."""
        return self.relation == "m.replace"

    @property
    def is_reply(self) -> bool:
        return self.reply_to is not None

    @property
    def thread_root(self) -> EventId | None:
        return self.relates_to if self.relation == "m.thread" else None


def is_state(event: object) -> bool:
    """Whether `event` is a state event. Only a string `state_key` makes one.

    A timeline event typed `m.room.power_levels` or `m.room.tombstone` without a `state_key` is
    a message-like event anyone can send: it changes nothing and must be ignored as state.
    """
    return isinstance(event, Mapping) and isinstance(event.get("state_key"), str)


def _text(value: object, limit: int = MAX_EVENT_BYTES) -> str | None:
    if not isinstance(value, str) or len(value) > limit:
        return None
    return scrub(value)


def _relation(
    content: Mapping[object, object],
) -> tuple[str | None, EventId | None, EventId | None]:
    rel = content.get("m.relates_to")
    if not isinstance(rel, Mapping):
        return None, None, None
    rel_type = _text(rel.get("rel_type"), 255)
    target = as_event_id(rel.get("event_id")) if rel_type else None
    reply = rel.get("m.in_reply_to")
    reply_to = as_event_id(reply.get("event_id")) if isinstance(reply, Mapping) else None
    if rel_type == "m.thread" and rel.get("is_falling_back") is True:
        reply_to = None
    return rel_type, target, reply_to


def parse_message(event: object, room_id: str | None = None) -> Message | None:
    """`event` as a Message, or None if it is anything else or malformed.

    `room_id` is the room the event was delivered in (sync timelines omit it from events). An
    event claiming another room is refused.
    """
    if not isinstance(event, Mapping) or event.get("type") != "m.room.message":
        return None
    if "state_key" in event:
        return None
    claimed = event.get("room_id")
    room = as_room_id(room_id if room_id is not None else claimed)
    if room is None or (claimed is not None and claimed != room):
        return None
    event_id = as_event_id(event.get("event_id"))
    sender = as_user_id(event.get("sender"))
    ts = event.get("origin_server_ts")
    content = event.get("content")
    if event_id is None or sender is None or not isinstance(content, Mapping):
        return None
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        return None
    msgtype = _text(content.get("msgtype"), 255)
    body = _text(content.get("body"))
    if not msgtype or body is None:
        return None
    formatted = None
    if content.get("format") == HTML_FORMAT:
        formatted = _text(content.get("formatted_body"))
    relation, relates_to, reply_to = _relation(content)
    return Message(
        event_id=event_id,
        room_id=room,
        sender=sender,
        origin_server_ts=ts,
        msgtype=msgtype,
        body=body,
        formatted_body=formatted,
        relation=relation,
        relates_to=relates_to,
        reply_to=reply_to,
    )
