"""The compiled, desired shape of a network: what the planner compares with the homeserver.

This is the contract between the compiler (YAML model → `DesiredNetwork`, pure) and the planner
(`DesiredNetwork` + what discovery found → a plan). Everything here is plain frozen data with no
room ids: rooms refer to each other by `ref`, a stable identity inside the network, and the
planner substitutes room ids when it renders events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from clubs.core.namespace import LOCATOR_SCHEMA

JoinRule = Literal["invite", "restricted"]
OnboardingMode = Literal["token", "precreate", "existing"]
JoinMode = Literal["direct", "invite"]
"""How a person on the network's own homeserver gets into their rooms: joined by provisioning
(the admin API; the first login shows the club ready) or invited (each invitation accepted by
hand). People on other servers are always invited."""
IdentityPolicy = Literal["accept", "hold"]
"""What the bots do when a member's identity changes: accept it at once, or hold room keys back
from it until a moderator sends `!trust @user`."""
LifeState = Literal["active", "archived"]
Audience = Literal["members", "staff"]
"""Who a room is for: everyone of its club or cohort, or only the club's staff (and the bots)."""

# (event type, state key) pairs whose drift is a SECURITY finding and is reverted on apply.
SECURITY_STATE: frozenset[tuple[str, str]] = frozenset(
    {
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("m.room.encryption", ""),
    }
)
# Keys of m.room.power_levels that are thresholds (drift in them is SECURITY too).
POWER_THRESHOLDS: frozenset[str] = frozenset(
    {
        "users_default",
        "events_default",
        "state_default",
        "invite",
        "kick",
        "ban",
        "redact",
        "events",
        "notifications",
    }
)


@dataclass(frozen=True)
class Locator:
    """The content of the `org.commclubs.locator` state event (see clubs.core.namespace)."""

    network: str
    kind: str  # one of clubs.core.namespace.ROOM_KINDS
    key: str  # the room's key inside its parent ("general"), or the club/cohort/country key
    country: str | None = None
    club: str | None = None
    cohort: str | None = None
    state: LifeState = "active"
    schema: int = LOCATOR_SCHEMA
    audience: str | None = None
    """"staff" for a staff-only room; None (not written) for everyone's rooms."""

    def content(self) -> dict[str, Any]:
        c: dict[str, Any] = {
            "network": self.network,
            "kind": self.kind,
            "key": self.key,
            "schema": self.schema,
            "state": self.state,
        }
        for name in ("country", "club", "cohort", "audience"):
            value = getattr(self, name)
            if value is not None:
                c[name] = value
        return c


@dataclass(frozen=True)
class DesiredRoom:
    """One managed room or space, complete: everything the one createRoom call needs."""

    ref: str
    """Stable identity in the network: "network", "country:<c>", "club:<club>",
    "club:<club>/<room>", "cohort:<club>/<cohort>", "cohort:<club>/<cohort>/<room>"."""
    locator: Locator
    name: str
    topic: str | None
    is_space: bool
    parent_ref: str | None
    """The space this room is a child of (m.space.child in it, m.space.parent here)."""
    room_version: str
    join_rule: JoinRule
    join_allow_refs: tuple[str, ...] = ()
    """For "restricted": members of these rooms (by ref, normally the club space) may join."""
    state: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    """All other desired state, ref-free: m.room.encryption, m.room.history_visibility,
    m.room.guest_access, m.room.name, m.room.topic, m.room.retention, club settings…
    (not join rules, power levels, space edges or the locator: the planner renders those)."""
    power_levels: Mapping[str, Any] = field(default_factory=dict)
    """The full m.room.power_levels content, `users` included (the creator omitted on v12)."""
    members: Mapping[str, int] = field(default_factory=dict)
    """mxid → power level for everyone who should be in the room (people with a known mxid,
    staff and bots)."""
    order: str | None = None
    suggested: bool = False
    private_description: str | None = None
    """Posted as the first encrypted message and pinned (never put in state)."""
    federate: bool = False

    @property
    def life(self) -> LifeState:
        return self.locator.state


@dataclass(frozen=True)
class DesiredPerson:
    key: str
    mxid: str | None
    display_name: str | None
    onboarding: OnboardingMode
    clubs: tuple[str, ...]
    cohorts: tuple[str, ...] = ()  # "<club>/<cohort>"
    join: JoinMode = "invite"


@dataclass(frozen=True)
class DesiredNetwork:
    network: str
    server_name: str
    rooms: tuple[DesiredRoom, ...]
    """Ordered parents before children (network space, country spaces, club spaces, …)."""
    people: tuple[DesiredPerson, ...]
    bots: Mapping[str, str] = field(default_factory=dict)
    """bot name → mxid, for accounts the network declares (moderation, facilitation, …)."""
    identity_policy: IdentityPolicy = "accept"
    """The network's `defaults.identity_policy`, for every bot."""
    shard_bots: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """shard key → bot name → mxid: the accounts of the bots' shards (`shards:`), each invited
    only into its shard's rooms; `bots` serve the rest."""

    def bot_accounts(self) -> dict[str, str]:
        """Every bot account of the network, mxid → what it is ("moderation", or "moderation
        of shard kz")."""
        accounts = {mxid: name for name, mxid in self.bots.items()}
        for shard, bots in self.shard_bots.items():
            accounts.update({mxid: f"{name} of shard {shard}" for name, mxid in bots.items()})
        return accounts

    def room(self, ref: str) -> DesiredRoom:
        for r in self.rooms:
            if r.ref == ref:
                return r
        raise KeyError(ref)
