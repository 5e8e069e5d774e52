"""The bot runtime: one crash-safe sync loop per bot account, one command parser for all bots.

Per account, forever until cancelled:

1. `/sync` from *our* stored position (nio's own token saving is off), long-polling.
2. Accept invites only into managed rooms (invited by the provisioner; the locator is checked
   after joining, and a room whose club settings name the bots serving it is left unless this
   bot is one of them) and DMs from people who share a managed room with the bot.
3. Hand every new timeline event to the bot — commands through the one parser (rate limit,
   power level from the room, typed arguments, usage replies), other events to `@on_event`
   handlers, poll changes to `@on_poll` handlers — skipping events already recorded as
   processed, then record each one. Everything a handler sends goes through the outbox.
4. Send what waits in the outbox, then persist the batch's `next_batch` in one transaction
   with the events that still wait for their room key (encrypted, as the server sent them).

A crash anywhere replays at most the unrecorded part of one batch; replies carry transaction ids
derived from the event they answer, so Synapse deduplicates a reply that was sent just before
the crash. An event whose key has not arrived is not lost by moving past it: it is stored, the
sender's devices are asked for the key, the member is told once (in plain words if their client
withheld the key), and it is handled when the key comes, also after a restart.

Errors back off exponentially with jitter (never a tight loop); a hostile event is logged by id
and skipped, never allowed to stop the loop, while a failure that is the homeserver's
(unreachable, 5xx, rate limited) retries the whole batch from the same position instead of
losing the event. A database that refuses writes (full disk) stops the loop from advancing: one
error line, one alert to the staff that needs no database, and the same batch again once writes
work. The backlog of the very first sync is never replayed as commands.

A privileged command (one that needs power) that is older than `stale_command_s` when the bot
sees it — after an outage, or replayed after a crash — is never executed silently: the sender is
asked to `!confirm` it, told how old it is.

Network backoffs here sleep on the event loop's clock on purpose: they are about the
homeserver, not about due times. Everything that is due at an instant uses the injected `Clock`.
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

from clubs.bots.base import Bot, EventHandlerSpec, collect_event_handlers
from clubs.bots.botmetrics import (
    COMMAND_SECONDS,
    COMMANDS,
    EVENT_LAG,
    HANDLER_ERRORS,
    LAST_SYNC,
    READY,
    SYNC_FAILURES,
)
from clubs.bots.builtins import Builtins
from clubs.bots.commands import (
    CommandSpec,
    UsageError,
    collect_commands,
    find_command,
    read_invocation,
)
from clubs.bots.context import BotContext, CommandContext, EventContext, Spawnable
from clubs.bots.descriptions import Descriptions
from clubs.bots.descriptions import RoomKey as RoomKey
from clubs.bots.identity import IdentityChanges
from clubs.bots.jobs import JobRunner, JobStore, collect_job_handlers
from clubs.bots.joined import person_language, shares_managed_room
from clubs.bots.outbox import Outbox
from clubs.bots.polls import collect_poll_handlers
from clubs.bots.ratelimit import RateLimiter
from clubs.bots.rooms import RoomDirectory, RoomInfo
from clubs.bots.store import Confirmation, RuntimeStore
from clubs.bots.storefault import StoreFaults
from clubs.bots.supervise import supervise
from clubs.core.clock import Clock, SystemClock
from clubs.core.crash import crashpoint
from clubs.core.db import StoreUnavailable
from clubs.core.e2ee import E2eeClient, Invite, RoomEvent, SyncBatch
from clubs.core.errors import ClubsError, Forbidden, MatrixError, Unreachable
from clubs.core.errors import is_transient as is_transient
from clubs.core.events import parse_message
from clubs.core.http import MatrixHttp, RoomId, UserId
from clubs.core.i18n import Catalog
from clubs.core.sealed import Sealer

log = logging.getLogger(__name__)

BUILTIN_KEYS = (
    "bots/ping",
    "bots/help",
    "bots/usage",
    "bots/refused",
    "bots/ratelimited",
    "bots/undecryptable",
    "bots/withheld",
    "bots/description",
    "bots/untrusted_device",
    "bots/stale",
    "bots/confirm_none",
    "bots/identity_staff",
    "bots/identity_member",
    "bots/trusted",
    "bots/trust_none",
    "bots/trust.help",
    "bots/confirm.help",
    "bots/store_fault",
    "bots/store_recovered",
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
HOUSEKEEPING_EVERY = 500
"""Syncs between prunes of old records (processed ids, sent outbox rows, finished jobs)."""
WARM_UP_WAIT_S = 30.0
"""The warm-up waits this long at most for the other bots of the process to be ready."""


@dataclass(frozen=True)
class RuntimeSettings:
    network: str | None = None
    """Only rooms whose locator names this network are managed (None: any locator)."""
    provisioner: str | None = None
    """Invitations from this account into rooms are accepted (it creates managed rooms)."""
    other_provisioners: frozenset[str] = frozenset()
    """The provisioners of the network's other servers (docs/federation.md): the bots live on
    the first server and are invited into the managed rooms of every server."""
    answers_builtins: bool = True
    """Whether this bot answers `!ping`/`!help` in group rooms whose club settings do not list
    the bots serving them (where they do, the first listed bot of this host answers)."""
    host_bots: tuple[str, ...] = ()
    """User ids of the bots running in this host, in the host's order (`clubs bots run`: by
    bot name); a room's `bots` list, in the network file's order, decides within the room."""
    shard: frozenset[str] | None = None
    """`clubs bots run --shard/--clubs`: the country and club keys whose rooms this process
    serves; rooms of the network outside them are another shard's (None: every room)."""
    other_shards: frozenset[str] = frozenset()
    """The country and club keys of the network's declared shards, for the process of the
    network's own accounts (no `--shard`): their rooms are the shards' processes' to serve."""
    sync_timeout_ms: int = 30_000
    commands_per_window: int = 5
    command_window_s: float = 10.0
    utd_notice_every_s: float = 3600.0
    identity_policy: str = "accept"
    """A member's changed identity (new cross-signing master key): `accept` trusts it at once
    and tells the staff and the member; `hold` withholds room keys until `!trust @user`."""
    description_repost_s: float = 24 * 3600.0
    """A room's private description is posted again for members who joined after its newest
    copy (history is visible from one's join only), at most this often per room."""
    backoff_first_s: float = 1.0
    backoff_max_s: float = 10.0
    store_backoff_max_s: float = 30.0
    stale_command_s: float = 600.0
    """A privileged command older than this when the bot sees it waits for `!confirm`."""
    confirm_within_s: float = 600.0
    """How long a held command can be confirmed."""


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
        outbox: Outbox,
        jobs: JobStore | None = None,
        sealer: Sealer,
        clock: Clock | None = None,
        all_commands: Callable[[], Sequence[CommandSpec]] | None = None,
        descriptions: Mapping[RoomKey, str] | None = None,
    ) -> None:
        self.bot = bot
        self.client = client
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.sealer = sealer
        self.commands = collect_commands(bot)
        self.handlers: list[EventHandlerSpec] = collect_event_handlers(bot)
        self.poll_handlers = collect_poll_handlers(bot)
        self._all_commands = all_commands or (lambda: self.commands)
        self._builtins = collect_commands(Builtins(self))
        self._confirm = [s for s in self._builtins if s.name in ("confirm", "trust")]
        if settings.identity_policy not in ("accept", "hold"):
            raise ClubsError(
                f"identity policy {settings.identity_policy!r}: expected accept or hold"
            )
        client.identity_policy = settings.identity_policy
        self._limiter: RateLimiter[tuple[str, str]] = RateLimiter(
            capacity=settings.commands_per_window,
            per_seconds=settings.command_window_s,
            clock=self.clock.monotonic,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.rooms = RoomDirectory(
            client.room_state, settings.network, settings.shard, settings.other_shards
        )
        self.outbox = outbox
        job_handlers = collect_job_handlers(bot)
        self.jobs = (
            JobRunner(jobs, self.clock, job_handlers, lambda: self.ctx)
            if jobs is not None and job_handlers
            else None
        )
        self.ctx = BotContext(
            name=bot.name,
            client=client,
            http=http,
            rooms=self.rooms,
            store=store,
            catalog=catalog,
            clock=self.clock,
            _spawn=self._spawn,
            outbox=outbox,
            jobs_runner=self.jobs,
            sealer=sealer,
        )
        self.store = store
        service = {*settings.host_bots, settings.provisioner, client.user_id}
        """Accounts whose joins and identities are not a member's: the host's bots, the
        provisioner and this bot."""
        self._descriptions = Descriptions(
            self.ctx,
            descriptions or {},
            service=service,
            repost_s=settings.description_repost_s,
        )
        self._identity = IdentityChanges(self.ctx, policy=settings.identity_policy, service=service)
        self._store_faults = StoreFaults(self.ctx)
        self._attempts: Counter[str] = Counter()
        """Transient handling failures per event (or invite...) of the batch being retried."""
        self.ready = asyncio.Event()
        """Set after the first successful sync (tests and `clubs up` wait on it)."""
        self.warm_up_after: Sequence[asyncio.Event] = ()
        """The `ready` events of the process's other bots (set by the host): the warm-up starts
        once they are all caught up, so that it does not slow their start."""
        self.syncs = 0

    # --- lifecycle -------------------------------------------------------------------------------

    def _spawn(self, work: Spawnable, name: str) -> asyncio.Task[None]:
        """A background task owned by this runtime: cancelled on stop, its failure logged;
        a coroutine function is restarted with backoff when it fails."""
        label = f"{self.bot.name}:{name}"
        if asyncio.iscoroutine(work):
            coro: Coroutine[Any, Any, None] = _logged(label, work)
        else:
            factory = work
            assert callable(factory)
            coro = supervise(label, factory)
        task = asyncio.create_task(coro, name=label)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        try:
            since = await self.store.next_batch()
            if since is None:
                since = await self._first_sync()
            else:
                await self._restore_waiting()
                # Before `start` and the due jobs: which rooms we are in (the first sync of a
                # resumed run comes later; until then the client would know none).
                await self.client.load_joined_rooms()
                self._spawn(self._warm_up(), "warm-up")
            await self.bot.start(self.ctx)
            self._spawn(self.outbox.run_retries, "outbox retries")
            if self.jobs is not None:
                self._spawn(self.jobs.run, "jobs")
            await self._loop(since)
        finally:
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.bot.stop()

    async def _restore_waiting(self) -> None:
        waiting = await self.store.waiting()
        if waiting:
            restored = self.client.restore_waiting(
                (w.event_id, RoomId(w.room_id), w.raw) for w in waiting
            )
            log.info("%s: %d event(s) still wait for their room key", self.bot.name, restored)
            self._spawn(self._request_waiting_keys([w.event_id for w in waiting]), "key requests")

    async def _request_waiting_keys(self, event_ids: Sequence[str]) -> None:
        """Ask again for the keys of events restored from the store, once caught up: a request
        the last run had sent carries the same transaction id (the server takes it once); one
        it never got to send goes out now. Bounded per sender like every key request."""
        await self.ready.wait()
        for event_id in event_ids:
            await self.client.request_keys(event_id)

    async def _warm_up(self) -> None:
        """After a restart: load every joined room's state (members, encryption, power levels)
        in the background, so the first command in a room does not wait for it. It starts once
        the first sync is handled, ours and the other bots' of the process (at most
        `WARM_UP_WAIT_S`): the backlog of commands sent while we were away comes first (their
        rooms are loaded on demand), the warm-up must not compete with it."""
        await self.ready.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WARM_UP_WAIT_S):
                for other in self.warm_up_after:
                    await other.wait()
        rooms = await self.client.load_joined_rooms()
        await self.rooms.prefetch(rooms)
        log.debug("%s: %d room(s) warmed up", self.bot.name, len(rooms))

    async def _first_sync(self) -> str:
        """The account's very first sync: take the position, never replay the backlog."""
        retries = 0
        while True:
            batch = await self._sync_with_backoff(None, timeout_ms=0)
            try:
                for invite in batch.invites:
                    await self._guarded(self._on_invite(invite), "invite", invite.room_id)
                await self.store.set_next_batch(batch.next_batch)
            except (_RetryBatch, StoreUnavailable) as e:
                await self._store_faults.fault(e)
                await asyncio.sleep(self._backoff(retries))
                retries += 1
                continue
            break
        self._attempts.clear()
        log.info("%s: first sync done; %d backlog events skipped", self.bot.name, len(batch.events))
        return batch.next_batch

    async def _loop(self, since: str) -> None:
        retries = 0
        while True:
            # The first sync of a run does not long-poll: `ready` then means "caught up with
            # what happened while we were away", not "something new happened since".
            timeout_ms = self.settings.sync_timeout_ms if self.ready.is_set() else 0
            batch = await self._sync_with_backoff(since, timeout_ms=timeout_ms)
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
            except StoreUnavailable as e:
                # Nothing of the batch is recorded: the same events come again once we can write.
                await self._store_faults.fault(e)
                delay = self._backoff(retries, ceiling=self.settings.store_backoff_max_s)
                retries += 1
                await asyncio.sleep(delay)
                continue
            if self._store_faults.since is not None:
                await self._store_faults.recovered()
            retries = 0
            since = batch.next_batch
            self.syncs += 1
            self.ready.set()
            LAST_SYNC.set(time.time(), bot=self.bot.name)  # wall time: read by monitoring
            READY.set(1, bot=self.bot.name)

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
                SYNC_FAILURES.inc(bot=self.bot.name)
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

    def _backoff(self, attempt: int, *, ceiling: float | None = None) -> float:
        s = self.settings
        top = s.backoff_max_s if ceiling is None else ceiling
        value = min(top, s.backoff_first_s * 2.0 ** min(attempt, 16))
        jitter: float = random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
        return value * jitter

    # --- one batch --------------------------------------------------------------------------------

    async def process(self, batch: SyncBatch) -> None:
        """Handle a batch and then persist its position (the crash-safety boundary)."""
        for invite in batch.invites:
            await self._guarded(self._on_invite(invite), "invite", invite.room_id)
        retried = self.client.retry_undecrypted()
        events = list(batch.events) + retried
        await self.rooms.prefetch(event.room_id for event in events)
        for event in events:
            await self._guarded(self._dispatch(event), event.event_id, event.room_id)
        await self._tell_withheld()
        await self._guarded(self._identity.announce(), "identity", "*")
        await self.outbox.flush()
        if self._descriptions.texts:
            await self._guarded(self._descriptions.post(), "descriptions", "*")
            await self._guarded(self._descriptions.newcomers(batch.events), "newcomers", "*")
            await self._guarded(self._descriptions.repost(), "descriptions", "*")
        self._attempts.clear()
        waiting = []
        for event in batch.events:
            if event.encrypted and not event.decrypted:
                source = self.client.encrypted_source(event.event_id)
                if source is not None:
                    waiting.append((event.event_id, event.room_id, source))
        now = self.clock.now()
        aged = await self.store.commit(
            batch.next_batch,
            now=now,
            waiting=waiting,
            resolved=[e.event_id for e in retried],
        )
        if aged:
            log.warning(
                "%s: %d event(s) waited too long for their room key (or too many wait) and "
                "are given up",
                self.bot.name,
                aged,
            )
        if self.syncs % HOUSEKEEPING_EVERY == 0:
            await self.store.prune_processed(now)
            await self.store.prune_held(now)
            await self.outbox.prune()
            if self.jobs is not None:
                await self.jobs.store.prune(now)

    async def _guarded(self, work: Coroutine[Any, Any, None], what: str, room: str) -> None:
        """A hostile or broken event never stops the loop; only its id reaches the log. A
        transient failure (the homeserver away mid-reply) is not the event's fault: the batch
        is retried (`_RetryBatch`) rather than the event lost, up to MAX_HANDLING_ATTEMPTS. A
        database that refuses writes stops the batch (`StoreUnavailable` passes through)."""
        try:
            await work
        except (asyncio.CancelledError, StoreUnavailable):
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
            HANDLER_ERRORS.inc(bot=self.bot.name)
            log.warning(
                "%s: handling %s in %s failed: %s", self.bot.name, what, room, type(e).__name__
            )
            log.debug("%s: failure detail", self.bot.name, exc_info=True)

    async def _dispatch(self, event: RoomEvent) -> None:
        if await self.store.is_processed(event.event_id):
            return
        if self.ready.is_set() and event.origin_server_ts:
            EVENT_LAG.observe(
                max(0.0, time.time() - event.origin_server_ts / 1000), bot=self.bot.name
            )
        if event.type in STATE_TYPES_THAT_MATTER and event.state_key is not None:
            self.rooms.invalidate(event.room_id)
        # Our own messages are never handled (no loops); our own state changes are facts that
        # handlers may track (e.g. a policy rule this bot wrote).
        if event.sender != self.client.user_id or event.state_key is not None:
            await self._handle(event)
        if event.encrypted and not event.decrypted:
            return  # not done: handled again when its key arrives (`retry_undecrypted`)
        crashpoint("before_commit")
        await self.store.mark_processed(event.event_id, self.clock.now())

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
                find_command(self._commands_here(room, in_dm), invocation.name)
                if invocation
                else None
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
        if (update := await self.ctx.polls.observe(event)) is not None:
            for on_poll in self.poll_handlers:
                await on_poll(self.ctx, update)
        for handler in self.handlers:
            if handler.wants(event.type):
                await handler.handler(EventContext(self.ctx, event, room, message))

    def answers_builtins(self, room: RoomInfo | None) -> bool:
        """Whether this bot answers `!ping`/`!help` in the room: the first bot of this host
        that the room's club settings list as serving it; without such a list, the host's
        primary bot."""
        listed = room.settings.get("bots") if room is not None else None
        if isinstance(listed, list) and self.settings.host_bots:
            ours = [b for b in listed if b in self.settings.host_bots]
            if ours:
                return bool(ours[0] == self.client.user_id)
        return self.settings.answers_builtins

    def _commands_here(self, room: RoomInfo, in_dm: bool) -> list[CommandSpec]:
        if in_dm or self.answers_builtins(room):
            return [*self._builtins, *self.commands]
        # Each bot confirms its own held commands and trusts identities for its own device.
        return [*self._confirm, *self.commands]

    async def _command(
        self,
        event: RoomEvent,
        room: RoomInfo,
        message: Any,
        spec: CommandSpec,
        invocation_name: str,
        args: str,
        in_dm: bool,
        *,
        confirmed: bool = False,
    ) -> None:
        started = time.monotonic()
        outcome = "error"
        try:
            outcome = await self._run_command(
                event, room, message, spec, invocation_name, args, in_dm, confirmed=confirmed
            )
        finally:
            COMMANDS.inc(bot=self.bot.name, command=spec.name, outcome=outcome)
            COMMAND_SECONDS.observe(
                time.monotonic() - started, bot=self.bot.name, command=spec.name
            )

    async def _run_command(
        self,
        event: RoomEvent,
        room: RoomInfo,
        message: Any,
        spec: CommandSpec,
        invoked_as: str,
        args: str,
        in_dm: bool,
        *,
        confirmed: bool,
    ) -> str:
        """The command's checks, then its handler; returns the outcome (for the metrics)."""
        power = await self._power(event.sender, room, in_dm)
        ctx = CommandContext(
            self.ctx,
            event,
            room,
            message,
            power=power,
            in_dm=in_dm,
            invoked_as=invoked_as,
            dm_language=await person_language(self.client, self.rooms, event.sender)
            if in_dm
            else None,
        )
        if not confirmed:
            verdict = self._limiter.check((event.room_id, event.sender))
            if not verdict.allowed:
                if verdict.first_refusal:
                    await ctx.reply("bots/ratelimited", seconds=max(1, round(verdict.retry_after)))
                return "ratelimited"
        if not spec.allows(power, in_dm=in_dm):
            await ctx.reply("bots/refused", command=spec.name, required=spec.min_power, power=power)
            return "refused"
        if spec.min_power > 0 and event.encrypted and not event.sender_trusted:
            # Privileged commands only from a device its owner cross-signed: a device added by
            # a server admin or with a stolen password cannot moderate.
            await ctx.reply("bots/untrusted_device", command=spec.name)
            return "untrusted"
        try:
            kwargs = spec.parse_args(args, invoked_as)
        except UsageError as e:
            values: dict[str, Any] = e.template_values()
            await ctx.reply("bots/usage", **values)
            return "usage"
        age = self.clock.now() - event.origin_server_ts / 1000
        if not confirmed and spec.min_power > 0 and age > self.settings.stale_command_s:
            await self._hold(ctx, spec, invoked_as, args, age)
            return "held"
        await spec.handler(ctx, **kwargs)
        return "ok"

    async def _hold(
        self, ctx: CommandContext, spec: CommandSpec, invoked_as: str, args: str, age: float
    ) -> None:
        """Keep a stale privileged command until its sender confirms it (never run it now)."""
        # The code is derived from the event: a replay of this command holds the same one.
        code = hashlib.sha256(f"{self.bot.name}|{ctx.event.event_id}".encode()).hexdigest()[:6]
        now = self.clock.now()
        await self.store.hold(
            Confirmation(
                code=code,
                room_id=ctx.room_id,
                sender=ctx.sender,
                event_id=ctx.event.event_id,
                command=invoked_as,
                args=self.sealer.seal(args.encode()),
                created_at=now,
                expires_at=now + self.settings.confirm_within_s,
            )
        )
        log.info(
            "%s: held !%s from %.0f min ago for confirmation",
            self.bot.name,
            spec.name,
            age / 60,
        )
        await ctx.reply(
            "bots/stale",
            part="stale",
            command=invoked_as,
            minutes=max(1, round(age / 60)),
            code=code,
            expires_minutes=max(1, round(self.settings.confirm_within_s / 60)),
        )

    async def confirm(self, ctx: CommandContext, code: str | None) -> None:
        """`!confirm [code]`: run a held command of the sender's in this room (the newest, or
        the one with `code`) as if sent now; the power and session checks are made again."""
        now = self.clock.now()
        held = [
            c
            for c in await self.store.held(ctx.room_id, ctx.sender)
            if code is None or c.code == code.lower()
        ]
        fresh = [c for c in held if c.expires_at >= now]
        if not fresh:
            for c in held:
                await self.store.release(c.code)
            if self.answers_builtins(ctx.room) or ctx.in_dm or held:
                await ctx.reply("bots/confirm_none", part="confirm")
            return
        chosen = fresh[0]
        if not await self.store.release(chosen.code):
            return  # confirmed meanwhile (a replay of this very `!confirm`)
        spec = find_command(self.commands, chosen.command)
        if spec is None:
            return
        args = self.sealer.open(chosen.args).decode()
        await self._command(
            ctx.event,
            ctx.room,
            ctx.message,
            spec,
            chosen.command,
            args,
            ctx.in_dm,
            confirmed=True,
        )

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
        if await self.store.is_waiting(event.event_id):
            return  # seen before a restart: the member was told then
        code = self.client.withheld_code(event.event_id)
        if code is not None:
            await self._withheld_notice(event.room_id, event.sender, event.event_id, code)
            return
        if await self.store.claim_utd_notice(
            event.room_id, event.sender, self.clock.now(), self.settings.utd_notice_every_s
        ):
            room = await self.rooms.info(event.room_id)
            ctx = EventContext(self.ctx, event, room, None)
            await ctx.reply("bots/undecryptable", mention=(event.sender,), part="utd")

    async def _tell_withheld(self) -> None:
        """Members whose client withheld the key of an event we wait for are told, in plain
        words, what to do — once per member, room and reason (a day apart at most)."""
        for event_id, room_id, sender, code in self.client.withheld_waiting():
            await self._guarded(
                self._withheld_notice(room_id, sender, event_id, code), event_id, room_id
            )

    async def _withheld_notice(
        self, room_id: RoomId, sender: UserId, event_id: str, code: str
    ) -> None:
        if not await self.store.claim_utd_notice(
            room_id, f"{sender}|withheld|{code}", self.clock.now(), 24 * 3600
        ):
            return
        await self.ctx.notice(
            room_id,
            "bots/withheld",
            job=(self.bot.name, event_id, "withheld"),
            mention=(sender,),
            relates_to={"m.in_reply_to": {"event_id": event_id}},
            code=code,
        )

    async def _on_invite(self, invite: Invite) -> None:
        """Join managed rooms the provisioner invites us to, and DMs from club members."""
        inviter = invite.inviter
        if inviter is not None and (
            inviter == self.settings.provisioner or inviter in self.settings.other_provisioners
        ):
            await self.client.join(invite.room_id)
            info = await self.rooms.info(invite.room_id)
            if info.elsewhere:
                log.info("%s: joined %s, served by another shard", self.bot.name, invite.room_id)
                return
            listed = info.settings.get("bots")
            if not info.managed or (
                isinstance(listed, list) and listed and self.client.user_id not in listed
            ):
                log.warning(
                    "%s: left %s: invited by the provisioner but %s",
                    self.bot.name,
                    invite.room_id,
                    "not managed" if not info.managed else "not one of the room's bots",
                )
                await self.client.leave(invite.room_id)
                self.rooms.invalidate(invite.room_id)
            return
        if (
            inviter is not None
            and invite.is_direct
            and await shares_managed_room(self.client, self.rooms, inviter)
        ):
            await self.client.join(invite.room_id)
            await self.store.set_dm_room(inviter, invite.room_id)
            return
        log.info("%s: declined an invite to %s", self.bot.name, invite.room_id)
        await self.client.leave(invite.room_id)

    # --- identity changes ------------------------------------------------------------------------

    async def trust(self, ctx: CommandContext, user: str) -> None:
        """`!trust @user` (a built-in): `IdentityChanges.trust`; the room's built-ins answerer
        replies, and any bot in its DMs."""
        await self._identity.trust(ctx, user, answers=self.answers_builtins(ctx.room) or ctx.in_dm)


async def _logged(label: str, coro: Coroutine[Any, Any, None]) -> None:
    """Run a one-shot background coroutine; a failure is logged instead of lost."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception as e:
        log.warning("%s failed: %s", label, type(e).__name__)
        log.debug("%s: failure detail", label, exc_info=True)


def required_template_keys(bots: Iterable[Bot]) -> list[str]:
    keys = list(BUILTIN_KEYS)
    for bot in bots:
        keys += [spec.help_key for spec in collect_commands(bot)]
    return keys
