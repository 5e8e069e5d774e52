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
from collections.abc import Iterable, Iterator, Mapping
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


def rule_kind(event_type: str) -> RuleKind | None:
    """The kind of a policy rule event type (`m.policy.rule.*` and the legacy spellings)."""
    return _TYPES.get(event_type)


def is_literal(entity: str) -> bool:
    """Whether a rule entity names exactly one thing (no glob characters)."""
    return "*" not in entity and "?" not in entity


@dataclass(frozen=True)
class PolicyAction:
    """What a change of the rules asks for: ban or unban one user across the managed rooms."""

    kind: Literal["ban", "unban"]
    user_id: str
    rule: PolicyRule
    """For a ban, the rule that now bans the user; for an unban, a rule that no longer does."""


def _bans(
    rules: Iterable[PolicyRule], user_id: str, protected: frozenset[str]
) -> PolicyRule | None:
    server = user_id.split(":", 1)[1] if ":" in user_id else ""
    for rule in rules:
        if not rule.is_ban:
            continue
        if rule.kind == "user" and rule.matches(user_id):
            return rule
        if rule.kind == "server" and server and server not in protected and rule.matches(server):
            return rule
    return None


def policy_actions(
    before: Iterable[PolicyRule],
    after: Iterable[PolicyRule],
    users: Iterable[str],
    *,
    protected_servers: frozenset[str] = frozenset(),
) -> list[PolicyAction]:
    """The bans and unbans that turn rule set `before` into `after` (pure).

    Candidates are the `users` the caller knows (members of managed rooms, people banned there)
    plus the literal user entities of the rules that changed, so a rule naming someone who never
    joined bans them pre-emptively. Only users matched by a changed rule are re-evaluated. Server
    rules never reach users of `protected_servers` (the network's own homeservers: a stray
    `*` server rule must not ban every member); user rules still do.
    """
    old, new = list(before), list(after)
    changed = set(old) ^ set(new)
    if not changed:
        return []
    candidates = dict.fromkeys(users)
    for rule in sorted(changed, key=lambda r: (r.kind, r.state_key)):
        if rule.kind == "user" and rule.entity is not None and is_literal(rule.entity):
            candidates.setdefault(rule.entity)
    actions: list[PolicyAction] = []
    for user in candidates:
        if _bans(changed, user, protected_servers) is None:
            continue
        was = _bans(old, user, protected_servers)
        now = _bans(new, user, protected_servers)
        if now is not None and was is None:
            actions.append(PolicyAction("ban", user, now))
        elif was is not None and now is None:
            actions.append(PolicyAction("unban", user, was))
    return actions


class PolicyWatcher:
    """Follows the policy rooms' state and says whom to ban or unban (pure, fed by the runtime).

    Feed it every state event seen in a watched policy room, from the initial `/state` and from
    the timeline, written by the bot or by a moderator with any other client; it keeps the
    current `PolicySet` and returns the actions the change implies. It never talks to the server.
    """

    def __init__(
        self,
        policy_rooms: Iterable[str],
        *,
        users: Iterable[str] = (),
        protected_servers: Iterable[str] = (),
    ) -> None:
        self.policy_rooms = set(policy_rooms)
        self.rules = PolicySet()
        self.users: set[str] = set(users)
        """Known users the glob, server and hashed rules are matched against."""
        self.protected_servers = frozenset(protected_servers)

    def watches(self, room_id: str) -> bool:
        return room_id in self.policy_rooms

    def note_users(self, users: Iterable[str]) -> list[PolicyAction]:
        """Learn of users (new members of managed rooms); returns bans for any already listed."""
        fresh = [u for u in users if u not in self.users]
        self.users.update(fresh)
        actions = []
        for user in fresh:
            rule = _bans(self.rules, user, self.protected_servers)
            if rule is not None:
                actions.append(PolicyAction("ban", user, rule))
        return actions

    def feed(self, room_id: str, events: Iterable[Mapping[str, Any]]) -> list[PolicyAction]:
        """Apply state events of one room (ignored unless it is a watched policy room)."""
        if not self.watches(room_id):
            return []
        before = list(self.rules)
        for event in events:
            if "state_key" not in event:
                continue
            self.rules.apply(
                room_id, str(event.get("type")), event.get("state_key"), event.get("content")
            )
        return policy_actions(
            before, self.rules, self.users, protected_servers=self.protected_servers
        )


def server_acl_denies(rules: Iterable[PolicyRule], protected: Iterable[str]) -> list[str]:
    """The `deny` list of the `m.room.server_acl` that the server ban rules ask for (pure).

    Only rules with a readable entity can go into an ACL (a hashed server rule still bans the
    users of that server the bot knows). A rule that matches one of the network's own servers
    is left out: an ACL denying our own server would lock every member out of the room."""
    own = frozenset(protected)
    denies = {
        rule.entity
        for rule in rules
        if rule.kind == "server"
        and rule.is_ban
        and rule.entity is not None
        and not any(rule.matches(server) for server in own)
    }
    return sorted(denies)


def server_acl_content(current: Mapping[str, Any] | None, deny: list[str]) -> dict[str, Any] | None:
    """The ACL a room should have for `deny`, or None if its current one already is that (or
    the room has none and nothing is denied). The bot owns `deny`; `allow` is kept as found."""
    if current is None or not current:
        if not deny:
            return None
        return {"allow": ["*"], "deny": deny, "allow_ip_literals": False}
    allow = current.get("allow")
    content = {
        **current,
        "allow": allow if isinstance(allow, list) else ["*"],
        "deny": deny,
        "allow_ip_literals": False,
    }
    return None if content == dict(current) else content
