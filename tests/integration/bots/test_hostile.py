"""Hostile events (docs/security.md), from a member, in the clear and inside E2EE.

A member of two managed rooms sends the corpus twice: as raw plaintext `PUT /send` requests
(the hardened Synapse encrypts every room, but any client can still post plaintext into one),
and through the cross-signed-only peer (mautrix), encrypted, so the bot meets each payload both
as Synapse delivers it and as nio decrypts it. Synapse itself refuses part of the plaintext
corpus (non-string bodies, missing msgtype, relations to unknown events, a lone surrogate...);
inside E2EE all of it reaches the bot. Then each room is flooded with 100 messages per second.
The bot's loop must stay alive; in the encrypted path its next `!ping` must be answered and
every command of the corpus must get exactly one answer, while plaintext commands in an
encrypted room (no client sends those; only a token thief or the server could) get none; a fake
`m.room.power_levels` without a `state_key` must grant nothing, and no HTML the bot sends may
carry a script, an event handler or a `javascript:` link.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from mautrix.errors import MatrixRequestError
from mautrix.types import EventType, RoomID

from clubs.bots.runtime import RuntimeSettings
from clubs.core.errors import MatrixError
from clubs.core.http import path
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.botproc import echo_catalog, echo_factory
from tests.integration.bots.support import (
    CS,
    bot_host,
    create_bot_account,
    joined,
    managed_room,
    new_network,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer

FLOOD_PER_S = 100
FLOOD_S = 3
MAX_EVENT = 65_536

Content = dict[str, Any]


def corpus(member: str, *, encrypted: bool) -> list[tuple[str, Content, str | None]]:
    """(event type, content, what the bot must answer or None) — the S2 cases.

    Inside E2EE the sizes shrink: the ciphertext (base64 of the JSON with escaped non-ASCII)
    must still fit the 64 KiB event limit."""
    big, marks = (45_000, 7_000) if encrypted else (63_000, 30_000)
    html = "org.matrix.custom.html"
    nested = "<b>" * 150 + "deep" + "</b>" * 150
    script = (
        '<script>alert(1)</script><img src=x onerror="alert(2)"><a href="javascript:alert(3)">x</a>'
    )
    return [
        # Sizes: a body near the 64 KiB event limit (a command that long is chat), combining marks,
        # arguments longer than the command takes.
        ("m.room.message", {"msgtype": "m.text", "body": "x" * big}, None),
        ("m.room.message", {"msgtype": "m.text", "body": "!echo " + "y" * (big - 1000)}, None),
        ("m.room.message", {"msgtype": "m.text", "body": "!echo " + "y" * 400}, "usage"),
        ("m.room.message", {"msgtype": "m.text", "body": "a" + "\u0301" * marks}, None),
        # Wrong types and missing fields.
        ("m.room.message", {"msgtype": "m.text", "body": 42}, None),
        ("m.room.message", {"msgtype": "m.text", "body": None}, None),
        ("m.room.message", {"msgtype": "m.text", "body": ["!ping"]}, None),
        ("m.room.message", {"msgtype": "m.text", "body": {"!ping": 1}}, None),
        ("m.room.message", {"body": "!ping"}, None),
        ("m.room.message", {"msgtype": 7, "body": "!ping"}, None),
        ("m.room.message", {}, None),
        # Lone surrogates and NUL (the JSON carries "\ud800" and "\u0000" escapes).
        ("m.room.message", {"msgtype": "m.text", "body": "!echo \ud800 lone"}, None),
        ("m.room.message", {"msgtype": "m.text", "body": "chat \udfff", "format": html,
                            "formatted_body": "<b>\ud800</b>"}, None),
        ("m.room.message", {"msgtype": "m.text", "body": "!echo nul\u0000byte"}, None),
        # HTML: 150 nested tags, scripts, handlers, javascript: links, a forged reply fallback.
        ("m.room.message", {"msgtype": "m.text", "body": "deep", "format": html,
                            "formatted_body": nested}, None),
        ("m.room.message", {"msgtype": "m.text", "body": "!echo nested", "format": html,
                            "formatted_body": nested}, "echo"),
        ("m.room.message", {"msgtype": "m.text", "body": "look", "format": html,
                            "formatted_body": script + "<mx-reply>fake</mx-reply>"}, None),
        ("m.room.message", {"msgtype": "m.text", "body": "!echo " + script}, "echo"),
        ("m.room.message", {"msgtype": "m.text", "body": "!echo @room look here"}, "echo"),
        # Relations to events that do not exist (or are not even ids).
        ("m.room.message", {"msgtype": "m.text", "body": "!echo edited", "m.new_content": {
            "msgtype": "m.text", "body": "!echo edited"}, "m.relates_to": {
            "rel_type": "m.replace", "event_id": "$nowhere"}}, None),
        ("m.room.message", {"msgtype": "m.text", "body": "!echo in reply", "m.relates_to": {
            "m.in_reply_to": {"event_id": "$unknown:elsewhere"}}}, "echo"),
        ("m.room.message", {"msgtype": "m.text", "body": "!echo in thread", "m.relates_to": {
            "rel_type": "m.thread", "event_id": "$no-root", "is_falling_back": True,
            "m.in_reply_to": {"event_id": "$no-root"}}}, "echo"),
        ("m.room.message", {"msgtype": "m.text", "body": "odd", "m.relates_to": "string"}, None),
        ("m.room.message", {"msgtype": "m.text", "body": "odd", "m.relates_to": {
            "event_id": 5, "m.in_reply_to": []}}, None),
        ("m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$gone",
                                         "key": "👍"}}, None),
        # State-typed events in the timeline, without a state_key: they change nothing.
        ("m.room.power_levels", {"users": {member: 100}, "users_default": 100}, None),
        ("m.room.tombstone", {"body": "moved", "replacement_room": "!elsewhere:evil"}, None),
        ("org.commclubs.locator", {"network": "evil", "kind": "club_room"}, None),
        ("m.room.message", {"msgtype": "m.text", "body": "!secret"}, "refused"),
    ]  # fmt: skip


class Sender:
    """Sends events into one room as the member, in the clear or through the peer."""

    def __init__(self, room_id: str, send: Callable[[str, Content], Awaitable[str | None]]) -> None:
        self.room_id = room_id
        self._send = send
        self.expected: dict[str, str] = {}
        """Commands sent and accepted by the server: event id → the expected kind of answer."""
        self.refused: list[str] = []
        """Events the homeserver itself refused (they never reached the bot)."""

    async def send(self, event_type: str, content: Content, expect: str | None = None) -> None:
        try:
            event_id = await self._send(event_type, content)
        except (MatrixError, MatrixRequestError) as e:
            self.refused.append(f"{event_type}: {e}"[:120])
            return
        if event_id is not None and expect is not None:
            self.expected[event_id] = expect

    async def flood(self, per_s: int, seconds: int) -> float:
        """`per_s` chat messages per second for `seconds` s; returns the rate achieved."""
        gate = asyncio.Semaphore(32)
        started = time.monotonic()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, started + i / per_s - time.monotonic()))
            async with gate:
                await self.send("m.room.message", {"msgtype": "m.text", "body": f"spam {i}"})

        await asyncio.gather(*(one(i) for i in range(per_s * seconds)))
        return per_s * seconds / (time.monotonic() - started)


def clear_sender(member: Account, room_id: str) -> Sender:
    async def send(event_type: str, content: Content) -> str:
        url = path(*CS, "rooms", room_id, "send", event_type, secrets.token_hex(8))
        return str((await member.http.put(url, content))["event_id"])

    return Sender(room_id, send)


class _Verbatim(dict[str, Any]):
    """Content mautrix encrypts as it is (it would parse `m.relates_to` to copy it out in the
    clear, and fails on the hostile ones): the relation stays inside the ciphertext."""

    relates_to = None


def encrypted_sender(peer: MautrixPeer, room_id: str) -> Sender:
    async def send(event_type: str, content: Content) -> str:
        kind = EventType.find(event_type, t_class=EventType.Class.MESSAGE)
        if kind.is_state:  # the peer must send it as a message-like (timeline) event
            kind = EventType(event_type, EventType.Class.MESSAGE)
        verbatim: Any = _Verbatim(content)
        event_id = await peer.client.send_message_event(RoomID(room_id), kind, verbatim)
        return str(event_id)

    return Sender(room_id, send)


class UnsafeHtml(HTMLParser):
    """Collects what an allow-list sanitiser must never let through."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "iframe", "object", "embed", "mx-reply"):
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"{tag}[{name}]")
            if name in ("href", "src") and (value or "").strip().lower().startswith(
                ("javascript:", "data:", "vbscript:")
            ):
                self.found.append(f"{tag}[{name}={value}]")


def unsafe(html: str) -> list[str]:
    parser = UnsafeHtml()
    parser.feed(html)
    parser.close()
    return parser.found


async def test_hostile_events_leave_the_loop_alive_and_the_output_safe(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "echo")
    member = await synapse.new_user("member")
    invite = [account.user_id, member.user_id]
    clear_room = await managed_room(synapse, network, invite=invite, key="c")
    secret_room = await managed_room(synapse, network, invite=invite, key="e")
    for room in (clear_room, secret_room):
        await member.http.post(path(*CS, "join", room), {})
    settings = RuntimeSettings(sync_timeout_ms=1000, commands_per_window=1000)
    async with (
        bot_host(
            synapse,
            tmp_path,
            [account],
            {"echo": echo_factory("echo")},
            network=network,
            settings=settings,
            catalog=echo_catalog(tmp_path / "templates"),
        ) as host,
        mautrix_peer(member, synapse.url) as peer,
    ):
        for room in (clear_room, secret_room):

            async def bot_joined(room: str = room) -> bool:
                return await joined(member, room, account.user_id)

            await eventually(bot_joined, within=20)
        senders = [clear_sender(member, clear_room), encrypted_sender(peer, secret_room)]
        for sender in senders:
            encrypted = sender.room_id == secret_room
            for event_type, content, expect in corpus(member.user_id, encrypted=encrypted):
                # Plaintext in an encrypted room comes only from HTTP, never from a client:
                # the bot must survive it and never obey it.
                await sender.send(event_type, content, expect if encrypted else None)
        rates = [await sender.flood(FLOOD_PER_S, FLOOD_S) for sender in senders]
        host.check_alive()
        for sender in senders:
            expect = "pong" if sender.room_id == secret_room else None
            await sender.send("m.room.message", {"msgtype": "m.text", "body": "!ping"}, expect)

        async def answers(sender: Sender) -> dict[str, list[Mapping[str, Any]]]:
            out = [
                {"body": r.body, "formatted_body": r.formatted_body, "reply_to": r.reply_to}
                for r in peer.received
                if r.room_id == sender.room_id and r.sender == account.user_id
            ]
            by_command: dict[str, list[Mapping[str, Any]]] = {e: [] for e in sender.expected}
            for content in out:
                target = content["reply_to"]
                if target in by_command:
                    by_command[target].append(content)
            return by_command

        async def all_answered() -> bool:
            host.check_alive()
            for s in senders:
                if not all((await answers(s)).values()):
                    return False
            return True

        try:
            await eventually(all_answered, within=60, interval=0.2)
        except AssertionError:
            missing = {
                s.room_id: [s.expected[e] for e, got in (await answers(s)).items() if not got]
                for s in senders
            }
            raise AssertionError(f"unanswered kinds of commands per room: {missing}") from None
        results = {s.room_id: await answers(s) for s in senders}
        host.check_alive()
        syncs = host.runtime("echo").syncs

        async def still_syncing() -> bool:
            return host.runtime("echo").syncs > syncs

        await eventually(still_syncing, within=10)

    assert min(rates) >= FLOOD_PER_S / 2, f"the flood reached only {rates} messages/s"
    # Inside E2EE the whole corpus reaches the bot (only the reaction's relation is in the
    # clear, and Synapse checks it); in the clear Synapse refuses about half of it itself.
    assert len(senders[1].refused) <= 1, senders[1].refused
    assert peer.undecryptable == []
    for sender in senders:
        answered = results[sender.room_id]
        assert {e: len(a) for e, a in answered.items()} == dict.fromkeys(sender.expected, 1)
        for event_id, kind in sender.expected.items():
            reply = answered[event_id][0]
            body, html = str(reply.get("body")), str(reply.get("formatted_body") or "")
            assert unsafe(html) == [], (kind, html[:300])
            assert "@room" not in body
            if kind == "pong":
                assert body == "Pong 🏓"
            elif kind == "refused":
                assert "50" in body  # the fake power levels granted nothing
            elif kind == "usage":
                assert "too long" in body, reply
            else:
                assert body.startswith("Echo: ")
    answered = results[secret_room]
    escaped = [a[0]["formatted_body"] for a in answered.values() if "alert" in a[0]["body"]]
    assert escaped
    assert all("&lt;script&gt;" in h for h in escaped)
    assert [
        r for r in peer.received if r.room_id == clear_room and r.sender == account.user_id
    ] == []
