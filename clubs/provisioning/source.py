"""From a network file (or a posted document) to the compiled `DesiredNetwork`.

Wraps the YAML front half (`load`, `lint`, `compile`) so the CLI and the HTTP service read a
network the same way. Nothing here talks to a homeserver: every problem is reported first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from clubs.core.errors import ClubsError
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.load import load_network, parse_network
from clubs.provisioning.model import Network


@dataclass(frozen=True)
class Checked:
    network: Network
    warnings: tuple[str, ...]


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    fn = getattr(mod, name, None)
    return cast(Callable[..., Any], fn) if callable(fn) else None


def check(source: Path | bytes, file: str = "<network>") -> Checked:
    """Load and lint. Raises ConfigError with every located error; warnings are returned."""
    network = load_network(source) if isinstance(source, Path) else parse_network(source, file)
    lint = _optional("clubs.provisioning.lint", "lint_network")
    warnings: Sequence[object] = lint(network) if lint is not None else ()
    return Checked(network, tuple(str(w) for w in warnings))


def compile_desired(network: Network, server_name: str) -> DesiredNetwork:
    compile_network = _optional("clubs.provisioning.compile", "compile_network")
    if compile_network is None:
        raise ClubsError("the network compiler (clubs.provisioning.compile) is not available")
    desired = compile_network(network, server_name)
    if not isinstance(desired, DesiredNetwork):
        raise ClubsError("the network compiler returned something else than a DesiredNetwork")
    return desired
