"""`clubs bridge run` as a process, killed at its kill points (exit 137, no cleanup) and started
again: nothing the homeserver or Telegram handed over is lost, and nothing is relayed twice."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clubs.core.crash import ENV as CRASH_ENV
from clubs.core.http import cs
from clubs.core.secrets import MASTER_KEY_ENV
from tests.faketelegram import FakeTelegram
from tests.harness import eventually
from tests.integration.bridge.conftest import BridgeWorld, messages, unique_key

pytestmark = pytest.mark.integration

IVAN = {"id": 5550002, "is_bot": False, "first_name": "Иван"}


class BridgeProcess:
    def __init__(self, world: BridgeWorld, telegram: FakeTelegram, var: Path, key: str, chat: int):
        self.world = world
        self.var = var
        var.mkdir(parents=True, exist_ok=True)
        (var / "secrets").mkdir(exist_ok=True)
        shutil.copy(world.tmp / "secrets" / "vault", var / "secrets" / "vault")
        self.config = var / "bridge.yaml"
        self.config.write_text(
            "enabled: true\n"
            f"listen: {{host: 127.0.0.1, port: {world.config.port}}}\n"
            f"homeserver: {world.synapse.url}\n"
            f"server_name: {world.synapse.server_name}\n"
            f"telegram: {{api: '{telegram.url}', poll_timeout_s: 1}}\n"
            "hold_s: 0\n"
        )
        self.network = var / "network.yaml"
        self.network.write_text(
            "version: 1\nnetwork: demo\nname: Сеть\ncountries:\n  - key: kz\n    name: Казахстан\n"
            "    clubs:\n      - key: almaty\n        name: Алматы\n        rooms:\n"
            f"          - {{key: {key}, name: Общий, "
            f"bridge: {{telegram: {{chat: {chat}, mode: relay}}}}}}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, crash_at: str | None = None) -> None:
        env = {**os.environ, MASTER_KEY_ENV: self.world.master_key}
        env.pop(CRASH_ENV, None)
        if crash_at:
            env[CRASH_ENV] = crash_at
        log = (self.var / "bridge.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
            [sys.executable, "-m", "clubs.cli", "bridge", "run", "--config", str(self.config),
             "--network", str(self.network), "--var-dir", str(self.var)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        await eventually(self._healthy, within=20, interval=0.1)

    async def health(self) -> dict[str, Any] | None:
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{self.world.config.url}/health") as resp,
            ):
                body = await resp.json()
                return body if isinstance(body, dict) else None
        except aiohttp.ClientError:
            return None

    async def _healthy(self) -> bool:
        return await self.health() is not None

    async def bridging(self) -> bool:
        health = await self.health()
        return health is not None and health.get("portals") == 1

    async def died(self) -> int:
        assert self.proc is not None
        return await eventually(lambda: _async(self.proc.poll() if self.proc else None))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


async def _async(value: Any) -> Any:
    return value


@pytest.fixture
async def processes() -> AsyncIterator[list[BridgeProcess]]:
    started: list[BridgeProcess] = []
    yield started
    for p in started:
        p.stop()


async def test_killed_at_each_point_then_restarted_nothing_lost_nothing_twice(
    bridge_world: BridgeWorld,
    telegram: FakeTelegram,
    processes: list[BridgeProcess],
    tmp_path: Path,
) -> None:
    chat = -1003000000001
    telegram.add_chat(chat)
    key = unique_key()
    anna = await bridge_world.synapse.new_user("anna", displayname="Анна")
    bridge = BridgeProcess(bridge_world, telegram, tmp_path / "var", key, chat)
    processes.append(bridge)
    await bridge.start()
    room = await bridge_world.room(key, [anna])
    await eventually(bridge.bridging, within=15)

    async def say(body: str) -> None:
        await anna.http.put(
            cs("rooms", room, "send", "m.room.message", secrets.token_hex(8)),
            {"msgtype": "m.text", "body": body},
        )

    await say("первое")
    await eventually(lambda: _async(telegram.texts(chat) == ["Анна: первое"]), within=15)
    bridge.stop()

    # 1. Killed after storing a transaction, before answering it: Synapse sends it again.
    await bridge.start(crash_at="bridge_txn_accepted")
    await say("второе")
    assert await bridge.died() == 137
    await bridge.start()
    await eventually(lambda: _async(len(telegram.texts(chat)) == 2), within=20)
    bridge.stop()

    # 2. Killed after the first of three parts was sent and recorded: the rest follow, once.
    await bridge.start(crash_at="bridge_part_recorded")
    await say("\n".join(f"строка {i}: " + "текст " * 12 for i in range(120)))
    assert await bridge.died() == 137
    assert len(telegram.texts(chat)) == 3
    await bridge.start()
    await eventually(lambda: _async(len(telegram.texts(chat)) == 5), within=20)
    bridge.stop()

    # 3. Killed after relaying a Telegram message, before confirming it: not relayed twice.
    await bridge.start(crash_at="bridge_update_handled")
    await telegram.user_says(chat, IVAN, "из Telegram")
    assert await bridge.died() == 137
    await bridge.start()
    await eventually(lambda: _async(telegram.updates == []), within=15)
    await asyncio.sleep(0.5)  # one more poll round after the confirmation

    assert telegram.texts(chat)[:2] == ["Анна: первое", "Анна: второе"]
    assert len(telegram.texts(chat)) == 6  # 1 + 1 + 3 parts + Ivan's own message
    assert len(telegram.method_calls("sendMessage")) == 5
    relayed = [e for e in await messages(anna, room) if e["content"].get("body") == "из Telegram"]
    assert len(relayed) == 1
