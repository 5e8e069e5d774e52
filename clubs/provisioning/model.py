"""The network model: what exists, as config/network.yaml declares it (frozen, no Matrix ids).

`load.py` builds it (templates already expanded, defaults filled in), `lint.py` reads its texts,
`compile.py` turns it into the `DesiredNetwork` the planner works with.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

from clubs.core.namespace import CLUB_SESSIONS, CLUB_SETTINGS, LOCATOR
from clubs.core.yamlconf import Origin
from clubs.provisioning.desired import (
    Audience,
    IdentityPolicy,
    JoinMode,
    JoinRule,
    LifeState,
    OnboardingMode,
)

HistoryVisibility = Literal["joined", "invited"]
PersonalData = Literal["redact", "flag", "off"]
SessionKind = Literal["meeting", "lecture", "seminar", "training"]
SESSION_KINDS: tuple[SessionKind, ...] = ("meeting", "lecture", "seminar", "training")
SESSION_FORMATS = ("offline", "online")
SESSIONS_ROOM = "sessions"
"""The key of the club room where declared sessions are published (and the RSVP polls run)."""
SUPPORT_ROOM = "support"
"""The key of a club's peer-support room (never bridged, like the check-ins bot's rooms)."""
CASES_ROOM = "cases"
"""The key of a club's case library room: anonymous conversation cases (never bridged)."""
BridgeMode = Literal["mirror", "relay"]
BRIDGE_MODES: tuple[BridgeMode, ...] = ("mirror", "relay")
"""The key of the club room where declared sessions are published (and the RSVP polls run)."""

ROLES = ("admin", "moderator", "facilitator", "bot", "member")
STAFF_ROLES = ("admin", "moderator", "facilitator")
DEFAULT_ROLES: Mapping[str, int] = {
    "admin": 100,
    "moderator": 50,
    "facilitator": 50,
    "bot": 50,  # the moderation bot kicks and redacts
    "member": 0,
}
BOT_NAMES = ("moderation", "facilitation", "scheduling", "checkins")
ALL_ROOMS = "all"
"""`rooms: all` in a bot's entry: every managed room and space."""
THRESHOLDS = (
    "users_default",
    "events_default",
    "state_default",
    "invite",
    "kick",
    "ban",
    "redact",
)
MEGOLM = "m.megolm.v1.aes-sha2"

ROOM_NAME_FORMAT = "{room} · {club}"
"""How a club room is named by default: «Общий · Алматы». Element lists rooms without their
space, so a member of two clubs would otherwise see two «Общий»."""
COHORT_ROOM_NAME_FORMAT = "{room} · {cohort}"
"""How a cohort room is named by default: «Группа · Весна»."""
ROOM_NAME_MAX_BYTES = 255
"""The longest formatted room name (UTF-8 bytes), as for names written in the file."""
ROOM_NAME_FIELDS = ("room", "club", "country")
COHORT_ROOM_NAME_FIELDS = ("room", "club", "cohort", "country")
IDENTITY_POLICIES: tuple[IdentityPolicy, ...] = ("accept", "hold")

Origins = Mapping[str, Origin]
"""Where each text field (name, topic, …) was written, for located warnings."""


@dataclass(frozen=True)
class PowerLevels:
    """Power-level thresholds: the network's full set, or a room's overrides of it."""

    thresholds: Mapping[str, int] = field(default_factory=dict)
    events: Mapping[str, int] = field(default_factory=dict)
    notifications: Mapping[str, int] = field(default_factory=dict)

    def merged(self, override: PowerLevels) -> PowerLevels:
        return PowerLevels(
            {**self.thresholds, **override.thresholds},
            {**self.events, **override.events},
            {**self.notifications, **override.notifications},
        )


DEFAULT_POWER_LEVELS = PowerLevels(
    thresholds={
        "users_default": 0,
        "events_default": 0,
        "state_default": 50,
        "invite": 50,  # private_chat would let every member invite
        "kick": 50,
        "ban": 50,
        "redact": 50,
    },
    events={
        "m.room.power_levels": 100,
        "m.room.encryption": 100,
        "m.room.history_visibility": 100,
        "m.room.join_rules": 100,
        "m.room.guest_access": 100,
        "m.room.server_acl": 100,
        "m.room.tombstone": 150,  # v12: above every user, so only the creator can upgrade
        "m.space.child": 50,
        "m.space.parent": 100,
        "m.room.retention": 100,
        LOCATOR: 100,
        CLUB_SETTINGS: 100,
        CLUB_SESSIONS: 100,  # declared sessions: the network file's, not a facilitator's
    },
    notifications={"room": 50},
)


@dataclass(frozen=True)
class Encryption:
    algorithm: str = MEGOLM
    rotation_period_ms: int = 604_800_000  # one week, the spec's recommendation
    rotation_period_msgs: int = 100


@dataclass(frozen=True)
class Moderation:
    """A club's moderation settings as the YAML sets them; None (or no words) = the bot's default.

    They reach the moderation bot as the `moderation` object of the club settings state event:
    room state, not end-to-end encrypted, readable by the server and every member of the room.
    """

    personal_data: PersonalData | None = None
    flood_messages: int | None = None
    flood_seconds: int | None = None
    mute_minutes: int | None = None
    max_mentions: int | None = None
    join_wave_joins: int | None = None
    join_wave_seconds: int | None = None
    new_member_hours: int | None = None
    words: tuple[str, ...] = ()

    def over(self, base: Moderation) -> Moderation:
        """These settings on top of `base`, key by key; the word lists are joined (base first)."""
        merged = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in merged.items():
            if value is None:
                merged[name] = getattr(base, name)
        merged["words"] = tuple(dict.fromkeys((*base.words, *self.words)))
        return Moderation(**merged)


@dataclass(frozen=True)
class Calls:
    """Where online sessions meet: a room on a Jitsi server (a new one per session), or the
    sessions room's own Element Call."""

    provider: str = "jitsi"
    """`jitsi` or `element_call`."""
    jitsi_url: str = "https://meet.jit.si"
    """The Jitsi server (the network's own, self-hosted, is the better choice)."""


@dataclass(frozen=True)
class Method:
    """An exercise of a club's methods library (the `methods:` option), beside the
    facilitation bot's own: shown with `!method NAME`, usable as an agenda item."""

    name: str
    aliases: tuple[str, ...]
    title: tuple[tuple[str, str], ...]
    """(language, title) pairs; Russian always."""
    text: tuple[tuple[str, str], ...]

    def content(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "title": dict(self.title),
            "text": dict(self.text),
        }


@dataclass(frozen=True)
class Defaults:
    room_version: str = "12"
    encryption: Encryption = Encryption()
    history_visibility: HistoryVisibility = "joined"
    space_history_visibility: HistoryVisibility = "joined"
    guest_access: str = "forbidden"
    retention_ms: int | None = None
    language: str = "ru"
    time_zone: str = "UTC"
    federate: bool = False
    moderation: Moderation = Moderation()
    join: JoinMode = "direct"
    """Local people are joined to their rooms directly unless they (or this default) say invite."""
    room_name_format: str = ROOM_NAME_FORMAT
    """The Matrix name of a club room (`{room}`: its own name, `{club}`, `{country}`)."""
    cohort_room_name_format: str = COHORT_ROOM_NAME_FORMAT
    """The Matrix name of a cohort room (the same placeholders and `{cohort}`)."""
    identity_policy: IdentityPolicy = "accept"
    """What the bots do when a member's identity changes: `accept` it at once, or `hold` room
    keys back from it until a moderator sends `!trust @user`."""
    calls: Calls = Calls()
    """The call provider of online sessions, for every club that does not choose its own."""
    methods: tuple[Method, ...] = ()
    """Exercises every club's methods library has (a club's own come after them)."""


@dataclass(frozen=True)
class Bot:
    """A bot account and the rooms it works in (it is invited to those and no others).

    A room is served by the bot if its key is in `rooms` (club and cohort rooms alike), or if it
    is a cohort's room and `cohort_rooms` is set. `rooms` None means every managed room and
    space, the only way a bot is in spaces (the moderation bot's default: bans and server ACLs
    reach every managed room).
    """

    localpart: str
    rooms: frozenset[str] | None = None
    cohort_rooms: bool = False

    def serves(self, room_key: str, *, in_cohort: bool) -> bool:
        """Whether this bot works in the club or cohort room with this key."""
        if self.rooms is None:
            return True
        return room_key in self.rooms or (in_cohort and self.cohort_rooms)

    @property
    def in_spaces(self) -> bool:
        return self.rooms is None


DEFAULT_BOT_ROOMS: Mapping[str, Bot] = {
    "moderation": Bot(""),
    "scheduling": Bot("", frozenset({"announcements", "sessions"})),
    "facilitation": Bot("", frozenset({"sessions", "cases"}), cohort_rooms=True),  # + cohorts
    "checkins": Bot("", frozenset({"support"})),
}
"""Where each bot works unless its entry says `rooms:` (localparts left empty); any other bot
name: every room and space."""


@dataclass(frozen=True)
class Person:
    key: str
    """Stable and pseudonymous: never a real name."""
    mxid: str | None
    """As written: "@local:server", or "@local" for an account on the deployment's server."""
    display_name: str | None
    onboarding: OnboardingMode
    origins: Origins = field(default_factory=dict, compare=False, repr=False)
    join: JoinMode | None = None
    """`invite` for someone who wants to choose their rooms; None: the network's default."""


BRIDGE_BOT_LOCALPART = "tg_bridge"
"""The Telegram bridge's bot (an application-service user): the provisioner invites it into
every bridged room at the bot level (it invites Telegram users' ghosts and pins its notice)."""


@dataclass(frozen=True)
class TelegramBridge:
    """A room's Telegram chat (`bridge: {telegram: {chat, mode}}`): `mirror` posts the room's
    messages to the chat, one way; `relay` carries messages both ways."""

    chat: int
    """The chat id: negative for groups, `-100…` for supergroups and channels."""
    mode: BridgeMode = "mirror"


@dataclass(frozen=True)
class Room:
    key: str
    name: str
    topic: str | None
    join_rule: JoinRule
    history_visibility: HistoryVisibility
    power_levels: PowerLevels
    """Overrides of the network's power levels (e.g. events_default 50 in announcements)."""
    order: str | None = None
    suggested: bool = False
    private_description: str | None = None
    audience: Audience = "members"
    """"staff": only the club's staff and the bots are in it (a club's moderators room)."""
    origins: Origins = field(default_factory=dict, compare=False, repr=False)
    bridge: TelegramBridge | None = None
    """The Telegram chat this room is bridged to (club rooms only; never staff, support or
    cohort rooms)."""


@dataclass(frozen=True)
class Cohort:
    key: str
    name: str
    topic: str | None
    members: tuple[str, ...]
    """Person keys, all of them people of the club."""
    rooms: tuple[Room, ...]
    state: LifeState = "active"
    origins: Origins = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Session:
    """A meeting or a series of meetings a club declares in the network file (`sessions:`).

    The provisioner publishes it in the club's `sessions` room (`CLUB_SESSIONS` state), so a new
    club comes with its meetings. Only what may be public is here: no venue address and no call
    link, which the scheduling bot gets from a facilitator (or makes) and keeps out of state.
    """

    key: str
    """A slug, unique within the club."""
    title: str
    """Public, like room names: the privacy lint reads it."""
    when: str
    """The phrase as written («каждый четверг в 19:00»), read by `when.parse_when`."""
    start: datetime
    """The first occurrence: a naive wall time in the club's zone."""
    rrule: str | None
    """The RFC 5545 RRULE value; None for a one-off."""
    duration_s: int = 2 * 3600
    kind: SessionKind = "meeting"
    online: bool = False
    capacity: int | None = None
    """Places at an offline session; None: no limit."""
    materials: str | None = None
    """An https link."""
    agenda: tuple[tuple[str, int], ...] = ()
    """(title, minutes) items: the facilitation bot's agenda for a `!start` of an occurrence.
    Public like the title (the privacy lint reads the titles)."""
    origins: Origins = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Reminders:
    """When members are reminded of a session, and where (the club's `reminders:` option)."""

    before_s: tuple[int, ...] = (24 * 3600, 15 * 60)
    """How long before the start, longest first."""
    to: str = "dm"
    """`dm`: each person going or maybe gets a DM; `room`: one notice in the sessions room."""


@dataclass(frozen=True)
class Checkins:
    """A club's check-ins (the `checkins:` option): its own text questions after the mood poll
    and how long answers are kept. Published in the club settings the check-ins bot reads."""

    questions: tuple[str, ...] = ()
    """One to three questions; empty: the bot's default ones (ru/en)."""
    keep_days: int = 90


@dataclass(frozen=True)
class Cases:
    """A club's case library (the `cases:` option), published in the club settings the
    facilitation bot reads."""

    approval: bool = False
    """A chair (a facilitator of the club) approves each case before it is posted."""


@dataclass(frozen=True)
class Club:
    key: str
    """Unique in the network."""
    name: str
    topic: str | None
    time_zone: str
    language: str
    staff: Mapping[str, tuple[str, ...]]
    """Role (admin, moderator, facilitator) → person keys."""
    members: tuple[str, ...]
    rooms: tuple[Room, ...]
    cohorts: tuple[Cohort, ...] = ()
    moderation: Moderation = Moderation()
    """The network's defaults with the club's own settings over them."""
    origins: Origins = field(default_factory=dict, compare=False, repr=False)
    sessions: tuple[Session, ...] = ()
    """Declared sessions, in the order of the file; published in the `sessions` room."""
    call_widget: bool = False
    """Online sessions show their call as a widget in the sessions room (the call link then
    becomes room state, readable by the server): the club's choice, off by default."""
    reminders: Reminders = Reminders()
    calls: Calls | None = None
    """The club's own call provider (None: the network's)."""
    cases: Cases = Cases()
    methods: tuple[Method, ...] = ()
    """The club's own exercises (a name the network also uses replaces the network's)."""
    checkins: Checkins = Checkins()

    def people(self) -> tuple[str, ...]:
        """Everyone in the club, staff first, each once."""
        keys = [k for role in STAFF_ROLES for k in self.staff.get(role, ())] + list(self.members)
        return tuple(dict.fromkeys(keys))


@dataclass(frozen=True)
class Server:
    """One of the network's own homeservers (`servers:`); they federate with each other only."""

    key: str
    server_name: str
    """The part after ':' in its user ids; with a port (`kz.example:8448`) peers connect there."""
    url: str | None = None
    """Its client API, where `clubs apply` for its countries connects."""


@dataclass(frozen=True)
class Country:
    key: str
    name: str
    clubs: tuple[Club, ...]
    origins: Origins = field(default_factory=dict, compare=False, repr=False)
    server: str | None = None
    """The key of the server that hosts the country's spaces and rooms (None: the only one)."""


@dataclass(frozen=True)
class Shard:
    """A part of the network whose rooms one `clubs bots run --shard KEY` process serves, with
    bot accounts of its own (`shards:`). Its bots work in the same rooms of its clubs as the
    network's bots do elsewhere; they are never in a room of another shard or of none."""

    key: str
    countries: tuple[str, ...]
    """Country keys: every club of these countries, and the country spaces."""
    clubs: tuple[str, ...]
    """Club keys of countries no shard has whole."""
    bots: Mapping[str, Bot]
    """The network's bots (same names, same rooms, same order) on this shard's accounts: by
    default `<the bot's localpart>-<shard key>`, or as the shard's `accounts:` names them."""

    @property
    def keys(self) -> frozenset[str]:
        """Its country and club keys, as a room's locator names them (`clubs bots run`)."""
        return frozenset((*self.countries, *self.clubs))


@dataclass(frozen=True)
class Network:
    key: str
    """The network id, written into every locator."""
    name: str
    topic: str | None
    defaults: Defaults
    roles: Mapping[str, int]
    power_levels: PowerLevels
    """The full thresholds every room starts from."""
    bots: Mapping[str, Bot]
    """Bot name (moderation, facilitation, scheduling, checkins, …) → its account and rooms, in
    the order of the file (the first bot serving a room answers `!ping` and `!help` there)."""
    people: tuple[Person, ...]
    countries: tuple[Country, ...]
    extra_sensitive_words: tuple[str, ...] = ()
    version: int = 1
    origins: Origins = field(default_factory=dict, compare=False, repr=False)
    servers: tuple[Server, ...] = ()
    """The network's own homeservers, in the order of the file; empty: one server, no federation.
    The first one hosts the network's bots (docs/federation.md)."""
    shards: tuple[Shard, ...] = ()
    """Shards of the bots (`shards:`), in the order of the file; empty: one set of bot accounts
    for the whole network. Rooms of no shard (the network space, countries and clubs no shard
    names) are the network's own bots' (`bots:`), as without shards."""

    def shard_of(self, country: str | None, club: str | None = None) -> Shard | None:
        """The shard whose bots serve a room of this country (and club), or None: the
        network's own bots (`bots:`)."""
        for shard in self.shards:
            if (club is not None and club in shard.clubs) or country in shard.countries:
                return shard
        return None

    def server_named(self, server_name: str) -> Server | None:
        return next((s for s in self.servers if s.server_name == server_name), None)

    def allowlist(self, server_name: str) -> tuple[str, ...]:
        """The servers `server_name` federates with: every other server of the network."""
        return tuple(s.server_name for s in self.servers if s.server_name != server_name)

    def clubs(self) -> Iterator[tuple[Country, Club]]:
        for country in self.countries:
            for club in country.clubs:
                yield country, club

    def person(self, key: str) -> Person:
        for p in self.people:
            if p.key == key:
                return p
        raise KeyError(key)


def format_fields(fmt: str) -> list[str]:
    """The placeholders of a room name format, in order; ValueError for unbalanced braces, a
    conversion (`{room!r}`), a format spec (`{room:>9}`) or an empty `{}`."""
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        raise ValueError(
            "unbalanced braces (a placeholder is written {room}, a brace itself {{ or }})"
        ) from None
    names: list[str] = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"write {{{name}}} alone, without conversion or format spec")
        if not name:
            raise ValueError("an empty {} names nothing; placeholders are written like {room}")
        names.append(name)
    return names


def room_name(fmt: str, *, room: str, club: str, country: str, cohort: str | None = None) -> str:
    """A club or cohort room's Matrix name: `fmt` (already checked) with the room's own name and
    its club's, country's and cohort's names filled in. Spaces are never formatted."""
    values = {"room": room, "club": club, "country": country}
    if cohort is not None:
        values["cohort"] = cohort
    return fmt.format_map(values)
