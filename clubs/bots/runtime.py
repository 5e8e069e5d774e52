"""The bot runtime: one crash-safe sync loop per bot account, one command parser for all bots.

Per account, forever until cancelled:

1. `/sync` from *our* stored position (nio's own token saving is off), long-polling.
2. Accept invites only into managed rooms (invited by the provisioner; the locator is checked
   after joining) and DMs from people who share a managed room with the bot; decline the rest.
3. Hand every new timeline event to the bot — commands through the one parser (rate limit,
   power level from the room, typed arguments, usage replies), other events to `@on_event`
   handlers — skipping events already recorded as processed, then record each one.
4. Only when the whole batch is recorded, persist the batch's `next_batch`.

A crash anywhere replays at most the unrecorded part of one batch; replies carry transaction ids
derived from the event they answer, so Synapse deduplicates a reply that was sent just before
the crash. Errors back off exponentially with jitter (never a tight loop); a hostile event is
logged by id and skipped, never allowed to stop the loop, while a failure that is the
homeserver's (unreachable, 5xx, rate limited: `is_transient`) retries the whole batch from the
same position instead of losing the event. An event that could not be decrypted is not recorded:
it is handled when its key arrives. The backlog of the very first sync is never replayed as
commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from clubs.bots.base import Bot, EventHandlerSpec, collect_event_handlers
from clubs.bots.commands import (
    CommandSpec,
    UsageError,
    collect_commands,
    command,
    find_command,
    help_entries,
    read_invocation,
)
from clubs.bots.context import BotContext, CommandContext, EventContext
from clubs.bots.ratelimit import RateLimiter
from clubs.bots.rooms import RoomDirectory, RoomInfo
from clubs.bots.store import RuntimeStore
from clubs.core.crash import crashpoint
from clubs.core.e2ee import E2eeClient, Invite, RoomEvent, SyncBatch
from clubs.core.errors import ClubsError, Forbidden, MatrixError, RateLimited, Unreachable
from clubs.core.events import parse_message
from clubs.core.http import MatrixHttp, RoomId, UserId
from clubs.core.i18n import Catalog

log = logging.getLogger(__name__)

BUILTIN_KEYS = (
    "bots/ping",
    "bots/help",
    "bots/usage",
    "bots/refused",
    "bots/ratelimited",
    "bots/undecryptable",
    "bots/description",
    "bots/untrusted_device",
)
MAX_HANDLING_ATTEMPTS = 8
"""A batch whose handling keeps failing for the homeserver's reasons is retried this many
times; then the failing event is given up (logged), so that no event can wedge the loop."""
STATE_TYPES_THAT_MATTER = frozenset(
    {
        "m.room.power_levels",
        "m.room.create",
        "m.room.server_acl",
        "org.commclubs.locator",
        "org.commclubs.club",
    }
)


@dataclass(frozen=True)
class RuntimeSettings:
    network: str | None = None
    """Only rooms whose locator names this network are managed (None: any locator)."""
    provisioner: str | None = None
    """Invitations from this account into rooms are accepted (it creates managed rooms)."""
    answers_builtins: bool = True
    """Whether this bot answers `!ping`/`!help` in group rooms (one bot per room should)."""
    sync_timeout_ms: int = 30_000
    commands_per_window: int = 5
    command_window_s: float = 10.0
    utd_notice_every_s: float = 3600.0
    backoff_first_s: float = 1.0
    backoff_max_s: float = 10.0
    pending_send_ttl_s: float = 120.0


def is_transient(error: BaseException) -> bool:
    """Whether handling failed for the homeserver's reasons (away, overloaded, rate limiting)
    rather than the event's: then the event is tried again instead of skipped."""
    if isinstance(error, MatrixError):
        return isinstance(error, RateLimited) or error.status >= 500
    return isinstance(
        error, (Unreachable, TimeoutError, ConnectionError, aiohttp.ClientConnectionError)
    )


class _RetryBatch(Exception):
    """Handling a batch failed transiently: process it again from the same position."""


class BotRuntime:
    """Runs one bot on one account. `await run()` until cancelled."""

    def __init__(
        self,
        bot: Bot,
        client: E2eeClient,
        http: MatrixHttp,
        store: RuntimeStore,
        catalog: Catalog,
        settings: RuntimeSettings = RuntimeSettings(),
        *,
        clock: Callable[[], float] = time.time,
        all_commands: Callable[[], Sequence[CommandSpec]] | None = None,
        descriptions: Mapping[RoomKey, str] | None = None,
    ) -> None:
        self.bot = bot
        self.client = client
        self.settings = settings
        self.clock = clock
        self.commands = collect_commands(bot)
        self.handlers: list[EventHandlerSpec] = collect_event_handlers(bot)
        self._all_commands = all_commands or (lambda: self.commands)
        self._builtins = collect_commands(_Builtins(self))
        self._limiter: RateLimiter[tuple[str, str]] = RateLimiter(
            capacity=settings.commands_per_window,
            per_seconds=settings.command_window_s,
            clock=time.monotonic,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.rooms = RoomDirectory(client.room_state, settings.network)
        self.ctx = BotContext(
            name=bot.name,
            client=client,
            http=http,
            rooms=self.rooms,
            store=store,
            catalog=catalog,
            clock=clock,
            _spawn=self._spawn,
        )
        self.store = store
        self.descriptions = dict(descriptions or {})
        """Private room descriptions to post (encrypted) and pin, by the room's locator key."""
        self._described: set[RoomId] = set()
        self._attempts: Counter[str] = Counter()
        """Transient handling failures per event (or invite...) of the batch being retried."""
        self.ready = asyncio.Event()
        """Set after the first successful sync (tests and `clubs up` wait on it)."""
        self.syncs = 0

    # --- lifecycle -------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"{self.bot.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        try:
            since = await self.store.next_batch()
            if since is None:
                since = await self._first_sync()
            await self.bot.start(self.ctx)
            await self._loop(since)
        finally:
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.bot.stop()

    async def _first_sync(self) -> str:
        """The account's very first sync: take the position, never replay the backlog."""
        retries = 0
        while True:
            batch = await self._sync_with_backoff(None, timeout_ms=0)
            try:
                for invite in batch.invites:
                    await self._guarded(self._on_invite(invite), "invite", invite.room_id)
            except _RetryBatch:
                await asyncio.sleep(self._backoff(retries))
                retries += 1
                continue
            break
        self._attempts.clear()
        await self.store.set_next_batch(batch.next_batch)
        log.info("%s: first sync done; %d backlog events skipped", self.bot.name, len(batch.events))
        return batch.next_batch

    async def _loop(self, since: str) -> None:
        retries = 0
        while True:
            batch = await self._sync_with_backoff(since, timeout_ms=self.settings.sync_timeout_ms)
            crashpoint("after_sync")
            try:
                await self.process(batch)
            except _RetryBatch:
                # The position stays: the next sync brings the same events again; those already
                # recorded are skipped, the failed one is handled anew (same txn ids).
                delay = self._backoff(retries)
                retries += 1
                log.debug("%s: batch retried in %.1fs", self.bot.name, delay)
                await asyncio.sleep(delay)
                continue
            retries = 0
            since = batch.next_batch
            self.syncs += 1
            self.ready.set()

    async def _sync_with_backoff(self, since: str | None, *, timeout_ms: int) -> SyncBatch:
        attempt = 0
        while True:
            try:
                # nio sets no client timeout on a full-state sync: bound it ourselves.
                async with asyncio.timeout(timeout_ms / 1000 + 60):
                    return await self.client.sync(since, timeout_ms=timeout_ms)
            except Forbidden as e:
                if e.errcode in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
                    raise ClubsError(
                        f"{self.client.user_id}: the homeserver no longer accepts this device's "
                        "token (logged out or deleted?); the bot stops rather than run without it"
                    ) from None
                delay = self._backoff(attempt)
            except (Unreachable, MatrixError, TimeoutError, OSError) as e:
                delay = self._backoff(attempt)
                level = logging.WARNING if attempt == 0 else logging.DEBUG
                log.log(
                    level,
                    "%s: sync failed (%s); retrying in %.1fs",
                    self.bot.name,
                    type(e).__name__,
                    delay,
                )
            attempt += 1
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        ceiling = min(s.backoff_max_s, s.backoff_first_s * 2.0 ** min(attempt, 16))
        jitter: float = random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
        return ceiling * jitter

    # --- one batch --------------------------------------------------------------------------------

    async def process(self, batch: SyncBatch) -> None:
        """Handle a batch and then persist its position (the crash-safety boundary)."""
        for invite in batch.invites:
            await self._guarded(self._on_invite(invite), "invite", invite.room_id)
        events = list(batch.events) + self.client.retry_undecrypted()
        await self.rooms.prefetch(event.room_id for event in events)
        for event in events:
            await self._guarded(self._dispatch(event), event.event_id, event.room_id)
        await self._flush_pending()
        if self.descriptions:
            await self._guarded(self._post_descriptions(), "descriptions", "*")
        self._attempts.clear()
        await self.store.set_next_batch(batch.next_batch)
        if self.syncs % 500 == 0:
            await self.store.prune_processed(self.clock())

    async def _guarded(self, work: Coroutine[Any, Any, None], what: str, room: str) -> None:
        """A hostile or broken event never stops the loop; only its id reaches the log. A
        transient failure (the homeserver away mid-reply) is not the event's fault: the batch
        is retried (`_RetryBatch`) rather than the event lost, up to MAX_HANDLING_ATTEMPTS."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as e:
            key = f"{what} {room}"
            if is_transient(e) and self._attempts[key] < MAX_HANDLING_ATTEMPTS - 1:
                self._attempts[key] += 1
                log.warning(
                    "%s: handling %s in %s failed: %s; retrying the batch",
                    self.bot.name,
                    what,
                    room,
                    type(e).__name__,
                )
                raise _RetryBatch from None
            log.warning(
                "%s: handling %s in %s failed: %s", self.bot.name, what, room, type(e).__name__
            )
            log.debug("%s: failure detail", self.bot.name, exc_info=True)

    async def _dispatch(self, event: RoomEvent) -> None:
        if await self.store.is_processed(event.event_id):
            return
        if event.type in STATE_TYPES_THAT_MATTER and event.state_key is not None:
            self.rooms.invalidate(event.room_id)
        # Our own messages are never handled (no loops); our own state changes are facts that
        # handlers may track (e.g. a policy rule this bot wrote).
        if event.sender != self.client.user_id or event.state_key is not None:
            await self._handle(event)
        if event.encrypted and not event.decrypted:
            return  # not done: handled again when its key arrives (`retry_undecrypted`)
        crashpoint("before_commit")
        await self.store.mark_processed(event.event_id)

    async def _handle(self, event: RoomEvent) -> None:
        undecryptable = event.encrypted and not event.decrypted
        if undecryptable:
            await self._undecryptable(event)
        room = await self.rooms.info(event.room_id)
        in_dm = await self._is_dm(event.room_id)
        if not room.managed and not in_dm:
            return  # we act only in managed rooms and our DMs
        # Undecryptable events still reach handlers (metadata: sender, time), as m.room.encrypted;
        # when the key arrives the decrypted event is delivered again under the same event id.
        message = None if undecryptable else parse_message(event.as_json(), event.room_id)
        if event.type == "m.room.message" and not undecryptable:
            invocation = read_invocation(event.content)
            spec = (
                find_command(self._builtin_and_own(in_dm), invocation.name) if invocation else None
            )
            if invocation is not None and spec is not None:
                if not event.encrypted and await self.client.is_encrypted(event.room_id):
                    # No client sends plaintext into an encrypted room: only the server (or a
                    # token thief talking HTTP) could have put it there. Never obey it.
                    log.warning(
                        "%s: ignored a plaintext command in encrypted room %s",
                        self.bot.name,
                        event.room_id,
                    )
                    return
                await self._command(
                    event, room, message, spec, invocation.name, invocation.args, in_dm
                )
                return
        for handler in self.handlers:
            if handler.wants(event.type):
                await handler.handler(EventContext(self.ctx, event, room, message))

    def _builtin_and_own(self, in_dm: bool) -> list[CommandSpec]:
        if self.settings.answers_builtins or in_dm:
            return [*self._builtins, *self.commands]
        return self.commands

    async def _command(
        self,
        event: RoomEvent,
        room: RoomInfo,
        message: Any,
        spec: CommandSpec,
        invoked_as: str,
        args: str,
        in_dm: bool,
    ) -> None:
        power = await self._power(event.sender, room, in_dm)
        ctx = CommandContext(
            self.ctx, event, room, message, power=power, in_dm=in_dm, invoked_as=invoked_as
        )
        verdict = self._limiter.check((event.room_id, event.sender))
        if not verdict.allowed:
            if verdict.first_refusal:
                await ctx.reply("bots/ratelimited", seconds=max(1, round(verdict.retry_after)))
            return
        if not spec.allows(power, in_dm=in_dm):
            await ctx.reply("bots/refused", command=spec.name, required=spec.min_power, power=power)
            return
        if spec.min_power > 0 and event.encrypted and not event.sender_trusted:
            # Privileged commands only from a device its owner cross-signed: a device added by
            # a server admin or with a stolen password cannot moderate.
            await ctx.reply("bots/untrusted_device", command=spec.name)
            return
        try:
            kwargs = spec.parse_args(args, invoked_as)
        except UsageError as e:
            values: dict[str, Any] = e.template_values()
            await ctx.reply("bots/usage", **values)
            return
        await spec.handler(ctx, **kwargs)

    async def _power(self, user: UserId, room: RoomInfo, in_dm: bool) -> int:
        """In a group room: the room's power levels. In a DM (where the DM's own levels mean
        nothing): the highest level the user holds in any managed room the bot knows."""
        if not in_dm:
            return room.power(user)
        best = 0
        for room_id in self.client.joined_rooms():
            info = await self.rooms.info(room_id)
            if info.managed:
                best = max(best, min(info.power(user), 100))
        return best

    async def _is_dm(self, room_id: RoomId) -> bool:
        return room_id in await self.store.dm_rooms()

    async def _undecryptable(self, event: RoomEvent) -> None:
        await self.client.request_keys(event.event_id)
        if await self.store.claim_utd_notice(
            event.room_id, event.sender, self.clock(), self.settings.utd_notice_every_s
        ):
            room = await self.rooms.info(event.room_id)
            ctx = EventContext(self.ctx, event, room, None)
            await ctx.reply("bots/undecryptable", mention=(event.sender,), part="utd")

    async def _on_invite(self, invite: Invite) -> None:
        """Join managed rooms the provisioner invites us to, and DMs from club members."""
        inviter = invite.inviter
        if inviter is not None and inviter == self.settings.provisioner:
            await self.client.join(invite.room_id)
            info = await self.rooms.info(invite.room_id)
            if not info.managed:
                log.warning(
                    "%s: left %s: invited by the provisioner but not managed",
                    self.bot.name,
                    invite.room_id,
                )
                await self.client.leave(invite.room_id)
            return
        if inviter is not None and invite.is_direct and await self._shares_managed_room(inviter):
            await self.client.join(invite.room_id)
            await self.store.set_dm_room(inviter, invite.room_id)
            return
        log.info("%s: declined an invite to %s", self.bot.name, invite.room_id)
        await self.client.leave(invite.room_id)

    async def _shares_managed_room(self, user: UserId) -> bool:
        rooms = self.client.joined_rooms()
        await self.rooms.prefetch(rooms)  # the same request loads each room's members
        for room_id in rooms:
            if (await self.rooms.info(room_id)).managed and user in await self.client.members(
                room_id
            ):
                return True
        return False

    async def _flush_pending(self) -> None:
        still: list[Any] = []
        now = self.clock()
        for item in self.ctx.pending:
            if self.client.knows_room(item.room_id):
                await self._guarded(self._send_pending(item), "pending send", item.room_id)
            elif now - item.queued_at < self.settings.pending_send_ttl_s:
                still.append(item)
            else:
                log.warning(
                    "%s: dropped a send to %s: the room never synced", self.bot.name, item.room_id
                )
        self.ctx.pending[:] = still

    async def _post_descriptions(self) -> None:
        """Post each managed room's private description once (per text) and pin it."""
        for room_id in self.client.joined_rooms():
            if room_id in self._described:
                continue
            self._described.add(room_id)
            info = await self.rooms.info(room_id)
            text = self.descriptions.get(room_key(info.locator)) if info.locator else None
            if not text:
                continue
            digest = hashlib.sha256(text.encode()).hexdigest()[:32]
            if await self.store.description_posted(room_id, digest):
                continue
            event_id = await self.ctx.notice(
                room_id, "bots/description", job=("description", room_id, digest), text=text
            )
            if event_id is not None:
                await self.ctx.pin(room_id, event_id)
                await self.store.mark_description_posted(room_id, digest)
            else:
                self._described.discard(room_id)  # room not synced yet: try after the next sync

    async def _send_pending(self, item: Any) -> None:
        await self.client.send(item.room_id, item.event_type, item.content, txn_id=item.txn_id)


class _Builtins:
    """`!ping` and `!help`, answered by one bot per room (or by any bot in its DMs)."""

    def __init__(self, runtime: BotRuntime) -> None:
        self._rt = runtime

    @command("ping", help_key="bots/ping.help", aliases=("пинг",), dm=True)
    async def ping(self, ctx: CommandContext) -> None:
        await ctx.reply("bots/ping")

    @command("help", help_key="bots/help.help", aliases=("помощь", "справка"), dm=True)
    async def help(self, ctx: CommandContext) -> None:
        specs = [*collect_commands(self), *self._rt._all_commands()]
        await ctx.reply("bots/help", entries=help_entries(specs, ctx.power, in_dm=ctx.in_dm))


RoomKey = tuple[str | None, str | None, str | None, str | None]
"""(kind, club, cohort, key) of a locator: how the composition root names rooms to bots."""


def room_key(locator: Mapping[str, Any]) -> RoomKey:
    def get(name: str) -> str | None:
        value = locator.get(name)
        return value if isinstance(value, str) else None

    return (get("kind"), get("club"), get("cohort"), get("key"))


def required_template_keys(bots: Iterable[Bot]) -> list[str]:
    keys = list(BUILTIN_KEYS)
    for bot in bots:
        keys += [spec.help_key for spec in collect_commands(bot)]
    return keys
