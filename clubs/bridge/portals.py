"""The relay's rooms: which rooms are bridged (the bot invited into a designated club room;
anywhere else it leaves), encrypted rooms with their admins' consent and the pinned notice,
moderation followed into Telegram (bans, mutes) and the `!tg` commands of a bridged room.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypeGuard

from clubs.bridge import roomcommands
from clubs.bridge.config import Portal
from clubs.bridge.consent import power_of, valid_consent
from clubs.bridge.crypto import DeviceNotReady
from clubs.bridge.formatting import (
    escape,
)
from clubs.bridge.registration import ghost_id, ghost_user
from clubs.bridge.relaystate import (
    RelayState,
    describe_error,
    transient,
)
from clubs.bridge.store import PortalRow
from clubs.bridge.telegram import (
    TelegramError,
)
from clubs.core.ids import EventId, RoomId
from clubs.core.namespace import LOCATOR
from clubs.core.txn import txn_id

log = logging.getLogger("clubs.bridge.relay")

REFUSED_ENCRYPTED = (
    "Этот чат зашифрован, поэтому он не связан с Telegram: пересылка вывела бы сообщения "
    "из сквозного шифрования. Администратор комнаты может дать согласие (clubs bridge consent). "
    "/ This room is end-to-end encrypted, so it is not bridged to Telegram: relaying would take "
    "its messages out of end-to-end encryption. A room admin can consent (clubs bridge consent)."
)
BRIDGED_NOTICE = (
    "⚠️ Эта комната связана с Telegram. Новые сообщения отсюда пересылаются в Telegram-чат и "
    "выходят из сквозного шифрования Matrix: их могут читать Telegram и все участники того чата "
    "(и их телефоны). Старые сообщения не пересылаются. / ⚠️ This room is bridged to Telegram. "
    "New messages here are relayed to a Telegram chat and leave Matrix's end-to-end "
    "encryption: Telegram and every member of that chat (and their phones) can read them. "
    "Earlier messages are not relayed."
)
NEVER_BRIDGED_KINDS = frozenset({"cohort_room", "cohort_space", "club_space", "country_space"})


class PortalKeeper(RelayState):
    async def _on_membership(self, room: RoomId, event: Mapping[str, Any]) -> None:
        self._names.pop((room, str(event.get("state_key"))), None)
        telegram_id = ghost_id(str(event.get("state_key")), self.server_name)
        if telegram_id is not None:
            await self._on_ghost_membership(room, telegram_id, event)
            return
        if event.get("state_key") != self.bot:
            return
        membership = event["content"].get("membership")
        if membership in ("leave", "ban"):
            portal = self._rooms.get(room)
            if portal is not None and portal.state == "active":
                await self._set(replace(portal, state="refused"))
                log.info("left or removed from %s: no longer bridged", room)
            return
        if membership != "invite":
            return
        await self.matrix.join(room, self.bot)
        state = await self.matrix.state(room, self.bot)
        by_type = {
            (e.get("type"), e.get("state_key")): e.get("content")
            for e in state
            if isinstance(e, dict) and isinstance(e.get("content"), dict)
        }
        locator = by_type.get((LOCATOR, "")) or {}
        spec = self._designated(locator)
        if spec is None:
            log.info("invited to %s, which the network file does not bridge: leaving", room)
            await self.matrix.leave(room, self.bot)
            return
        row = PortalRow(room, spec.chat, spec.mode, spec.club, spec.room, "active")
        if by_type.get(("m.room.encryption", "")):
            consent = valid_consent(state, spec.chat)
            if consent is None:
                await self._refuse(row, "the room is encrypted and its admins did not consent")
                return
            if self.device is None:
                await self._refuse(row, "the room is encrypted and the bridge has no E2EE device")
                return
            await self._set(replace(row, consent_since=consent.since_ms))
            log.info("bridging encrypted %s (%s) with its admins' consent", room, spec.mode)
            await self.post_notices()
            return
        await self._set(row)
        log.info("bridging %s (%s) to a Telegram chat", room, spec.mode)

    async def _on_ghost_membership(
        self, room: RoomId, telegram_id: int, event: Mapping[str, Any]
    ) -> None:
        """A ban of a ghost (a moderator's, or the moderation bot's network-wide one) bans the
        Telegram user in the chat too; lifting it lifts that ban. The bot must be an admin of
        the chat; if it is not, Telegram refuses and the refusal is logged."""
        membership = event["content"].get("membership")
        if membership != "join":  # left, kicked or banned: joined again before it speaks
            self._joined.discard((room, ghost_user(telegram_id, self.server_name)))
        portal = self._rooms.get(room)
        if portal is None or portal.state != "active":
            return
        unsigned = event.get("unsigned")
        prev = unsigned.get("prev_content") if isinstance(unsigned, dict) else None
        was_banned = isinstance(prev, dict) and prev.get("membership") == "ban"
        try:
            if membership == "ban":
                await self.telegram.ban_chat_member(portal.chat_id, telegram_id)
                log.info("a ghost was banned in %s: banned in its Telegram chat too", room)
            elif was_banned and membership == "leave":
                await self.telegram.unban_chat_member(portal.chat_id, telegram_id)
                log.info("a ghost's ban was lifted in %s: lifted in Telegram too", room)
        except TelegramError as e:
            if transient(e):
                raise
            log.warning("Telegram refused to follow a ban in %s: %s", room, describe_error(e))

    async def _follow_mutes(self, portal: PortalRow, event: Mapping[str, Any]) -> None:
        """A ghost muted in the room (a moderator's or the moderation bot's mute: its level set
        below what a message needs) is restricted in the Telegram chat too, so its user sees
        that they cannot write rather than writing into nothing; a lifted mute lifts it. Needs
        the Telegram bot to be an admin with the right to restrict (a refusal is logged)."""
        if portal.mode != "relay":
            return
        unsigned = event.get("unsigned")
        prev = unsigned.get("prev_content") if isinstance(unsigned, dict) else None
        now = muted_ghosts(event.get("content"), self.server_name)
        before = muted_ghosts(prev, self.server_name)
        for telegram_id, can_send in [(t, False) for t in sorted(now - before)] + [
            (t, True) for t in sorted(before - now)
        ]:
            try:
                await self.telegram.restrict_chat_member(
                    portal.chat_id, telegram_id, can_send=can_send
                )
                log.info(
                    "a ghost was %s in %s: in its Telegram chat too",
                    "unmuted" if can_send else "muted",
                    portal.room_id,
                )
            except TelegramError as e:
                if transient(e):
                    raise
                log.warning(
                    "Telegram refused to follow a mute in %s: %s", portal.room_id, describe_error(e)
                )

    async def _recheck_consent(self, portal: PortalRow) -> None:
        """The consent or the power levels changed: stop if the consent no longer holds."""
        spec = next(
            (p for p in self.portals if p.club == portal.club and p.room == portal.room_key), None
        )
        state = await self.matrix.state(portal.room_id, self.bot)
        chats = {portal.chat_id} | ({spec.chat} if spec is not None else set())
        if not any(valid_consent(state, chat) for chat in chats):
            await self._refuse(portal, "the admins' consent was withdrawn or no longer holds")

    async def post_notices(self) -> None:
        """Post and pin the notice in every consented encrypted portal that lacks it (once: the
        bot never edits or posts it again). A room the device has not synced yet waits."""
        if self.device is None:
            return
        for portal in list(self._rooms.values()):
            if portal.state != "active" or not portal.encrypted:
                continue
            try:
                await self._notice(portal)
            except DeviceNotReady:
                continue
            except Exception as e:
                log.warning("notice in %s not posted yet: %s", portal.room_id, describe_error(e))

    async def _notice(self, portal: PortalRow) -> None:
        if self.device is None:
            return
        room = portal.room_id
        notice = await self.store.get_setting(f"notice:{room}")
        if not notice:
            since = str(portal.consent_since or 0)  # a new consent, a new notice
            notice = await self.device.send(
                room,
                "m.room.message",
                {"msgtype": "m.notice", "body": BRIDGED_NOTICE, "m.mentions": {}},
                txn_id("bridge", "notice", room, since),
            )
            await self.store.set_setting(f"notice:{room}", notice)
        if not await self.store.get_setting(f"pinned:{room}"):
            await self.matrix.pin(room, EventId(notice), self.bot)
            await self.store.set_setting(f"pinned:{room}", "1")
            log.info("posted and pinned the bridging notice in %s", room)

    async def _withdraw_notice(self, room: RoomId) -> None:
        """The room is no longer relayed: its bridging notice is unpinned (it would tell members
        something no longer true), and a later consent posts and pins a new one."""
        notice = await self.store.get_setting(f"notice:{room}")
        if not notice:
            return
        try:
            await self.matrix.unpin(room, EventId(notice), self.bot)
        except Exception as e:
            log.warning("could not unpin the bridging notice in %s: %s", room, describe_error(e))
        await self.store.set_setting(f"notice:{room}", "")
        await self.store.set_setting(f"pinned:{room}", "")

    def _designated(self, locator: Mapping[str, Any]) -> Portal | None:
        if locator.get("network") != self.network or locator.get("kind") != "club_room":
            return None
        if locator.get("kind") in NEVER_BRIDGED_KINDS or locator.get("audience") == "staff":
            return None
        for p in self.portals:
            if p.club == locator.get("club") and p.room == locator.get("key"):
                return p
        return None

    async def _refuse(self, portal: PortalRow, why: str) -> None:
        log.warning("refusing to bridge %s: %s", portal.room_id, why)
        self.health.count("refused_rooms")
        await self._set(replace(portal, state="refused"))
        try:
            await self.matrix.send(
                portal.room_id,
                "m.room.message",
                {"msgtype": "m.notice", "body": REFUSED_ENCRYPTED, "m.mentions": {}},
                txn_id("bridge", "refused", portal.room_id),
                user=self.bot,
            )
        except Exception as e:
            log.warning(
                "could not post the refusal notice in %s: %s", portal.room_id, describe_error(e)
            )
        await self._withdraw_notice(portal.room_id)
        try:  # staying would bring the room's (encrypted) traffic to the bridge for nothing
            await self.matrix.leave(portal.room_id, self.bot)
        except Exception as e:
            log.warning("could not leave %s: %s", portal.room_id, describe_error(e))

    async def _on_command(
        self, portal: PortalRow, event: Mapping[str, Any], verb: roomcommands.Verb
    ) -> None:
        """`!tg …` (clubs.bridge.roomcommands): answered in the room, under a transaction id
        of the command, so a retried command is answered once."""
        room = portal.room_id
        allowed = False
        if verb in ("pause", "resume"):
            state = await self.matrix.state(room, self.bot)
            allowed = power_of(state, str(event.get("sender"))) >= roomcommands.PAUSE_POWER
        was_paused = room in self._paused
        outcome = roomcommands.decide(
            verb,
            allowed=allowed,
            paused=was_paused,
            mode=portal.mode,
            telegram_ok=self.health.telegram_ok,
            encrypted=portal.encrypted,
        )
        if allowed:  # written again on a retried command: the same value
            await self.store.set_setting(f"paused:{room}", "1" if outcome.paused else "0")
        if outcome.paused:
            self._paused.add(room)
        else:
            self._paused.discard(room)
        if outcome.tell_telegram is not None:
            log.info(
                "relay %s in %s by a moderator", "paused" if outcome.paused else "resumed", room
            )
            await self._tell_telegram(portal, outcome.tell_telegram)
        answer = outcome.answer
        event_id = str(event.get("event_id"))
        content: dict[str, Any] = {
            "msgtype": "m.notice",
            "body": answer,
            "m.mentions": {},
            "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
        }
        txn = txn_id("bridge", "command", event_id)
        if portal.encrypted and self.device is not None:
            await self.device.send(room, "m.room.message", content, txn)
        else:
            await self.matrix.send(room, "m.room.message", content, txn, user=self.bot)

    async def _tell_telegram(self, portal: PortalRow, text: str) -> None:
        """A word to the Telegram chat from the bridge itself (best effort: the room's own
        answer matters more than this one)."""
        try:
            await self.telegram.send_message(portal.chat_id, escape(text))
        except Exception as e:
            log.warning(
                "could not tell the Telegram chat of %s: %s", portal.room_id, describe_error(e)
            )


def muted_ghosts(power_levels: object, server_name: str) -> set[int]:
    """The Telegram ids of ghosts whose level in these power levels is below what a message
    needs (`m.room.message`, else `events_default`)."""
    if not isinstance(power_levels, Mapping):
        return set()
    events = power_levels.get("events")
    needed = events.get("m.room.message") if isinstance(events, Mapping) else None
    if not _is_int(needed):
        needed = power_levels.get("events_default", 0)
    users = power_levels.get("users")
    if not _is_int(needed) or not isinstance(users, Mapping):
        return set()
    muted = set()
    for user, level in users.items():
        telegram_id = ghost_id(str(user), server_name)
        if telegram_id is not None and _is_int(level) and level < needed:
            muted.add(telegram_id)
    return muted


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
