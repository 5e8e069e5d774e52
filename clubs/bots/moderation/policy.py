"""Moderation policy lists (spec "Moderation policy lists"): parsing and matching, no I/O.

A policy room holds state events `m.policy.rule.user|server|room` with `{entity, recommendation,
reason}`; `entity` is a glob (`*` any run, `?` one character). A rule is removed by sending empty
content under the same type and state key. MSC4205 lets a rule carry `hashes: {sha256: …}` (the
unpadded base64 SHA-256 of the entity) instead of the entity, so a list can ban someone without
publishing whom it bans.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

RuleKind = Literal["user", "server", "room"]

_TYPES: dict[str, RuleKind] = {}
for _prefix in ("m.policy.rule.", "m.room.rule.", "org.matrix.mjolnir.rule."):
    for _kind in ("user", "server", "room"):
        _TYPES[_prefix + _kind] = _kind
BAN_RECOMMENDATIONS = frozenset({"m.ban", "org.matrix.mjolnir.ban"})
RULE_TYPE: dict[RuleKind, str] = {k: f"m.policy.rule.{k}" for k in ("user", "server", "room")}


@dataclass(frozen=True)
class PolicyRule:
    kind: RuleKind
    state_key: str
    recommendation: str
    reason: str
    entity: str | None = None
    sha256: str | None = None

    @property
    def is_ban(self) -> bool:
        return self.recommendation in BAN_RECOMMENDATIONS

    def matches(self, entity: str) -> bool:
        if self.entity is not None:
            return _glob(self.entity).fullmatch(entity) is not None
        return self.sha256 is not None and entity_hash(entity) == self.sha256


def entity_hash(entity: str) -> str:
    """MSC4205: unpadded standard base64 of SHA-256 of the entity."""
    digest = hashlib.sha256(entity.encode("utf-8", "surrogatepass")).digest()
    return base64.b64encode(digest).decode().rstrip("=")


@lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        parts.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(parts), re.S)


def parse_rule(event_type: str, state_key: object, content: object) -> PolicyRule | None:
    """A rule from a state event, or None if it is not a rule, is removed, or is malformed."""
    kind = _TYPES.get(event_type)
    if kind is None or not isinstance(state_key, str) or not isinstance(content, Mapping):
        return None
    recommendation = content.get("recommendation")
    if not isinstance(recommendation, str):
        return None
    reason = content.get("reason")
    entity = content.get("entity")
    hashes = content.get("hashes") or content.get("org.matrix.msc4205.hashes")
    sha = hashes.get("sha256") if isinstance(hashes, Mapping) else None
    if not isinstance(entity, str) or not entity:
        entity = None
    if entity is None and not (isinstance(sha, str) and sha):
        return None
    return PolicyRule(
        kind=kind,
        state_key=state_key,
        recommendation=recommendation,
        reason=reason if isinstance(reason, str) else "",
        entity=entity,
        sha256=sha if isinstance(sha, str) and sha else None,
    )


def rule_content(entity: str, reason: str, *, hashed: bool = False) -> dict[str, Any]:
    """The content for a new ban rule (hashed: publish only the entity's SHA-256)."""
    if hashed:
        return {
            "recommendation": "m.ban",
            "reason": reason,
            "hashes": {"sha256": entity_hash(entity)},
        }
    return {"entity": entity, "recommendation": "m.ban", "reason": reason}


def rule_state_key(entity: str) -> str:
    """A state key that does not reveal the entity (its hash), stable for the same entity."""
    return "rule:" + entity_hash(entity)[:32]


@dataclass
class PolicySet:
    """The current rules of one or more policy rooms, updated event by event."""

    _rules: dict[tuple[str, str, str], PolicyRule] = field(default_factory=dict)

    def apply(self, room_id: str, event_type: str, state_key: object, content: object) -> bool:
        """Apply one state event. Returns whether the set of rules changed."""
        kind = _TYPES.get(event_type)
        if kind is None or not isinstance(state_key, str):
            return False
        key = (room_id, kind, state_key)
        rule = parse_rule(event_type, state_key, content)
        before = self._rules.get(key)
        if rule is None:
            return self._rules.pop(key, None) is not None
        self._rules[key] = rule
        return before != rule

    def __iter__(self) -> Iterator[PolicyRule]:
        return iter(self._rules.values())

    def __len__(self) -> int:
        return len(self._rules)

    def banning(self, user_id: str) -> PolicyRule | None:
        """The first ban rule that matches a user, by user id or by the user's server."""
        server = user_id.split(":", 1)[1] if ":" in user_id else ""
        for rule in self._rules.values():
            if not rule.is_ban:
                continue
            if rule.kind == "user" and rule.matches(user_id):
                return rule
            if rule.kind == "server" and server and rule.matches(server):
                return rule
        return None
