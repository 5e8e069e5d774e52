"""The planner: desired network + discovered snapshot → an ordered list of actions. Pure.

Rules:

- A missing room is one `createRoom` carrying everything security-relevant in `initial_state`
  (room version, creation content, encryption, join rules, history visibility, guest access, full
  power levels, `m.space.parent`, the locator), never with invites.
- Existing state is compared on the keys the network declares only, after filling the spec's
  defaults, so keys the server adds (`m.topic`, `historical`) never cause drift. Drift in join
  rules, guest access, history visibility, encryption or power thresholds is flagged SECURITY, and
  so is a locator's `audience` (a room wrongly marked "staff" would get a club's reports).
  A club's `moderation` settings are compared whole (a setting removed from the YAML is removed
  from the room); a change to them is an ordinary update.
- Members: add who is missing — a person on the network's own server is joined directly (the
  admin API), unless they or the network chose invitations (`join: invite`); everyone else is
  invited. A pending invitation of someone now joined directly is turned into the join. Never
  re-add someone who left on their own (unless `reinvite`); kick whoever is in a managed room
  without being declared.
- Bots: a network bot is in the rooms it is assigned to and no others. One in a room it no
  longer serves is kicked and its power level entry removed; one that left a room it serves on
  its own (a bot follows the room's club settings, which may have been older) is invited again.
- A room whose club or cohort is archived is archived (invite-only, read-only, unlinked, locator
  marked); a managed room that is no longer declared is reported, and archived only with `prune`.
  Nothing is ever destroyed unless `destroy` is given.

Actions name rooms by ref. A room that does not exist yet is written as the placeholder
`<ref:REF>` in state keys and `room_id` fields, resolved to its id at apply time.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from clubs.core.namespace import BRIDGE_CONSENT, CLUB_SESSIONS, CLUB_SETTINGS, LOCATOR
from clubs.provisioning.actual import Actual, ActualRoom, StateKey, locator_ref
from clubs.provisioning.desired import (
    POWER_THRESHOLDS,
    SECURITY_STATE,
    DesiredNetwork,
    DesiredRoom,
)

ActionKind = Literal[
    "create_user",
    "issue_token",
    "create",
    "put_state",
    "space_child",
    "archive",
    "invite",
    "join",
    "kick",
    "destroy",
]

KICK_REASON = "removed by provisioner"

PL = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
SPACE_CHILD = "m.space.child"
SPACE_PARENT = "m.space.parent"

# Spec defaults of m.room.power_levels (used when a key is absent from the actual content).
PL_DEFAULTS: Mapping[str, Any] = {
    "users": {},
    "users_default": 0,
    "events": {},
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
    "notifications": {"room": 50},
}
# Keys of m.room.power_levels that are maps compared entry by entry.
PL_MAPS = ("users", "events", "notifications")
# Archived rooms are read-only for members.
ARCHIVED_EVENTS_DEFAULT = 50

_PLACEHOLDER = re.compile(r"<ref:(.+)>")


def placeholder(ref: str) -> str:
    return f"<ref:{ref}>"


def placeholder_ref(value: str) -> str | None:
    m = _PLACEHOLDER.fullmatch(value)
    return m.group(1) if m else None


@dataclass(frozen=True)
class Action:
    """One write. `ref` is the room written to (for create_user/issue_token: a person)."""

    kind: ActionKind
    ref: str
    event_type: str = ""
    state_key: str = ""
    content: Mapping[str, Any] = field(default_factory=dict)
    """State content; for `create` the whole createRoom body; for `create_user` the user body."""
    user_id: str = ""
    security: bool = False
    detail: str = ""
    """Human-readable: what differs ("join_rule: 'public' → 'invite'")."""
    needs: tuple[str, ...] = ()
    """Keys (`provides` of other actions) that must be done first."""

    @property
    def provides(self) -> str | None:
        if self.kind == "create":
            return f"room:{self.ref}"
        if self.kind == "create_user":
            return f"user:{self.user_id}"
        return None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "ref": self.ref}
        if self.event_type:
            d["type"] = self.event_type
            d["state_key"] = self.state_key
        if self.content or self.kind in ("put_state", "space_child", "archive"):
            d["content"] = _plain(self.content)
        if self.user_id:
            d["user_id"] = self.user_id
        if self.security:
            d["security"] = True
        if self.detail:
            d["detail"] = self.detail
        if self.needs:
            d["needs"] = list(self.needs)
        return d


@dataclass(frozen=True)
class Note:
    """Something reported but not acted on (left members, orphans, duplicates…)."""

    kind: str
    ref: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "ref": self.ref, "detail": self.detail}


@dataclass(frozen=True)
class Plan:
    network: str
    actions: tuple[Action, ...]
    notes: tuple[Note, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.actions

    @property
    def security(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.security)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.actions:
            out[a.kind] = out.get(a.kind, 0) + 1
        return out

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON of the actions: equal plans have equal hashes."""
        blob = json.dumps(
            [a.to_json() for a in self.actions],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "hash": self.hash,
            "changes": len(self.actions),
            "security": len(self.security),
            "counts": self.counts(),
            "actions": [a.to_json() for a in self.actions],
            "notes": [n.to_json() for n in self.notes],
        }


# --- rendering a desired room -----------------------------------------------------------------


class _Ids:
    """ref → room id where the room exists, else a placeholder."""

    def __init__(self, ids: Mapping[str, str]) -> None:
        self._ids = dict(ids)

    def __call__(self, ref: str) -> str:
        return self._ids.get(ref) or placeholder(ref)

    def known(self, ref: str) -> bool:
        return ref in self._ids


def join_rules_content(room: DesiredRoom, ids: _Ids) -> dict[str, Any]:
    if room.join_rule == "restricted":
        return {
            "join_rule": "restricted",
            "allow": [
                {"type": "m.room_membership", "room_id": ids(r)} for r in room.join_allow_refs
            ],
        }
    return {"join_rule": room.join_rule}


def space_child_content(room: DesiredRoom, server_name: str) -> dict[str, Any]:
    c: dict[str, Any] = {"via": [server_name], "suggested": room.suggested}
    if room.order is not None:
        c["order"] = room.order
    return c


def space_parent_content(server_name: str) -> dict[str, Any]:
    return {"via": [server_name], "canonical": True}


def desired_state(
    room: DesiredRoom, ids: _Ids, server_name: str
) -> dict[StateKey, Mapping[str, Any]]:
    """Every state event the room should have, in createRoom order (encryption first)."""
    out: dict[StateKey, Mapping[str, Any]] = {}
    enc = room.state.get(("m.room.encryption", ""))
    if enc is not None:
        out[("m.room.encryption", "")] = enc
    out[(PL, "")] = room.power_levels
    out[(JOIN_RULES, "")] = join_rules_content(room, ids)
    for key in (("m.room.history_visibility", ""), ("m.room.guest_access", "")):
        if key in room.state:
            out[key] = room.state[key]
    out[(LOCATOR, "")] = room.locator.content()
    if room.parent_ref is not None:
        out[(SPACE_PARENT, ids(room.parent_ref))] = space_parent_content(server_name)
    for key, content in room.state.items():
        if key not in out and key not in (("m.room.name", ""), ("m.room.topic", "")):
            out[key] = content
    out[("m.room.name", "")] = room.state.get(("m.room.name", ""), {"name": room.name})
    topic = room.state.get(("m.room.topic", ""))
    if topic is None and room.topic is not None:
        topic = {"topic": room.topic}
    if topic is not None:
        out[("m.room.topic", "")] = topic
    return out


def create_body(room: DesiredRoom, ids: _Ids, server_name: str) -> dict[str, Any]:
    """The one createRoom request: everything security-relevant, no invites."""
    creation: dict[str, Any] = {"m.federate": room.federate}
    if room.is_space:
        creation["type"] = "m.space"
    return {
        "preset": "private_chat",
        "visibility": "private",
        "room_version": room.room_version,
        "creation_content": creation,
        "power_level_content_override": _plain(room.power_levels),
        "initial_state": [
            {"type": t, "state_key": sk, "content": _plain(c)}
            for (t, sk), c in desired_state(room, ids, server_name).items()
            if t != PL  # sent as power_level_content_override: Synapse's first event after join
        ],
    }


# --- comparing --------------------------------------------------------------------------------


def _normalise(event_type: str, content: Mapping[str, Any] | None) -> Mapping[str, Any]:
    content = content or {}
    if event_type == "m.room.guest_access" and "guest_access" not in content:
        return {**content, "guest_access": "forbidden"}
    if event_type == PL:
        return {**PL_DEFAULTS, **content}
    if event_type == SPACE_CHILD and content.get("via") and "suggested" not in content:
        return {**content, "suggested": False}
    if event_type == LOCATOR and "audience" not in content:
        return {**content, "audience": "members"}  # compared even when not declared
    if event_type == CLUB_SETTINGS and "moderation" not in content:
        return {**content, "moderation": {}}  # compared even when none is set
    return content


def differing_keys(
    event_type: str,
    desired: Mapping[str, Any],
    actual: Mapping[str, Any] | None,
    *,
    prune: bool = False,
    drop: Collection[str] = (),
) -> list[str]:
    """The declared keys whose actual value differs (subset compare after defaults); power
    levels also differ while they list a user of `drop` (bots no longer in the room)."""
    want = _normalise(event_type, desired)
    have = _normalise(event_type, actual)
    if actual is None:
        return sorted(want) or ["(missing)"]
    diff = []
    for key, value in want.items():
        if event_type == PL and key in PL_MAPS and isinstance(value, Mapping):
            got = have.get(key)
            got = got if isinstance(got, Mapping) else {}
            if key == "users" and prune:
                if dict(got) != dict(value):
                    diff.append(key)
            else:
                stale = key == "users" and any(u in got and u not in value for u in drop)
                if stale or any(got.get(k) != v for k, v in value.items()):
                    diff.append(key)
        elif _plain(have.get(key)) != _plain(value):  # nested content compared whole
            diff.append(key)
    return diff


def merged_power_levels(
    desired: Mapping[str, Any],
    actual: Mapping[str, Any] | None,
    *,
    prune: bool = False,
    drop: Collection[str] = (),
) -> dict[str, Any]:
    """Read-modify-write: the actual content with the declared keys set (maps merged), the
    users of `drop` that the desired content does not list removed."""
    out: dict[str, Any] = _plain(actual or {})
    for key, value in desired.items():
        if key in PL_MAPS and isinstance(value, Mapping) and not (key == "users" and prune):
            base = out.get(key)
            merged = dict(base) if isinstance(base, Mapping) else {}
            if key == "users":
                merged = {u: v for u, v in merged.items() if u not in drop or u in value}
            merged.update(_plain(value))
            out[key] = merged
        else:
            out[key] = _plain(value)
    return out


def _is_security(event_type: str, state_key: str, keys: Iterable[str]) -> bool:
    if (event_type, state_key) in SECURITY_STATE:
        return True
    if event_type == LOCATOR:
        return "audience" in keys
    return event_type == PL and any(k in POWER_THRESHOLDS for k in keys)


def _describe(event_type: str, keys: list[str], want: Mapping[str, Any], have: Any) -> str:
    if have is None:
        return f"{event_type}: missing"
    have_n = _normalise(event_type, have)
    want_n = _normalise(event_type, want)
    parts = []
    for k in keys:
        if event_type == PL and k == "users":
            parts.append("users changed")  # no mxids in the one-line summary
        elif event_type == CLUB_SETTINGS and isinstance(want_n.get(k, have_n.get(k)), Mapping):
            parts += _changed_settings(k, have_n.get(k), want_n.get(k))
        elif event_type == CLUB_SESSIONS and k == "sessions":
            parts.append(_changed_sessions(have_n.get(k), want_n.get(k)))
        else:
            parts.append(f"{k}: {_shown(have_n.get(k))} → {_shown(want_n.get(k))}")
    return f"{event_type}: " + ", ".join(parts)


def _shown(value: Any) -> str:
    """A value as JSON, letters as they are (a Cyrillic name reads as a name)."""
    return json.dumps(value, ensure_ascii=False)


def _changed_sessions(have: Any, want: Any) -> str:
    """Declared sessions by their keys: which were added, removed or changed."""

    def by_key(items: Any) -> dict[str, Any]:
        if not isinstance(items, list):
            return {}
        return {str(i.get("key")): i for i in items if isinstance(i, Mapping)}

    old, new = by_key(have), by_key(want)
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(k for k in set(old) & set(new) if _plain(old[k]) != _plain(new[k]))
    said = [
        f"{word} {', '.join(keys)}"
        for word, keys in (("added", added), ("removed", removed), ("changed", changed))
        if keys
    ]
    return "sessions: " + ("; ".join(said) or "reordered")


def _changed_settings(name: str, have: Any, want: Any) -> list[str]:
    """A mapping's changed keys, one part each; a list only as changed (no word lists shown)."""
    if isinstance(have, Mapping) and isinstance(want, Mapping):
        return [
            part
            for k in sorted(set(have) | set(want))
            if _plain(have.get(k)) != _plain(want.get(k))
            for part in _changed_settings(f"{name}.{k}", have.get(k), want.get(k))
        ]
    if isinstance(have, list | tuple) or isinstance(want, list | tuple):
        return [f"{name} changed"]
    return [f"{name}: {json.dumps(have)} → {json.dumps(want)}"]


# --- the planner ------------------------------------------------------------------------------


def plan(
    desired: DesiredNetwork,
    actual: Actual,
    *,
    reinvite: bool = False,
    prune: bool = False,
    destroy: bool = False,
    bridged: Mapping[str, int] | None = None,
) -> Plan:
    """Compare and order: users and tokens → security fixes → creates (parents first) → other
    state and space edges → archives → invites → kicks → destroys.

    `bridged` (room ref → Telegram chat id, the network file's `bridge:` keys) adds a note per
    existing encrypted bridged room: whether its admins recorded consent to bridging."""
    server = desired.server_name
    me = actual.provisioner
    bot_names = desired.bot_accounts()
    actions: list[Action] = []
    notes: list[Note] = []

    for ref, dups in sorted(actual.duplicates.items()):
        notes.append(Note("duplicate", ref, f"{len(dups)} more room(s) carry this locator"))

    # People: accounts to precreate and registration tokens to issue.
    for person in desired.people:
        if person.onboarding == "precreate" and person.mxid and person.mxid not in actual.users:
            body: dict[str, Any] = {"user_type": None}
            if person.display_name:
                body["displayname"] = person.display_name
            actions.append(
                Action(
                    "create_user", person.key, user_id=person.mxid, content=body, detail="account"
                )
            )
        if person.onboarding == "token" and not person.mxid:
            status = actual.tokens.get(person.key)
            if status is None or status in ("expired", "revoked"):
                actions.append(Action("issue_token", person.key, detail="registration token"))
            elif status == "used":
                notes.append(
                    Note(
                        "registered",
                        person.key,
                        "token used: set this person's mxid in the network file to link them",
                    )
                )
    users_created = {a.user_id for a in actions if a.kind == "create_user"}
    joined_directly = {
        p.mxid
        for p in desired.people
        if p.mxid and p.join == "direct" and p.mxid.partition(":")[2] == server
    }

    for room in desired.rooms:
        if locator_ref(room.locator.content()) != room.ref:
            raise ValueError(f"{room.ref}: the ref does not match its locator")
    desired_by_ref = {room.ref: room for room in desired.rooms}
    matched = {ref: r for ref, r in actual.rooms.items() if ref in desired_by_ref}
    ids = _Ids(actual.room_ids())

    security: list[Action] = []
    creates: list[Action] = []
    updates: list[Action] = []
    archives: list[Action] = []
    invites: list[Action] = []
    kicks: list[Action] = []
    destroys: list[Action] = []

    active = {d.ref for d in desired.rooms if d.life == "active"}
    for room in desired.rooms:
        have = matched.get(room.ref)
        if room.life == "archived":
            if have is None:
                continue
            if destroy:
                destroys.append(Action("destroy", room.ref, detail="archived and --destroy"))
                continue
            archives += _archive(room.ref, have, _parent_of(have, desired, matched), ids)
            continue
        if room.parent_ref is not None and room.parent_ref not in active:
            notes.append(Note("invalid", room.ref, f"parent {room.parent_ref} is not active"))
            continue
        needs = tuple(
            f"room:{r}"
            for r in (room.parent_ref, *room.join_allow_refs)
            if r is not None and not ids.known(r)
        )
        if have is None:
            creates.append(
                Action(
                    "create",
                    room.ref,
                    content=create_body(room, ids, server),
                    detail=f"{room.locator.kind} {json.dumps(room.name, ensure_ascii=False)}",
                    needs=needs,
                )
            )
        else:
            _immutable(room, have, notes)
            drop = {b for b in bot_names if b not in room.members}
            for (etype, skey), want in desired_state(room, ids, server).items():
                got = have.state.get((etype, skey))
                diff = differing_keys(etype, want, got, prune=prune, drop=drop)
                if not diff:
                    continue
                content = (
                    merged_power_levels(want, got, prune=prune, drop=drop) if etype == PL else want
                )
                act = Action(
                    "put_state",
                    room.ref,
                    event_type=etype,
                    state_key=skey,
                    content=content,
                    security=_is_security(etype, skey, diff),
                    detail=_describe(etype, diff, want, got),
                    needs=needs,
                )
                (security if act.security else updates).append(act)
            # Stale edges: links to other managed rooms that are not (or no longer) declared.
            updates += _stale_edges(room, have, desired, matched, ids)
        # The child edge in the parent space.
        if room.parent_ref is not None:
            parent = matched.get(room.parent_ref)
            want_edge = space_child_content(room, server)
            child_key = ids(room.ref)
            got_edge = parent.state.get((SPACE_CHILD, child_key)) if parent else None
            diff = differing_keys(SPACE_CHILD, want_edge, got_edge)
            if diff:
                edge_needs = tuple(
                    f"room:{r}" for r in (room.parent_ref, room.ref) if not ids.known(r)
                )
                updates.append(
                    Action(
                        "space_child",
                        room.parent_ref,
                        event_type=SPACE_CHILD,
                        state_key=child_key,
                        content=want_edge,
                        detail=f"link {room.ref}",
                        needs=edge_needs,
                    )
                )
        # Members.
        members = have.members if have else {}
        for mxid in sorted(room.members):
            if mxid == me:
                continue
            m = members.get(mxid)
            user_needs = (f"user:{mxid}",) if mxid in users_created else ()
            room_needs = () if have else (f"room:{room.ref}",)
            kind: ActionKind = "join" if mxid in joined_directly else "invite"
            invite = Action(
                kind, room.ref, user_id=mxid, needs=room_needs + user_needs, detail=kind
            )
            if m is None or m.membership == "knock":
                invites.append(invite)
            elif m.membership == "invite" and kind == "join":
                invites.append(invite)  # an invitation from before: the join replaces it
            elif m.membership == "leave":
                if m.sender == mxid and mxid in bot_names:
                    invites.append(invite)  # a bot does not choose its rooms: its network does
                elif m.sender == mxid and not reinvite:
                    notes.append(
                        Note("left", room.ref, f"{mxid} left on their own; not added again")
                    )
                elif m.sender not in (mxid, me) and not reinvite:
                    notes.append(Note("kicked", room.ref, f"{mxid} was removed by {m.sender}"))
                else:
                    invites.append(invite)
            elif m.membership == "ban":
                notes.append(Note("banned", room.ref, f"{mxid} is banned; not invited"))
        for mxid, m in sorted(members.items()):
            if mxid == me or mxid in room.members or m.membership not in ("join", "invite"):
                continue
            detail = m.membership
            if mxid in bot_names:
                detail += f"; bot {bot_names[mxid]} does not serve this room"
            kicks.append(Action("kick", room.ref, user_id=mxid, detail=detail))

    # Managed rooms that are no longer declared.
    for key, have in sorted(actual.rooms.items()):
        if key in desired_by_ref or have.archived:
            continue
        if not prune:
            notes.append(Note("orphan", key, "not in the network file; --prune archives it"))
            continue
        if destroy:
            destroys.append(Action("destroy", key, detail="not declared, --prune --destroy"))
            continue
        parent = _parent_of(have, desired, matched, actual)
        archives += _archive(key, have, parent, ids)

    notes += _bridge_notes(bridged or {}, actual)

    ordered = (
        actions
        + security
        + _parents_first(creates)
        + updates
        + archives
        + invites
        + kicks
        + destroys
    )
    return Plan(desired.network, tuple(ordered), tuple(notes))


def _bridge_notes(bridged: Mapping[str, int], actual: Actual) -> list[Note]:
    """Encrypted bridged rooms: the Telegram bridge refuses them unless their admins consented
    (`org.commclubs.bridge_consent` for the same chat; the bridge also checks its writer)."""
    notes: list[Note] = []
    for ref, chat in sorted(bridged.items()):
        have = actual.rooms.get(ref)
        if have is None or have.archived or ("m.room.encryption", "") not in have.state:
            continue
        consent = have.state.get((BRIDGE_CONSENT, ""), {})
        if consent.get("telegram_chat") == chat:
            detail = (
                f"encrypted; consent to relay new messages to Telegram chat {chat} recorded by "
                f"{_shown(consent.get('by'))}"
            )
        else:
            room = ref.removeprefix("club:")
            detail = (
                f"encrypted and bridged to Telegram chat {chat} WITHOUT the admins' consent: "
                f"the bridge refuses it (clubs bridge consent --room {room} --yes)"
            )
        notes.append(Note("bridge", ref, detail))
    return notes


def _immutable(room: DesiredRoom, have: ActualRoom, notes: list[Note]) -> None:
    create = have.state.get(("m.room.create", ""), {})
    wrong = []
    if have.room_version != room.room_version:
        wrong.append(f"room_version {have.room_version} ≠ {room.room_version}")
    if have.is_space != room.is_space:
        wrong.append("space" if room.is_space else "not a space")
    if bool(create.get("m.federate", True)) != room.federate:
        wrong.append(f"m.federate ≠ {room.federate}")
    if wrong:
        notes.append(
            Note("replace_required", room.ref, "; ".join(wrong) + " (never changed automatically)")
        )


def _parent_of(
    have: ActualRoom,
    desired: DesiredNetwork,
    matched: Mapping[str, ActualRoom],
    actual: Actual | None = None,
) -> ActualRoom | None:
    """The managed space that currently links this room as a child, if any."""
    pool: Iterable[ActualRoom] = actual.rooms.values() if actual else matched.values()
    for space in pool:
        edge = space.state.get((SPACE_CHILD, have.room_id))
        if edge and edge.get("via"):
            return space
    return None


def _archive(ref: str, have: ActualRoom, parent: ActualRoom | None, ids: _Ids) -> list[Action]:
    """Invite-only, read-only, unlinked, locator marked archived (nothing purged, no kicks)."""
    out: list[Action] = []
    if have.state.get((JOIN_RULES, ""), {}).get("join_rule") != "invite":
        out.append(
            Action(
                "archive",
                ref,
                event_type=JOIN_RULES,
                state_key="",
                content={"join_rule": "invite"},
                detail="invite only",
            )
        )
    pl = have.state.get((PL, ""))
    if _normalise(PL, pl).get("events_default") != ARCHIVED_EVENTS_DEFAULT:
        out.append(
            Action(
                "archive",
                ref,
                event_type=PL,
                state_key="",
                content=merged_power_levels({"events_default": ARCHIVED_EVENTS_DEFAULT}, pl),
                detail="read-only",
            )
        )
    if parent is not None:
        parent_ref = parent.ref
        out.append(
            Action(
                "archive",
                parent_ref,
                event_type=SPACE_CHILD,
                state_key=have.room_id,
                content={},
                detail=f"unlink {ref}",
            )
        )
    locator = {**_plain(have.locator), "state": "archived"}
    if locator != have.locator:
        out.append(
            Action(
                "archive",
                ref,
                event_type=LOCATOR,
                state_key="",
                content=locator,
                detail="locator archived",
            )
        )
    return out


def _stale_edges(
    room: DesiredRoom,
    have: ActualRoom,
    desired: DesiredNetwork,
    matched: Mapping[str, ActualRoom],
    ids: _Ids,
) -> list[Action]:
    """Edges from/to managed rooms that the network no longer declares: removed with {}."""
    by_id: dict[str, str] = {r.room_id: ref for ref, r in matched.items()}
    out = []
    for (etype, skey), content in sorted(have.state.items()):
        if etype not in (SPACE_CHILD, SPACE_PARENT) or not content.get("via"):
            continue
        other = by_id.get(skey)
        if other is None:
            continue  # a link to a room we do not manage is not ours to remove
        other_room = desired.room(other)
        if other_room.life == "archived":
            continue  # archiving unlinks it
        if etype == SPACE_CHILD:
            keep = other_room.parent_ref == room.ref
        else:
            keep = room.parent_ref == other
        if not keep:
            out.append(
                Action(
                    "put_state",
                    room.ref,
                    event_type=etype,
                    state_key=skey,
                    content={},
                    detail=f"unlink {other}",
                )
            )
    return out


def _parents_first(creates: list[Action]) -> list[Action]:
    """Creates in dependency order (stable): a room after the rooms it needs."""
    done: set[str] = set()
    pending = list(creates)
    out: list[Action] = []
    while pending:
        ready = [a for a in pending if all(n in done for n in a.needs if n.startswith("room:"))]
        if not ready:  # a cycle or a dependency outside the plan: keep the given order
            ready = pending[:1]
        for a in ready:
            out.append(a)
            done.add(f"room:{a.ref}")
            pending.remove(a)
    return out


def _plain(value: Any) -> Any:
    """Deep copy of mappings/sequences into plain dicts/lists (JSON-ready)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --- rendering --------------------------------------------------------------------------------

_SIGNS = {
    "create_user": "+ account",
    "issue_token": "+ token",
    "create": "+ create",
    "put_state": "~ update",
    "space_child": "~ link",
    "archive": "= archive",
    "invite": "+ invite",
    "join": "+ join",
    "kick": "- kick",
    "destroy": "x DESTROY",
}


def render_text(p: Plan) -> str:
    """The plan for a person: one line per action, SECURITY first-class, a summary last."""
    lines = []
    for a in p.actions:
        sign = "! SECURITY" if a.security else _SIGNS[a.kind]
        target = a.ref
        if a.kind in ("invite", "join", "kick", "create_user"):
            target = f"{a.user_id} {'←' if a.kind == 'kick' else '→'} {a.ref}"
        silent = ("invite", "join", "create_user")
        detail = f": {a.detail}" if a.detail and a.kind not in silent else ""
        lines.append(f"{sign} {target}{detail}")
    for n in p.notes:
        lines.append(f"? {n.kind} {n.ref}: {n.detail}")
    lines.append(summary_line(p))
    return "\n".join(lines) + "\n"


def summary_line(p: Plan) -> str:
    if p.empty:
        return f"No changes: network {p.network} matches the homeserver."
    counts = p.counts()
    parts = [f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(counts.items())]
    sec = f", {len(p.security)} SECURITY" if p.security else ""
    return f"Plan: {len(p.actions)} change(s){sec} ({', '.join(parts)}); hash {p.hash[:12]}"


def render_json(p: Plan) -> str:
    return json.dumps(p.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
