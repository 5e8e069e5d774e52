"""The applier: run a plan against the homeserver, then prove that nothing is left to do.

Actions run as soon as what they need exists (a room after its parent space, an invite after
the room and the account), at most `concurrency` at a time, through the provisioner's
`MatrixHttp` (a server admin exempt from rate limits; 429 answers are still honoured there).
Afterwards the touched rooms are read again and planned again: a non-empty plan is an error.

Crash safety comes from the design, not from this module: every room carries its locator from
its first event, so a re-run finds what a killed run created. `CLUBS_CRASH_AT_WRITE=N` (see
`crash_hook_from_env`) kills the process right before its Nth write to prove it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clubs.core.admin import ensure_ratelimit_override
from clubs.core.errors import ClubsError, MatrixError, NotFound
from clubs.core.http import MatrixHttp, RoomId, WriteHook, admin_v1, admin_v2, cs
from clubs.core.namespace import NS
from clubs.core.secrets import Vault
from clubs.provisioning.actual import Actual
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.discover import discover, joined_rooms
from clubs.provisioning.onboard import IssuedToken, create_account, issue_token
from clubs.provisioning.plan import Action, Plan, placeholder_ref, plan, render_text
from clubs.provisioning.tokens import TokenStore

log = logging.getLogger(__name__)

CRASH_ENV = "CLUBS_CRASH_AT_WRITE"
RUN_MARKER = f"{NS}.apply"
"""Account data of the provisioner, per network: {"state": "running"|"done", "at": ms}."""
QUIET_S = 1.0
QUIET_MAX_S = 60.0
MAX_CONCURRENCY = 4
KICK_REASON = "removed by provisioner"

ProgressFn = Callable[[int, int, Action], None]
"""Called after each action with (done, total, action)."""


class ApplyError(ClubsError):
    """The plan could not be applied, or the homeserver does not match after applying it."""


def crash_at_write(n: int) -> WriteHook:
    """A write hook that ends the process (exit status 137, like SIGKILL) before write `n`."""
    count = 0

    def hook(method: str, label: str) -> None:
        nonlocal count
        count += 1
        if count == n:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(137)

    return hook


def crash_hook_from_env(environ: Mapping[str, str] | None = None) -> WriteHook | None:
    value = (environ if environ is not None else os.environ).get(CRASH_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ClubsError(f"{CRASH_ENV} must be a positive integer, got {value!r}")
    return crash_at_write(int(value))


@dataclass
class ApplyResult:
    plan: Plan
    writes: int = 0
    seconds: float = 0.0
    created: dict[str, RoomId] = field(default_factory=dict)
    issued: list[IssuedToken] = field(default_factory=list)

    def summary(self) -> str:
        if self.plan.empty:
            return (
                f"No changes: network {self.plan.network} already matches ({self.writes} writes)."
            )
        counts = ", ".join(
            f"{n} {k.replace('_', ' ')}" for k, n in sorted(self.plan.counts().items())
        )
        sec = f", {len(self.plan.security)} SECURITY fix(es)" if self.plan.security else ""
        return (
            f"Applied {len(self.plan.actions)} change(s){sec} in {self.seconds:.1f}s "
            f"({counts}); {self.writes} write call(s); verified: no changes left."
        )


class Executor:
    """Runs one plan's actions in dependency order with bounded concurrency."""

    def __init__(
        self,
        http: MatrixHttp,
        desired: DesiredNetwork,
        actual: Actual,
        *,
        vault: Vault | None = None,
        tokens: TokenStore | None = None,
        concurrency: int = MAX_CONCURRENCY,
        progress: ProgressFn | None = None,
    ) -> None:
        self.http = http
        self.desired = desired
        self.ids: dict[str, RoomId] = actual.room_ids()
        self.vault = vault
        self.tokens = tokens
        self.concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
        self.progress = progress
        self.created: dict[str, RoomId] = {}
        self.issued: list[IssuedToken] = []
        self.users_created: set[str] = set()
        self.gone: set[str] = set()

    async def run(self, p: Plan) -> None:
        done_events = {a.provides: asyncio.Event() for a in p.actions if a.provides}
        sem = asyncio.Semaphore(self.concurrency)
        total = len(p.actions)
        done = 0

        async def one(action: Action) -> None:
            nonlocal done
            for need in action.needs:
                event = done_events.get(need)
                if event is not None:
                    await event.wait()
            async with sem:
                await self.execute(action)
            if action.provides:
                done_events[action.provides].set()
            done += 1
            if self.progress is not None:
                self.progress(done, total, action)

        try:
            async with asyncio.TaskGroup() as tg:
                for action in p.actions:
                    tg.create_task(one(action))
        except* (ClubsError, TimeoutError) as group:  # transport failures are Unreachable
            first = group.exceptions[0]
            raise ApplyError(f"apply stopped: {first}") from first

    # --- resolving refs ----------------------------------------------------------------------

    def room(self, ref: str) -> RoomId:
        try:
            return self.ids[ref]
        except KeyError:
            raise ApplyError(f"{ref}: the room does not exist (yet)") from None

    def resolve_key(self, value: str) -> str:
        ref = placeholder_ref(value)
        return self.room(ref) if ref is not None else value

    def resolve(self, value: Any, key: str | None = None) -> Any:
        """Substitute room ids for placeholders in `state_key` and `room_id` fields only."""
        if isinstance(value, Mapping):
            return {k: self.resolve(v, k) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.resolve(v, key) for v in value]
        if isinstance(value, str) and key in ("state_key", "room_id"):
            return self.resolve_key(value)
        return value

    # --- one action --------------------------------------------------------------------------

    async def execute(self, a: Action) -> None:
        http = self.http
        if a.kind == "create_user":
            if self.vault is None:
                raise ApplyError("precreating accounts needs the vault (var directory)")
            await create_account(http, self.vault, a.user_id, dict(a.content))
            self.users_created.add(a.user_id)
        elif a.kind == "issue_token":
            if self.tokens is None:
                raise ApplyError(
                    "issuing registration tokens needs the token store (var directory)"
                )
            self.issued.append(await issue_token(http, self.tokens, self.desired.network, a.ref))
        elif a.kind == "create":
            resp = await http.post(cs("createRoom"), self.resolve(a.content))
            room_id = RoomId(resp["room_id"])
            self.ids[a.ref] = room_id
            self.created[a.ref] = room_id
            log.info("created room %s", room_id)
        elif a.kind in ("put_state", "space_child", "archive"):
            await http.put(
                cs(
                    "rooms",
                    self.room(a.ref),
                    "state",
                    a.event_type,
                    self.resolve_key(a.state_key),
                ),
                self.resolve(a.content),
                label=f"state {a.event_type}",
            )
        elif a.kind == "invite":
            try:
                await http.post(
                    cs("rooms", self.room(a.ref), "invite"),
                    {"user_id": a.user_id},
                    label="invite",
                )
            except MatrixError as e:
                if e.status != 403 or "already in the room" not in e.error:
                    raise
        elif a.kind == "join":
            # Synapse's admin join: the provisioner (in the room, with invite power) invites the
            # local account if needed and joins it; the join event is the member's own.
            try:
                await http.post(
                    admin_v1("join", self.room(a.ref)), {"user_id": a.user_id}, label="join"
                )
            except NotFound:
                raise ApplyError(
                    f"{a.user_id}: no such account on this homeserver, so it cannot be joined "
                    f"to {a.ref} (has the person registered? is their mxid right?)"
                ) from None
        elif a.kind == "kick":
            try:
                await http.post(
                    cs("rooms", self.room(a.ref), "kick"),
                    {"user_id": a.user_id, "reason": KICK_REASON},
                    label="kick",
                )
            except MatrixError as e:  # left meanwhile (a bot leaves rooms it no longer serves)
                if e.status != 403 or "not in the room" not in e.error:
                    raise
        elif a.kind == "destroy":
            await self.destroy(a.ref)
        else:  # pragma: no cover - the planner emits only the kinds above
            raise ApplyError(f"unknown action {a.kind}")

    async def destroy(self, ref: str) -> None:
        """Block and purge the room (admin API v2), waiting until the purge is done."""
        room_id = self.room(ref)
        resp = await http_delete(
            self.http, admin_v2("rooms", room_id), {"block": True, "purge": True}
        )
        delete_id = str(resp.get("delete_id", ""))
        deadline = time.monotonic() + 120
        while delete_id and time.monotonic() < deadline:
            status = await self.http.get(
                admin_v2("rooms", "delete_status", delete_id), label="admin delete status"
            )
            if status.get("status") == "complete":
                break
            if status.get("status") == "failed":
                raise ApplyError(f"{ref}: deleting the room failed")
            await asyncio.sleep(0.2)
        self.gone.add(ref)


async def http_delete(http: MatrixHttp, url: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return await http.request("DELETE", url, json=body, label="admin room delete")


def touched_rooms(p: Plan) -> set[str]:
    return {a.ref for a in p.actions if a.kind not in ("create_user", "issue_token")}


def _marker_url(provisioner: str, network: str) -> str:
    return cs("user", provisioner, "account_data", f"{RUN_MARKER}.{network}")


async def previous_run_unfinished(http: MatrixHttp, provisioner: str, network: str) -> bool:
    try:
        marker = await http.get(_marker_url(provisioner, network), label="run marker")
    except NotFound:
        return False
    return marker.get("state") == "running"


async def set_run_marker(http: MatrixHttp, provisioner: str, network: str, state: str) -> None:
    await http.put(
        _marker_url(provisioner, network),
        {"state": state, "at": int(time.time() * 1000)},
        label="run marker",
    )


async def wait_until_quiet(
    http: MatrixHttp, provisioner: str, *, quiet_s: float = QUIET_S, max_s: float = QUIET_MAX_S
) -> None:
    """Wait until the provisioner's joined rooms stop changing.

    A killed run may leave createRoom requests that the server is still processing; planning
    before they land would create the same room twice. Their rooms appear in the joined rooms
    once done, so a set that stays the same for `quiet_s` means nothing is in flight any more.
    """
    deadline = time.monotonic() + max_s
    last = set(await joined_rooms(http, provisioner))
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = set(await joined_rooms(http, provisioner))
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet_s:
            return


async def apply_network(
    http: MatrixHttp,
    desired: DesiredNetwork,
    provisioner: str,
    *,
    vault: Vault | None = None,
    tokens: TokenStore | None = None,
    reinvite: bool = False,
    prune: bool = False,
    destroy: bool = False,
    expected_hash: str | None = None,
    concurrency: int = MAX_CONCURRENCY,
    progress: ProgressFn | None = None,
) -> ApplyResult:
    """Discover, plan, execute, then re-read the touched rooms and require an empty plan."""
    started = time.monotonic()
    writes_before = http.writes
    if await previous_run_unfinished(http, provisioner, desired.network):
        log.warning("the previous apply did not finish; waiting for its requests to land")
        await wait_until_quiet(http, provisioner)
    actual = await discover(http, desired, provisioner, tokens=tokens)
    p = plan(desired, actual, reinvite=reinvite, prune=prune, destroy=destroy)
    if expected_hash is not None and p.hash != expected_hash:
        raise ApplyError(
            f"the homeserver changed since the plan was made (hash {p.hash[:12]}, "
            f"expected {expected_hash[:12]}); plan again"
        )
    result = ApplyResult(p)
    if p.empty:
        result.seconds = time.monotonic() - started
        return result
    await ensure_ratelimit_override(http, provisioner)
    await set_run_marker(http, provisioner, desired.network, "running")
    ex = Executor(
        http,
        desired,
        actual,
        vault=vault,
        tokens=tokens,
        concurrency=concurrency,
        progress=progress,
    )
    await ex.run(p)
    result.created = ex.created
    result.issued = ex.issued

    # Post-condition: the touched rooms, read again, leave nothing to do.
    refs = touched_rooms(p) - ex.gone
    reread = await discover(
        http, desired, provisioner, only=sorted({ex.ids[r] for r in refs if r in ex.ids})
    )
    tokens_now = dict(actual.tokens)
    tokens_now.update({t.person: "live" for t in ex.issued})
    after = Actual(
        actual.network,
        actual.provisioner,
        {**{k: v for k, v in actual.rooms.items() if k not in ex.gone}, **reread.rooms},
        actual.duplicates,
        actual.users | ex.users_created,
        tokens_now,
    )
    left = plan(desired, after, reinvite=reinvite, prune=prune, destroy=destroy)
    if not left.empty:
        raise ApplyError(
            f"after applying, {len(left.actions)} change(s) are still pending:\n"
            + render_text(left)
        )
    await set_run_marker(http, provisioner, desired.network, "done")
    result.writes = http.writes - writes_before
    result.seconds = time.monotonic() - started
    log.info("applied %d action(s) with %d writes", len(p.actions), result.writes)
    return result
