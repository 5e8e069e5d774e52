"""docker-compose.yml runs the same `clubs` commands the CLI really has."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clubs.cli import build_parser

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def services() -> dict[str, dict[str, object]]:
    data = yaml.safe_load(COMPOSE.read_text())
    return {k: v for k, v in data["services"].items() if "profiles" not in v}


@pytest.mark.parametrize("name", [n for n, s in services().items() if "command" in s])
def test_service_command_parses(name: str) -> None:
    command = services()[name]["command"]
    assert isinstance(command, list)
    build_parser().parse_args([str(c) for c in command])


def test_synapse_listens_behind_the_proxy_and_nothing_is_published() -> None:
    for name, service in services().items():
        assert "ports" not in service, f"{name} publishes a port; only the proxy should"
    command = services()["synapse"]["command"]
    assert isinstance(command, list)
    assert "--behind-proxy" in command
