"""The relay: Matrix events to Telegram, Telegram updates to Matrix, for bridged rooms only.
`Relay` is composed of `relaystate.RelayState` (what it holds and both directions share),
`portals.PortalKeeper` (which rooms, consent, notices, moderation, `!tg`), `to_telegram.ToTelegram`
and `to_matrix.ToMatrix`; this module keeps the inbox worker and the dispatch of each event.

Which rooms: the bridge's bot (`@tg_bridge`) is invited into a room by its admins. It joins,
reads the room's locator and looks it up among the network file's bridged rooms (`Portal`s).
It stays only in a designated club room; anywhere else it leaves again. An encrypted room is
refused with a notice (and a warning in the log) before it leaves, since relaying would move
its content out of end-to-end encryption, unless its admins recorded consent
(`clubs.bridge.consent`) and the bot's own E2EE device is open (`clubs.bridge.crypto`). Then the
device decrypts the room's new messages (only those the homeserver received after the consent
event), Telegram messages come in encrypted from the bot as "Имя (Telegram): …", and the bot
posts and pins a notice, once, that messages here leave Matrix's encryption. A room that turns
encrypted later without consent, or whose consent is withdrawn (or whose writer loses power
100), stops being relayed at once. Staff, cohort and support rooms are refused here too,
whatever the network file says.

Matrix → Telegram (both modes): messages (text, notices, emotes) as "**Name**: text", where the
name is the sender's display name in the room, never their Matrix id; edits edit the Telegram
message(s); redactions delete them (Telegram allows deleting for 48 hours). A reply stays a reply
when the message it answers crossed the bridge (either way); otherwise it is sent plain, without
the quote. Each part sent is
recorded at once, so a retried event never sends a part twice.

Telegram → Matrix (relay mode): messages and captions are sent by the sender's ghost
(`@tg_<id>`), created through the application service with their Telegram name
("Имя (Telegram)"), with the Telegram message's time; edits become Matrix edits. The Bot API
reports no deletions, so those are not followed. A group that becomes a supergroup moves its
portal to the new chat id, from the service message or from a refused send. Added to a chat that
no room bridges, the bot leaves it.

Images cross both ways re-encoded without metadata (`clubs.bridge.media`); other files are
refused: their caption crosses with a word that a file was not relayed, and a Telegram sticker
crosses as its emoji. A Matrix message waits `hold_s` before it leaves and is
dropped if it was redacted meanwhile (the moderation bot's protections); a ban of a ghost bans
the Telegram user in the chat, and a mute restricts them there until it is lifted.

`!tg` commands in a bridged room (`clubs.bridge.roomcommands`) let its moderators pause and
resume the relay; they are answered by the bot and never relayed.

Nothing here logs content, names or tokens: ids, types and counts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

from clubs.bridge import roomcommands
from clubs.bridge.bridgemetrics import RELAY_LAG
from clubs.bridge.crypto import DeviceNotReady, KeyPending
from clubs.bridge.portals import BRIDGED_NOTICE, PortalKeeper, muted_ghosts
from clubs.bridge.registration import in_namespace
from clubs.bridge.relaystate import (
    BACKOFF_MAX_S,
    MAX_ATTEMPTS,
    POLL_BACKOFF_MAX_S,
    Throttled,
    describe_error,
    transient,
)
from clubs.bridge.telegram import (
    TelegramError,
    TelegramRateLimited,
)
from clubs.bridge.to_matrix import ToMatrix
from clubs.bridge.to_telegram import ToTelegram
from clubs.core.ids import RoomId
from clubs.core.namespace import BRIDGE_CONSENT

__all__ = ["BRIDGED_NOTICE", "Relay", "muted_ghosts"]

log = logging.getLogger(__name__)

KEY_WAIT_FIRST_S = 0.5
"""An encrypted event whose room key is still on its way is tried again after 0.5, 1, 2… s,
and at once when the device's sync brings to-device messages (`Relay.keys_arrived`)."""
KEY_REQUEST_AFTER = 1
"""Misses of a room key before it is asked for (`m.room_key_request`): the first miss is
usually a key still on its way."""
PRUNE_EVERY_S = 3600.0


class Relay(PortalKeeper, ToTelegram, ToMatrix):
    """The relay: the inbox worker (Matrix → Telegram, in each room's order, exactly once) and
    the dispatch of each event to its part; the poller is `ToMatrix.run_poller`."""

    async def run_inbox(self) -> None:
        pruned = 0.0
        backoff = 1.0
        while True:
            self._wake.clear()
            try:
                await self.drain()
                if time.time() - pruned > PRUNE_EVERY_S:
                    await self.store.prune(time.time())
                    pruned = time.time()
                next_at = await self.store.next_due_at()
                backoff = 1.0
            except Exception as e:  # the store itself failing (a full disk): wait, try again
                log.warning("the inbox failed (%s); again in %.0f s", describe_error(e), backoff)
                await asyncio.sleep(backoff)
                backoff = min(POLL_BACKOFF_MAX_S, backoff * 2)
                continue
            timeout = None if next_at is None else max(0.05, next_at - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def drain(self) -> None:
        """Handle every inbox event that is due, in order; an event put off holds back the later
        events of its room, so a room's messages reach Telegram in the order they were sent."""
        while True:
            items = await self.store.due(time.time())
            if not items:
                return
            progressed = False
            held: set[str] = set()
            for item in items:
                event_id = str(item.event.get("event_id"))
                room = str(item.event.get("room_id"))
                if room in held:
                    continue
                relayed = self.health.relayed_to_telegram
                try:
                    forget = await self.handle_event(item.event)
                    ts = item.event.get("origin_server_ts")
                    if self.health.relayed_to_telegram > relayed and isinstance(ts, int):
                        RELAY_LAG.observe(
                            max(0.0, time.time() - ts / 1000), direction="to_telegram"
                        )
                except Throttled as e:  # not a failure: no attempt is counted
                    due = time.time() + e.wait_s + random.uniform(0, 0.2)  # noqa: S311
                    await self.store.postpone(item.seq, room, due, count=False)
                    held.add(room)
                    continue
                except Exception as e:
                    if transient(e) and item.attempts + 1 < MAX_ATTEMPTS:
                        delay = min(BACKOFF_MAX_S, 2.0 ** (item.attempts + 1))
                        if isinstance(e, KeyPending | DeviceNotReady):
                            delay = min(BACKOFF_MAX_S, KEY_WAIT_FIRST_S * 2.0**item.attempts)
                        if isinstance(e, KeyPending):
                            await self._wait_for_key(item.event, item.attempts)
                        if isinstance(e, TelegramRateLimited):
                            delay = max(delay, float(e.retry_after))
                        delay += random.uniform(0, 0.5)  # noqa: S311 - jitter
                        log.info("event %s postponed %.1f s: %s", event_id, delay, type(e).__name__)
                        self.health.telegram(not isinstance(e, TelegramError))
                        await self.store.postpone(item.seq, room, time.time() + delay)
                        held.add(room)
                        continue
                    log.warning("event %s dropped: %s", event_id, describe_error(e))
                    self.health.count("dropped")
                    forget = []
                await self.store.done(item.seq, forget=forget)
                progressed = True
            if not progressed:
                return

    async def _wait_for_key(self, event: Mapping[str, Any], attempts: int) -> None:
        """An encrypted event whose key has not come: its room is retried as soon as keys
        arrive (`keys_arrived`), and from the second miss on, the key is asked for."""
        self._key_waiting.add(str(event.get("room_id")))
        if attempts >= KEY_REQUEST_AFTER and self.device is not None:
            await self.device.request_key(event)

    async def keys_arrived(self) -> None:
        """The device's sync brought to-device messages: rooms with an event waiting for its
        key try it now rather than at the end of its back-off."""
        if self._key_waiting:
            rooms, self._key_waiting = self._key_waiting, set()
            await self.store.due_now(rooms, time.time())
        self.wake()

    async def handle_event(self, event: Mapping[str, Any]) -> list[str]:
        """Act on one Matrix event; returns the event ids whose map rows are gone."""
        room = RoomId(str(event["room_id"]))
        kind = event["type"]
        if kind == "m.room.member":
            await self._on_membership(room, event)
            return []
        portal = self._rooms.get(room)
        if portal is None or portal.state != "active":
            return []
        if kind == "m.room.encryption":
            if not portal.encrypted:
                await self._refuse(portal, "the room became encrypted")
            return []
        if kind in (BRIDGE_CONSENT, "m.room.power_levels"):
            if portal.encrypted:
                await self._recheck_consent(portal)
            elif kind == "m.room.power_levels":
                await self._follow_mutes(portal, event)
            return []
        sender = str(event.get("sender", ""))
        if in_namespace(sender, self.server_name):
            return []  # our own bot and ghosts: never relayed back
        if kind == "m.room.redaction":
            return await self._on_redaction(portal, event)
        if kind not in ("m.room.message", "m.room.encrypted"):
            return []
        if portal.encrypted:
            ts = event.get("origin_server_ts")
            since = portal.consent_since or 0
            if not isinstance(ts, int) or isinstance(ts, bool) or ts < since:
                log.info("event %s predates the consent: not relayed", event.get("event_id"))
                return []
        if self.hold_s > 0 and await self._held_or_redacted(event):
            return []
        if kind == "m.room.encrypted":
            if not portal.encrypted or self.device is None:
                return []
            event = await self.device.decrypt(event)
            if event.get("type") != "m.room.message":
                return []
        verb = roomcommands.parse(event.get("content") or {})
        if verb is not None:
            await self._on_command(portal, event, verb)  # never relayed
            return []
        if portal.room_id in self._paused:
            self.health.count("not_relayed_paused")
            return []  # said while paused: stays in Matrix
        await self._on_message(portal, event)
        return []
