"""Where the project's non-Python files live."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_DIR_ENV = "CLUBS_CONFIG_DIR"


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def config_dir() -> Path:
    """`config/` of the checkout (YAML and templates), or `$CLUBS_CONFIG_DIR` in a deployment."""
    env = os.environ.get(CONFIG_DIR_ENV)
    return Path(env) if env else project_root() / "config"
