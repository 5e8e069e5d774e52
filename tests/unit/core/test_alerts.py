"""The shipped Prometheus alerts name only metrics the code exports, with labels they have."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import clubs.bots.botmetrics
import clubs.bridge.bridgemetrics
import clubs.provisioning.service
from clubs.core.metrics import REGISTRY

ALERTS = Path(__file__).resolve().parents[3] / "config" / "prometheus" / "alerts.yml"
SUFFIXES = ("_bucket", "_sum", "_count")


def _rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _exported(name: str) -> tuple[str, str] | None:
    kinds = {n: kind for n, (kind, _) in REGISTRY.kinds().items()}
    if name in kinds:
        return name, kinds[name]
    for suffix in SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and kinds.get(base) == "histogram":
            return base, "histogram"
    return None


def test_every_alert_names_exported_metrics_and_labels() -> None:
    assert clubs.bots.botmetrics.COMMANDS
    assert clubs.provisioning.service.REQUESTS
    assert clubs.bridge.bridgemetrics.EVENTS
    rules = _rules()
    assert {r["alert"] for r in rules} >= {
        "ClubsBotSilent",
        "ClubsBotNotReady",
        "ClubsProvisioningDrift",
    }
    for rule in rules:
        expr = str(rule["expr"])
        names = re.findall(r"\bclubs_[a-z_]+", expr)
        assert names, f"{rule['alert']}: names no clubs metric"
        for name in names:
            found = _exported(name)
            assert found, f"{rule['alert']}: {name} is not exported"
            base, kind = found
            if kind == "histogram":
                assert name != base, f"{rule['alert']}: use {base}_bucket with a histogram"
        labels = set(re.findall(r"\b([a-z_]+)\s*(?:=~|!=|=)\s*\"", expr))
        labels |= {
            label.strip()
            for group in re.findall(r"by \(([^)]*)\)", expr)
            for label in group.split(",")
        }
        labels |= set(re.findall(r"\$labels\.([a-z_]+)", str(rule.get("annotations", ""))))
        known = {"le"} | {label for _, labels in REGISTRY.kinds().values() for label in labels}
        assert labels <= known, f"{rule['alert']}: unknown labels {labels - known}"
        assert rule.get("labels", {}).get("severity") in ("page", "warn")  # type: ignore[union-attr]
