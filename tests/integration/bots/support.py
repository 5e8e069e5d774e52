"""Helpers for bot tests: managed rooms as the provisioner makes them, a bot host, a peer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from mautrix.types import EventID, EventType, MessageType, RoomID, TextMessageEventContent

from clubs.bots.base import Bot
from clubs.bots.host import (
    BotAccount,
    BotFactory,
    HostConfig,
    HostServices,
    open_runtimes,
    supervised,
)
from clubs.bots.runtime import BotRuntime, RuntimeSettings
from clubs.core.admin import ensure_ratelimit_override, ensure_service_account
from clubs.core.clock import Clock
from clubs.core.http import MatrixHttp, path
from clubs.core.i18n import Catalog
from clubs.core.namespace import CLUB_SETTINGS, LOCATOR
from clubs.core.paths import project_root
from clubs.core.secrets import MASTER_KEY_ENV, Vault
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.botproc import READY_FILE
from tests.mautrix_client import MautrixPeer

CS = ("_matrix", "client", "v3")


def new_network() -> str:
    return f"t-{secrets.token_hex(4)}"


async def create_bot_account(synapse: SynapseHarness, var_dir: Path, name: str) -> BotAccount:
    """A bot account as `clubs up` makes it: credentials in var/secrets/vault."""
    vault = Vault(var_dir / "secrets" / "vault")
    session, _ = await ensure_service_account(
        synapse.client(),
        vault,
        synapse.hs.registration_shared_secret(),
        f"{name}-{secrets.token_hex(4)}",
        server_name=synapse.server_name,
    )
    await ensure_ratelimit_override(synapse.admin.http, session.user_id)
    return BotAccount(name, session.user_id)


async def echo_room(
    synapse: SynapseHarness, tmp_path: Path
) -> tuple[str, BotAccount, Account, str]:
    """A new network with an `echo` bot account and a member who joined one managed encrypted
    room the bot is invited to: (network, bot account, member, room id)."""
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "echo")
    member = await synapse.new_user("member")
    room = await managed_room(synapse, network, invite=[account.user_id, member.user_id])
    await member.http.post(path(*CS, "join", room), {})
    return network, account, member, room


async def managed_room(
    synapse: SynapseHarness,
    network: str,
    *,
    invite: Sequence[str],
    powers: Mapping[str, int] | None = None,
    language: str = "en",
    key: str = "general",
    club: str = "c1",
    encrypted: bool = True,
    audience: str | None = None,
    settings: Mapping[str, Any] | None = None,
    cohort: str | None = None,
) -> str:
    """A room as the provisioner creates it: locator and settings in initial_state
    (`audience="staff"`: the club's staff-only moderators room; `settings`: more club settings,
    e.g. `{"moderation": {...}}`; `cohort`: a room of that cohort of the club)."""
    locator: dict[str, Any] = {
        "network": network,
        "kind": "club_room" if cohort is None else "cohort_room",
        "club": club,
        "key": key,
        "schema": 1,
        "state": "active",
    }
    if cohort is not None:
        locator["cohort"] = cohort
    if audience is not None:
        locator["audience"] = audience
    initial_state: list[dict[str, Any]] = [
        {"type": LOCATOR, "state_key": "", "content": locator},
        {
            "type": CLUB_SETTINGS,
            "state_key": "",
            "content": {"language": language, "time_zone": "Europe/Berlin", **(settings or {})},
        },
        {
            "type": "m.room.history_visibility",
            "state_key": "",
            "content": {"history_visibility": "joined"},
        },
    ]
    if encrypted:
        initial_state.append(
            {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }
        )
    created = await synapse.admin.http.post(
        path(*CS, "createRoom"),
        {
            "preset": "private_chat",
            "room_version": "12",
            "name": key,
            "invite": list(invite),
            "initial_state": initial_state,
            "power_level_content_override": {"users": dict(powers or {}), "invite": 50},
        },
    )
    return str(created["room_id"])


@dataclass
class RunningHost:
    runtimes: list[BotRuntime]
    task: asyncio.Task[None]

    def runtime(self, name: str) -> BotRuntime:
        return next(r for r in self.runtimes if r.bot.name == name)

    def check_alive(self) -> None:
        if self.task.done():
            self.task.result()
            raise AssertionError("the bot host stopped")


@contextlib.asynccontextmanager
async def bot_host(
    synapse: SynapseHarness,
    var_dir: Path,
    accounts: Sequence[BotAccount],
    factories: Mapping[str, BotFactory],
    *,
    network: str,
    settings: RuntimeSettings | None = None,
    descriptions: Mapping[Any, str] | None = None,
    catalog: Catalog | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[RunningHost]:
    config = HostConfig(
        homeserver_url=synapse.url,
        var_dir=var_dir,
        accounts=accounts,
        network=network,
        provisioner=synapse.admin.user_id,
        admin_token=synapse.admin.session.access_token,
        settings=settings or RuntimeSettings(sync_timeout_ms=1000),
        descriptions=descriptions or {},
    )
    async with open_runtimes(config, factories, catalog, clock=clock) as runtimes:

        async def run_all() -> None:
            async with asyncio.TaskGroup() as group:
                for rt in runtimes:
                    # As in production: a bot that fails is restarted, never stops the others.
                    group.create_task(supervised(rt), name=f"bot:{rt.bot.name}")

        task = asyncio.create_task(run_all())
        host = RunningHost(runtimes, task)
        try:
            for rt in runtimes:

                async def ready(rt: BotRuntime = rt) -> bool:
                    host.check_alive()
                    return rt.ready.is_set()

                await eventually(ready, within=30)
            yield host
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def joined(user: Account, room_id: str, who: str) -> bool:
    members = await user.http.get(path(*CS, "rooms", room_id, "joined_members"))
    return who in members.get("joined", {})


def fixed_master_key(monkeypatch: Any) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, Fernet.generate_key().decode())


def simple_factory(bot: Bot) -> BotFactory:
    def make(_: HostServices) -> Bot:
        return bot

    return make


# --- a bot host in its own process (botproc.py) ---------------------------------------------


@dataclass
class BotProcess:
    """`tests.integration.bots.botproc` as a child process that tests start, crash and kill."""

    url: str
    var_dir: Path
    accounts: Sequence[BotAccount]
    network: str
    provisioner: str
    sync_timeout_ms: int = 500
    commands_per_window: int = 10_000
    debug: bool = False
    verbosity: int = 1
    bot: str = "echo"
    """The bot every account runs (`botproc --bot`: echo, or jobs for `jobbot.JobBot`)."""
    python_args: Sequence[str] = ()
    """Interpreter options before `-m botproc` (e.g. `-m cProfile -o FILE`)."""
    proc: asyncio.subprocess.Process | None = None
    exits: list[int] = field(default_factory=list)
    """Exit status of every run so far, in order."""

    @property
    def log_file(self) -> Path:
        return self.var_dir / "botproc.log"

    def argv(self) -> list[str]:
        argv = [
            sys.executable,
            *self.python_args,
            "-m",
            "tests.integration.bots.botproc",
            "--url",
            self.url,
            "--var",
            str(self.var_dir),
            "--network",
            self.network,
            "--provisioner",
            self.provisioner,
            "--sync-timeout-ms",
            str(self.sync_timeout_ms),
            "--commands-per-window",
            str(self.commands_per_window),
            "--verbosity",
            str(self.verbosity),
            "--bot",
            self.bot,
        ]
        for account in self.accounts:
            argv += ["--account", f"{account.name}:{account.user_id}"]
        return [*argv, "--debug"] if self.debug else argv

    async def start(self, crash_at: str | None = None) -> None:
        """Start a run (`crash_at`: `CLUBS_CRASH_AT` for this run only)."""
        assert self.proc is None, "the bot process is already running"
        env = dict(os.environ)
        env.pop("CLUBS_CRASH_AT", None)
        if crash_at is not None:
            env["CLUBS_CRASH_AT"] = crash_at
        self.var_dir.mkdir(parents=True, exist_ok=True)
        (self.var_dir / READY_FILE).unlink(missing_ok=True)
        with self.log_file.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv(),
                cwd=project_root(),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def ready(self) -> bool:
        return (self.var_dir / READY_FILE).exists()

    async def wait_ready(self, within: float = 30) -> None:
        async def probe() -> bool:
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"the bot process exited ({self.proc.returncode}); {self}")
            return self.ready()

        await eventually(probe, within=within)

    async def wait_exit(self, within: float = 30) -> int:
        """Wait for the run to end by itself (a kill point); returns its exit status."""
        assert self.proc is not None
        try:
            async with asyncio.timeout(within):
                code = await self.proc.wait()
        except TimeoutError:
            raise AssertionError(f"the bot process did not exit within {within}s") from None
        self.exits.append(code)
        self.proc = None
        return code

    async def kill(self) -> None:
        """SIGKILL: a power cut."""
        await self._signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM: the devices are closed (never logged out)."""
        await self._signal(signal.SIGTERM)

    async def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
        await self.wait_exit(within=20)

    def log_text(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def __str__(self) -> str:
        tail = self.log_text()[-3000:] if self.log_file.exists() else ""
        return f"bot process log tail:\n{tail}"


@contextlib.asynccontextmanager
async def bot_process(*args: Any, **kw: Any) -> AsyncIterator[BotProcess]:
    """A BotProcess that is killed at the end of the block whatever happens."""
    bp = BotProcess(*args, **kw)
    try:
        yield bp
    finally:
        await bp.kill()


# --- what the member sees ----------------------------------------------------------------------


async def send_text(peer: MautrixPeer, room_id: str, body: str) -> EventID:
    """Send an encrypted `m.text` through the cross-signed-only peer; returns its event id."""
    event_id: EventID = await peer.client.send_message_event(
        RoomID(room_id),
        EventType.ROOM_MESSAGE,
        TextMessageEventContent(msgtype=MessageType.TEXT, body=body),
    )
    return event_id


def replies_per_command(peer: MautrixPeer, bot_user: str, room_id: str) -> Counter[str]:
    """How many decrypted replies from `bot_user` answer each event (by `m.in_reply_to`)."""
    return Counter(
        r.reply_to
        for r in peer.received
        if r.room_id == room_id and r.sender == bot_user and r.reply_to is not None
    )


async def wait_replies(
    peer: MautrixPeer, bot_user: str, room_id: str, commands: Sequence[str], within: float
) -> Counter[str]:
    """Wait until every command has at least one reply; returns the counts per command."""
    started = time.monotonic()

    async def all_answered() -> Counter[str]:
        counts = replies_per_command(peer, bot_user, room_id)
        missing = [c for c in commands if counts[c] == 0]
        return counts if not missing else Counter()

    try:
        return await eventually(all_answered, within=within, interval=0.1)
    except AssertionError:
        counts = replies_per_command(peer, bot_user, room_id)
        missing = [c for c in commands if counts[c] == 0]
        raise AssertionError(
            f"{len(missing)} of {len(commands)} commands unanswered after "
            f"{time.monotonic() - started:.0f}s; undecryptable at the peer: "
            f"{len(peer.undecryptable)}"
        ) from None


async def device_count(synapse_url: str, var_dir: Path, user_id: str) -> int:
    """How many devices the bot account has on the server (it must stay at one)."""
    token = Vault(var_dir / "secrets" / "vault").get(f"{user_id}/access_token")
    async with MatrixHttp(synapse_url, token) as http:
        devices = await http.get(path(*CS, "devices"))
    return len(devices.get("devices", []))


async def open_dm(member: Account, bot_user: str) -> str:
    """An encrypted DM from the member to the bot, as Element creates one."""
    created = await member.http.post(
        path(*CS, "createRoom"),
        {
            "preset": "trusted_private_chat",
            "is_direct": True,
            "invite": [bot_user],
            "initial_state": [
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        },
    )
    room_id = str(created["room_id"])
    await eventually(lambda: joined(member, room_id, bot_user), within=20)
    return room_id
