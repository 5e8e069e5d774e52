"""`clubs serve` never prints its API token, whose output may be persisted; `--show-token` prints
it only to a terminal."""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from clubs.cli import build_parser
from clubs.core.errors import ClubsError
from clubs.core.http import MatrixHttp, UserId
from clubs.core.secrets import MASTER_KEY_ENV, MASTER_KEY_FILE_ENV, Vault
from clubs.provisioning import commands
from clubs.provisioning.commands import Connection
from clubs.provisioning.service import TOKEN_ENV, VAULT_KEY, serve, service_token, show_token


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class NoSite:
    """Stands in for the TCP site: the test listens on nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def start(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_configured_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (TOKEN_ENV, MASTER_KEY_ENV, MASTER_KEY_FILE_ENV):
        monkeypatch.delenv(name, raising=False)


def _vault(var_dir: Path) -> Vault:
    return Vault(var_dir / "secrets" / "vault")


async def _serve_until_listening(
    var_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """Start `serve` against a stand-in connection, stop it once it says it listens, and
    return everything it printed."""

    @asynccontextmanager
    async def connect(args: argparse.Namespace) -> AsyncIterator[Connection]:
        async with MatrixHttp("http://127.0.0.1:9") as http:
            yield Connection(http, UserId("@provisioner:clubs.local"), var_dir)

    monkeypatch.setattr(commands, "connect", connect)
    monkeypatch.setattr(web, "TCPSite", NoSite)
    task = asyncio.create_task(serve(argparse.Namespace(host="127.0.0.1", port=0)))
    printed = ""
    deadline = time.monotonic() + 10
    while "Provisioning API on" not in printed:
        assert time.monotonic() < deadline, printed
        assert not task.done(), task.exception()
        await asyncio.sleep(0.01)
        captured = capsys.readouterr()
        printed += captured.out + captured.err
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    captured = capsys.readouterr()
    return printed + captured.out + captured.err


async def test_serve_keeps_a_new_token_in_the_vault_without_printing_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    first = await _serve_until_listening(tmp_path, monkeypatch, capsys)
    token = _vault(tmp_path).get(VAULT_KEY)
    assert token is not None
    assert len(token) >= 32
    assert token not in first
    assert token not in caplog.text
    assert (
        "New service token kept in the vault; "
        f"`clubs serve --show-token --var-dir {tmp_path}` prints it\n"
    ) in first

    again = await _serve_until_listening(tmp_path, monkeypatch, capsys)
    assert _vault(tmp_path).get(VAULT_KEY) == token
    assert "New service token" not in again
    assert token not in again


async def test_serve_uses_the_configured_token_and_stores_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "configured-token-0123456789")
    printed = await _serve_until_listening(tmp_path, monkeypatch, capsys)
    assert "New service token" not in printed
    assert "configured-token-0123456789" not in printed
    assert _vault(tmp_path).get(VAULT_KEY) is None


def test_service_token_is_created_once(tmp_path: Path) -> None:
    token, created = service_token(_vault(tmp_path))
    assert created
    assert service_token(_vault(tmp_path)) == (token, False)


def test_show_token_prints_it_to_a_terminal(tmp_path: Path) -> None:
    token, _ = service_token(_vault(tmp_path))
    out = Terminal()
    assert show_token(tmp_path, out) == 0
    assert out.getvalue() == f"{token}\n"


def test_show_token_refuses_anything_but_a_terminal(tmp_path: Path) -> None:
    token, _ = service_token(_vault(tmp_path))
    out = io.StringIO()
    with pytest.raises(ClubsError) as caught:
        show_token(tmp_path, out)
    assert str(caught.value) == (
        "not printing the service token: standard output is not a terminal and may be logged; "
        "run `clubs serve --show-token` in a terminal, or set $CLUBS_SERVICE_TOKEN"
    )
    assert token not in out.getvalue()


def test_show_token_points_to_the_environment_when_it_sets_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "configured-token-0123456789")
    out = Terminal()
    assert show_token(tmp_path, out) == 0
    assert out.getvalue() == ""
    assert capsys.readouterr().err == "the service token is the value of $CLUBS_SERVICE_TOKEN\n"
    assert not (tmp_path / "secrets").exists()


def test_the_cli_flag_shows_the_token_only_to_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(["serve", "--show-token", "--var-dir", str(tmp_path)])
    with pytest.raises(ClubsError, match="standard output is not a terminal"):
        commands.run(args)  # pytest's captured stdout is not a terminal
    assert capsys.readouterr().out == ""
