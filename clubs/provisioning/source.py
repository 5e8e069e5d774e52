"""From a network file (or a posted document) to the compiled `DesiredNetwork`.

Wraps the YAML front half (`load`, `lint`, `compile`) so the CLI, the HTTP service and
`clubs up` read a network the same way. Nothing here talks to a homeserver: every problem is
reported first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clubs.provisioning.compile import compile_network
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.lint import lint_network
from clubs.provisioning.load import load_network, parse_network
from clubs.provisioning.model import Network


@dataclass(frozen=True)
class Checked:
    network: Network
    warnings: tuple[str, ...]


def check(source: Path | bytes, file: str = "<network>") -> Checked:
    """Load and lint. Raises ConfigError with every located error; warnings are returned."""
    network = load_network(source) if isinstance(source, Path) else parse_network(source, file)
    return Checked(network, tuple(str(w) for w in lint_network(network)))


def compile_desired(network: Network, server_name: str) -> DesiredNetwork:
    return compile_network(network, server_name)


def private_descriptions(
    desired: DesiredNetwork,
) -> dict[tuple[str | None, str | None, str | None, str | None], str]:
    """Room descriptions to post encrypted, keyed like the bots name rooms (locator fields)."""
    return {
        (r.locator.kind, r.locator.club, r.locator.cohort, r.locator.key): r.private_description
        for r in desired.rooms
        if r.private_description
    }
