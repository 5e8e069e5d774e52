"""Load config/network.yaml into the network model, reporting every problem at its place.

`load_network(path)` returns a `Network` or raises one `ConfigError` listing every problem of the
file (`file:line:col: path: expected …; got …`), before anything talks to a homeserver. Room
templates are expanded here: a club's rooms are `club_template.rooms` with the club's own `rooms`
entries applied by key (changing fields, merging power levels) or added.

A room is for everyone of its club or cohort (`audience: members`, the default) or only for the
club's staff (`audience: staff`, a moderators room). A staff room is invite-only: that is its
default join rule, and `restricted` is an error, since it would let every club member join.

A club's moderation settings are the network's `defaults.moderation` with the club's own
`moderation` over them, key by key (`flood` and `join_wave` too); the word lists are joined.

A bot is written `name: localpart` (it works in its default rooms, `model.DEFAULT_BOT_ROOMS`) or
`name: {localpart: …, rooms: […]}`, where `rooms` lists room keys (of the templates, a club or a
cohort; each names that room in every club and cohort having it) or is `all`. Room keys are
checked once the whole file is read.

`shards` (optional, read once the countries are known) split the bots by club across
processes: each names countries and clubs (each in one shard at most, a club never when its
country is in one), at least one club, and gets the network's bots on accounts of its own
(`<localpart>-<shard>`, or its `accounts:`), none of them another bot's or a person's.

Room names carry their club: `defaults.room_name_format` (`"{room} · {club}"` when absent) and
`defaults.cohort_room_name_format` (`"{room} · {cohort}"`) are checked here — known placeholders
only, balanced braces, `{room}` present — and so is every name they give (at most
`ROOM_NAME_MAX_BYTES`, reported at the club's or cohort's name); `compile.py` applies them.
`room_name_format: "{room}"` turns the feature off, for cohort rooms too unless the cohort
format is written.

A club's `sessions` are read here into `model.Session`s, with their time evaluated once and for
all so that compiling is deterministic: `when` is what the scheduling bot's `parse_when` reads,
against the wall time one minute before `from` (required for a repeating phrase, and for a
one-off without its year); a one-off that names its year is read against the start of that year.
The rule must pass `recurrence.check_rule`. Sessions are published in the club's `sessions`
room, so a club declaring some must have one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import cast

import yaml

from clubs.bots.facilitation import clubconf as methods_conf
from clubs.bots.facilitation.parse import duration as agenda_duration
from clubs.bots.scheduling.recurrence import RuleError, check_rule
from clubs.bots.scheduling.reminders import MAX_REMINDERS, REMINDER_MAX_S, REMINDER_MIN_S, TARGETS
from clubs.bots.scheduling.when import When, WhenError, parse_duration, parse_when
from clubs.bots.scheduling.widget import CALL_PROVIDERS, CALL_SERVICE
from clubs.core import checks
from clubs.core.ids import is_server_name
from clubs.core.yamlconf import (
    DEFAULT_LIMITS,
    STR,
    Fields,
    Limits,
    Node,
    Origin,
    describe,
    key_path,
    parse_yaml,
    read_yaml,
    shown,
)
from clubs.provisioning.desired import (
    Audience,
    IdentityPolicy,
    JoinMode,
    JoinRule,
    LifeState,
    OnboardingMode,
)
from clubs.provisioning.model import (
    ALL_ROOMS,
    BOT_NAMES,
    BRIDGE_MODES,
    CASES_ROOM,
    COHORT_ROOM_NAME_FIELDS,
    DEFAULT_BOT_ROOMS,
    DEFAULT_POWER_LEVELS,
    DEFAULT_ROLES,
    IDENTITY_POLICIES,
    MEGOLM,
    ROLES,
    ROOM_NAME_FIELDS,
    ROOM_NAME_FORMAT,
    ROOM_NAME_MAX_BYTES,
    SESSION_FORMATS,
    SESSION_KINDS,
    SESSIONS_ROOM,
    STAFF_ROLES,
    SUPPORT_ROOM,
    THRESHOLDS,
    Bot,
    BridgeMode,
    Calls,
    Cases,
    Checkins,
    Club,
    Cohort,
    Country,
    Defaults,
    Encryption,
    HistoryVisibility,
    Method,
    Moderation,
    Network,
    Person,
    PersonalData,
    PowerLevels,
    Reminders,
    Room,
    Server,
    Session,
    SessionKind,
    Shard,
    TelegramBridge,
    format_fields,
    room_name,
)

POWER_MAX = 2**53 - 1
TOPIC_MAX_BYTES = 1024
PRIVATE_DESCRIPTION_MAX_BYTES = 16 * 1024
HISTORY: tuple[HistoryVisibility, ...] = ("joined", "invited")
AUDIENCES: tuple[Audience, ...] = ("members", "staff")
CLUB_JOIN_RULES = ("invite", "restricted")
COHORT_JOIN_RULES = ("invite",)
JOIN_MODES = ("direct", "invite")
STAFF_RESTRICTED = (
    'a staff room must be invite-only: "restricted" would let every member of the club join it'
)
PERSONAL_DATA: tuple[PersonalData, ...] = ("redact", "flag", "off")
MODERATION_KEYS = (
    "personal_data",
    "flood",
    "mute_minutes",
    "max_mentions",
    "join_wave",
    "new_member_hours",
    "words",
)
WINDOW_COUNT = (2, 1000)
WINDOW_SECONDS = (1, 3600)
MUTE_MINUTES = (1, 7 * 24 * 60)
MAX_MENTIONS = (1, 100)
NEW_MEMBER_HOURS = (0, 720)
WORDS_MAX = 500
WORD_MAX_CHARS = 100
SESSION_KEYS = (
    "title",
    "when",
    "from",
    "duration",
    "kind",
    "format",
    "capacity",
    "materials",
    "agenda",
)
SESSION_TITLE_MAX_CHARS = 120
SESSION_AGENDA_MAX_ITEMS = 50
SESSION_ITEM_MAX_CHARS = 200
SESSION_ITEM_MINUTES = (1, 240)
"""As the facilitation bot's `!agenda add` takes them."""
"""As for a `!session` title (the scheduling bot's options.MAX_TITLE)."""
SESSION_CAPACITY = (1, 1000)
DEFAULT_SESSION_DURATION_S = 2 * 3600
_HTTPS_LINK = re.compile(r"https://[^\s<>\"']{3,500}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_YEAR_IN_PHRASE = re.compile(r"(?<![0-9])[0-9]{4}(?![0-9])")
_DURATION = re.compile(r"([1-9][0-9]{0,8})(ms|s|m|h|d|w)")
TELEGRAM_CHAT_MIN = -(10**15)
"""Telegram chat ids fit in 52 bits; groups are negative, supergroups and channels `-100…`."""
BRIDGE_IN_TEMPLATE = (
    "a bridge names one Telegram chat, so it is written in one club's rooms, not in a template"
)
BRIDGE_IN_COHORT = "cohort rooms are never bridged: what a cohort says stays on Matrix"
BRIDGE_STAFF = "a staff room (audience: staff) is never bridged"
BRIDGE_SUPPORT = "peer-support rooms are never bridged: what is said there stays on Matrix"
BRIDGE_CASES = "the case library room is never bridged: cases stay on Matrix"
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

name_text = checks.text()
MAX_CHECKIN_QUESTIONS = 3
_question_text = checks.text(300)
topic_text = checks.text(TOPIC_MAX_BYTES, multiline=True)
_word_text = checks.text(4 * WORD_MAX_CHARS)  # 4 bytes a character at most: chars are the limit


def load_network(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> Network:
    """Read and check a network file. Raises ConfigError with every problem found."""
    return _build(read_yaml(path, limits))


def parse_network(
    data: bytes | str, file: str = "<network>", limits: Limits = DEFAULT_LIMITS
) -> Network:
    """The same for a posted document (the HTTP service); `file` names it in messages."""
    return _build(parse_yaml(data, file, limits))


def _build(root: Node) -> Network:
    network = _Loader().network(root)
    root.report.raise_for_errors()
    return network


def duration_ms(value: str) -> int | None:
    """ "180d" → milliseconds; None if it is not a duration."""
    m = _DURATION.fullmatch(value)
    return int(m.group(1)) * _UNIT_MS[m.group(2)] if m else None


def _call_service(value: str) -> str | None:
    if not CALL_SERVICE.fullmatch(value):
        example = "https://meet.example.org"
        return f"expected an https URL of a Jitsi server like {example}; got {shown(value)}"
    return None


def _duration(value: str) -> str | None:
    if duration_ms(value) is None:
        return f"expected a duration like 180d, 12h, 30m or 2w; got {shown(value)}"
    return None


def _word(value: str) -> str | None:
    if len(value) > WORD_MAX_CHARS:
        return f"expected at most {WORD_MAX_CHARS} characters; got {len(value)} characters"
    return _word_text(value)


@dataclass(frozen=True)
class _RoomPatch:
    """A room entry as written: a template room, or a club's change or addition to it."""

    key: str
    at: Node
    name: str | None = None
    topic: str | None = None
    join_rule: JoinRule | None = None
    history_visibility: HistoryVisibility | None = None
    power_levels: PowerLevels = field(default_factory=PowerLevels)
    order: str | None = None
    suggested: bool | None = None
    private_description: str | None = None
    audience: Audience | None = None
    join_rule_at: Node | None = None
    audience_at: Node | None = None
    """Where join_rule and audience were written, to report a staff room that is restricted."""
    origins: Mapping[str, Origin] = field(default_factory=dict)
    bridge: TelegramBridge | None = None
    bridge_at: Node | None = None
    """Where `bridge` was written, to report a room that may not be bridged."""

    @property
    def restricted_staff_room(self) -> bool:
        return self.audience == "staff" and self.join_rule == "restricted"

    def over(self, base: _RoomPatch) -> _RoomPatch:
        """This entry applied on top of the template room with the same key."""
        merged = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in merged.items():
            if value is None:
                merged[name] = getattr(base, name)
        merged["power_levels"] = base.power_levels.merged(self.power_levels)
        merged["origins"] = {**base.origins, **self.origins}
        return _RoomPatch(**merged)


class _Loader:
    """One walk over the file; cross-references are checked as soon as both ends are known."""

    def __init__(self) -> None:
        self.defaults = Defaults()
        self.people: dict[str, Person] = {}
        self.club_lines: dict[str, int] = {}
        self.bot_room_keys: list[tuple[Node, str]] = []
        """Room keys as the bots' `rooms` lists wrote them, checked once every room is known."""
        self.servers: tuple[Server, ...] = ()
        self.federate_node: Node | None = None
        """`defaults.federate` as written (rooms of a network of several servers federate)."""
        self.bridges: list[tuple[Node, str, TelegramBridge]] = []
        """Bridged club rooms (where `bridge` was written, room key, chat), checked at the end
        against the check-ins bot's rooms and for chats named twice."""

    def network(self, root: Node) -> Network:
        f = root.mapping(
            required=("version", "network", "name"),
            optional=(
                "topic",
                "defaults",
                "roles",
                "power_levels",
                "bots",
                "people",
                "privacy",
                "club_template",
                "cohort_template",
                "countries",
                "servers",
                "shards",
            ),
        )
        version = f["version"].integer(low=1, high=1)
        key = f["network"].string(checks.slug)
        name = f["name"].string(name_text)
        topic = t.string(topic_text) if (t := f.get("topic")) else None
        if d := f.get("defaults"):
            self.defaults = self._defaults(d)
        power = DEFAULT_POWER_LEVELS
        if p := f.get("power_levels"):
            power = power.merged(self._power_levels(p))
        roles = self._roles(r, power) if (r := f.get("roles")) else dict(DEFAULT_ROLES)
        bots = self._bots(b) if (b := f.get("bots")) else {}
        self.servers = self._servers(s) if (s := f.get("servers")) else ()
        if len(self.servers) > 1:
            self._federate_across()
        people = self._people(p, bots) if (p := f.get("people")) else ()
        words: tuple[str, ...] = ()
        if p := f.get("privacy"):
            privacy = p.mapping(optional=("extra_sensitive_words",))
            if w := privacy.get("extra_sensitive_words"):
                words = tuple(item.string(name_text) for item in w.sequence())
        club_template = self._template(f.get("club_template"), CLUB_JOIN_RULES)
        cohort_template = self._template(
            f.get("cohort_template"), COHORT_JOIN_RULES, bridge_refused=BRIDGE_IN_COHORT
        )
        countries: list[Country] = []
        seen: dict[str, int] = {}
        for c in _items(f.get("countries")):
            countries.append(self._country(c, seen, club_template, cohort_template))
        self._check_bot_rooms(_room_keys(club_template, cohort_template, countries))
        self._check_bridges(bots)
        shards = self._shards(s, bots, people, countries) if (s := f.get("shards")) else ()
        return Network(
            key=key,
            name=name,
            topic=topic,
            defaults=self.defaults,
            roles=roles,
            power_levels=power,
            bots=bots,
            people=people,
            countries=tuple(countries),
            extra_sensitive_words=words,
            version=version,
            origins=_origins_of(f.values, "name", "topic"),
            servers=self.servers,
            shards=shards,
        )

    # --- network-wide settings -----------------------------------------------------------------

    def _defaults(self, node: Node) -> Defaults:
        d = Defaults()
        f = node.mapping(
            optional=(
                "room_version",
                "encryption",
                "history_visibility",
                "space_history_visibility",
                "guest_access",
                "retention",
                "language",
                "time_zone",
                "federate",
                "moderation",
                "join",
                "room_name_format",
                "cohort_room_name_format",
                "identity_policy",
                "calls",
                "methods",
            )
        )
        encryption = d.encryption
        if e := f.get("encryption"):
            ef = e.mapping(optional=("algorithm", "rotation_period_ms", "rotation_period_msgs"))
            encryption = Encryption(
                algorithm=a.choice((MEGOLM,)) if (a := ef.get("algorithm")) else MEGOLM,
                rotation_period_ms=(
                    ms.integer(low=1, high=POWER_MAX)
                    if (ms := ef.get("rotation_period_ms"))
                    else d.encryption.rotation_period_ms
                ),
                rotation_period_msgs=(
                    n.integer(low=1, high=POWER_MAX)
                    if (n := ef.get("rotation_period_msgs"))
                    else d.encryption.rotation_period_msgs
                ),
            )
        retention_ms = None
        if r := f.get("retention"):
            rf = r.mapping(required=("max_lifetime",))
            retention_ms = duration_ms(rf["max_lifetime"].string(_duration))
        history = d.history_visibility
        if h := f.get("history_visibility"):
            history = cast(HistoryVisibility, h.choice(HISTORY))
        space_history = history
        if h := f.get("space_history_visibility"):
            space_history = cast(HistoryVisibility, h.choice(HISTORY))
        room_format = d.room_name_format
        if n := f.get("room_name_format"):
            room_format = _name_format(n, ROOM_NAME_FIELDS) or room_format
        cohort_format = "{room}" if room_format == "{room}" else d.cohort_room_name_format
        if n := f.get("cohort_room_name_format"):
            cohort_format = _name_format(n, COHORT_ROOM_NAME_FIELDS) or cohort_format
        return Defaults(
            room_version=v.choice(("12",)) if (v := f.get("room_version")) else d.room_version,
            encryption=encryption,
            history_visibility=history,
            space_history_visibility=space_history,
            guest_access=g.choice(("forbidden",)) if (g := f.get("guest_access")) else "forbidden",
            retention_ms=retention_ms,
            language=lang.choice(("ru", "en")) if (lang := f.get("language")) else d.language,
            time_zone=tz.string(checks.time_zone) if (tz := f.get("time_zone")) else d.time_zone,
            federate=self._federate(f.get("federate"), d.federate),
            moderation=(
                self._moderation(m, d.moderation) if (m := f.get("moderation")) else d.moderation
            ),
            join=cast(JoinMode, j.choice(JOIN_MODES)) if (j := f.get("join")) else d.join,
            room_name_format=room_format,
            cohort_room_name_format=cohort_format,
            identity_policy=(
                cast(IdentityPolicy, i.choice(IDENTITY_POLICIES))
                if (i := f.get("identity_policy"))
                else d.identity_policy
            ),
            calls=self._calls(c, d.calls) if (c := f.get("calls")) else d.calls,
            methods=_methods(m) if (m := f.get("methods")) else (),
        )

    def _calls(self, node: Node, base: Calls) -> Calls:
        """`calls: {provider: jitsi|element_call, jitsi_url: https://…}`."""
        f = node.mapping(optional=("provider", "jitsi_url"))
        provider = p.choice(CALL_PROVIDERS) if (p := f.get("provider")) else base.provider
        url = u.string(_call_service) if (u := f.get("jitsi_url")) else base.jitsi_url
        return Calls(provider, url.rstrip("/"))

    def _moderation(self, node: Node, base: Moderation) -> Moderation:
        """A `moderation` mapping over `base` (the network's defaults, for a club)."""
        f = node.mapping(optional=MODERATION_KEYS)

        def number(n: Node | None, bounds: tuple[int, int]) -> int | None:
            return n.integer(low=bounds[0], high=bounds[1]) if n is not None else None

        def window(n: Node | None, count_key: str) -> tuple[int | None, int | None]:
            if n is None:
                return None, None
            w = n.mapping(optional=(count_key, "seconds"))
            return number(w.get(count_key), WINDOW_COUNT), number(w.get("seconds"), WINDOW_SECONDS)

        words: tuple[str, ...] = ()
        items: list[Node] = []
        if w := f.get("words"):
            items = w.sequence()
            if len(items) > WORDS_MAX:
                w.error(f"expected at most {WORDS_MAX} words; got {len(items)} words")
            words = tuple(dict.fromkeys(word for item in items if (word := item.string(_word))))
        flood_messages, flood_seconds = window(f.get("flood"), "messages")
        join_wave_joins, join_wave_seconds = window(f.get("join_wave"), "joins")
        own = Moderation(
            personal_data=(
                cast(PersonalData, p.choice(PERSONAL_DATA))
                if (p := f.get("personal_data"))
                else None
            ),
            flood_messages=flood_messages,
            flood_seconds=flood_seconds,
            mute_minutes=number(f.get("mute_minutes"), MUTE_MINUTES),
            max_mentions=number(f.get("max_mentions"), MAX_MENTIONS),
            join_wave_joins=join_wave_joins,
            join_wave_seconds=join_wave_seconds,
            new_member_hours=number(f.get("new_member_hours"), NEW_MEMBER_HOURS),
            words=words,
        )
        merged = own.over(base)
        if w is not None and len(items) <= WORDS_MAX < len(merged.words):
            w.error(
                f"expected at most {WORDS_MAX} words with those of defaults.moderation.words; "
                f"got {len(merged.words)} words"
            )
        return merged

    def _roles(self, node: Node, power: PowerLevels) -> dict[str, int]:
        f = node.mapping(optional=ROLES)
        roles = dict(DEFAULT_ROLES)
        roles.update({role: f[role].integer(low=0, high=100) for role in ROLES if role in f})
        needed = {k: power.thresholds[k] for k in ("kick", "ban", "redact")}
        if (bot := f.get("bot")) and any(roles["bot"] < level for level in needed.values()):
            levels = ", ".join(f"{k} ({v})" for k, v in needed.items())
            bot.error(f"bots moderate, so their level must reach {levels}; got {roles['bot']}")
        return roles

    def _power_levels(self, node: Node) -> PowerLevels:
        f = node.mapping(optional=(*THRESHOLDS, "events", "notifications"))

        def level(n: Node) -> int:
            return n.integer(low=-POWER_MAX, high=POWER_MAX)

        thresholds = {k: level(f[k]) for k in THRESHOLDS if k in f}
        events: dict[str, int] = {}
        if e := f.get("events"):
            for entry in e.entries():
                if message := checks.event_type(entry.key):
                    entry.at.error(message)
                events[entry.key] = level(entry.value)
        notifications: dict[str, int] = {}
        if n := f.get("notifications"):
            nf = n.mapping(optional=("room",))
            notifications = {"room": level(nf["room"])} if "room" in nf else {}
        return PowerLevels(thresholds, events, notifications)

    def _bots(self, node: Node) -> dict[str, Bot]:
        """Bot name → account and rooms, in the order of the file."""
        bots: dict[str, Bot] = {}
        for entry in node.entries():
            name, value = entry.key, entry.value
            if message := checks.slug(name):
                entry.at.error(message)
                continue
            close = difflib.get_close_matches(name, BOT_NAMES, n=1)
            if name not in BOT_NAMES and close:
                entry.at.error(
                    f'unknown bot; did you mean "{close[0]}"? '
                    "(a bot of another name works in every room)"
                )
                continue
            if value.is_null():
                continue
            bot = DEFAULT_BOT_ROOMS.get(name, Bot(""))
            at = value
            if isinstance(value.raw, yaml.MappingNode):
                f = value.mapping(required=("localpart",), optional=("rooms",))
                at = f["localpart"]
                if r := f.get("rooms"):
                    bot = Bot("", self._bot_rooms(r))
            elif value.is_list():
                value.error(
                    "expected a user name, or a mapping with localpart and rooms; "
                    f"got {describe(value.raw)}"
                )
                continue
            localpart = at.string(checks.localpart)
            if localpart and localpart in (b.localpart for b in bots.values()):
                at.error(f"{shown(localpart)} is already the account of another bot")
            bots[name] = replace(bot, localpart=localpart)
        return bots

    def _bot_rooms(self, node: Node) -> frozenset[str] | None:
        """A bot's `rooms`: `all` (None), or room keys (kept to be checked at the end)."""
        raw = node.raw
        if isinstance(raw, yaml.ScalarNode) and raw.tag == STR and raw.value == ALL_ROOMS:
            return None
        if not node.is_list():
            hint = ""
            if isinstance(raw, yaml.ScalarNode) and raw.tag == STR and not checks.slug(raw.value):
                hint = f" (one room: [{raw.value}])"
            node.error(f"expected all or a list of room keys; got {describe(raw)}{hint}")
            return None
        keys: list[str] = []
        for item in node.sequence():
            key = item.string(checks.slug)
            if not key:
                continue
            if key in keys:
                item.error(f"{shown(key)} is listed twice")
                continue
            keys.append(key)
            self.bot_room_keys.append((item, key))
        return frozenset(keys)

    def _check_bot_rooms(self, known: Collection[str]) -> None:
        for item, key in self.bot_room_keys:
            if key in known:
                continue
            if key == ALL_ROOMS:
                item.error('"all" is not a room key: write rooms: all, not in a list')
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f'did you mean "{close[0]}"?' if close else "no club or cohort has such a room"
            item.error(f"unknown room key {shown(key)}; {hint}")

    def _people(self, node: Node, bots: Mapping[str, Bot]) -> tuple[Person, ...]:
        seen: dict[str, int] = {}
        mxids: dict[str, str] = {}
        bot_localparts = {b.localpart for b in bots.values()}
        for item in node.sequence():
            f = item.mapping(
                required=("key",), optional=("mxid", "display_name", "onboarding", "join")
            )
            key = f["key"].string(checks.slug)
            if not _unique(f["key"], key, seen, "person"):
                continue
            mxid = None
            if m := f.get("mxid"):
                mxid = m.string(checks.user_id)
                if not mxid:
                    pass
                elif mxid in mxids:
                    m.error(f"{shown(mxid)} is already the user id of {shown(mxids[mxid])}")
                elif mxid[1:] in bot_localparts:
                    m.error(f"{shown(mxid)} is the account of a bot")
                elif problem := self._mxid_server(mxid):
                    m.error(problem)
                mxids[mxid] = key
            onboarding: OnboardingMode = "token"
            if o := f.get("onboarding"):
                onboarding = cast(OnboardingMode, o.choice(("token", "precreate", "existing")))
                if onboarding != "token" and mxid is None:
                    o.error(f"{shown(onboarding)} needs the person's mxid")
            display = d.string(name_text) if (d := f.get("display_name")) else None
            join = cast(JoinMode, j.choice(JOIN_MODES)) if (j := f.get("join")) else None
            self.people[key] = Person(
                key, mxid, display, onboarding, _origins_of(f.values, "display_name"), join
            )
        return tuple(self.people.values())

    def _template(
        self,
        node: Node | None,
        join_rules: tuple[str, ...],
        *,
        bridge_refused: str = BRIDGE_IN_TEMPLATE,
    ) -> dict[str, _RoomPatch]:
        if node is None:
            return {}
        f = node.mapping(optional=("rooms",))
        rooms: dict[str, _RoomPatch] = {}
        seen: dict[str, int] = {}
        for item in _items(f.get("rooms")):
            patch = self._room_patch(
                item, join_rules, name_required=True, bridge_refused=bridge_refused
            )
            if _unique(patch.at, patch.key, seen, "room"):
                rooms[patch.key] = patch
        return rooms

    # --- countries, clubs, cohorts, rooms ------------------------------------------------------

    def _country(
        self,
        node: Node,
        seen: dict[str, int],
        club_template: Mapping[str, _RoomPatch],
        cohort_template: Mapping[str, _RoomPatch],
    ) -> Country:
        f = node.mapping(required=("key", "name"), optional=("clubs", "server"))
        key = f["key"].string(checks.slug)
        _unique(f["key"], key, seen, "country")
        name = f["name"].string(name_text)
        clubs = tuple(
            self._club(c, name, club_template, cohort_template) for c in _items(f.get("clubs"))
        )
        return Country(key, name, clubs, _origins_of(f.values, "name"), self._country_server(f))

    # --- the bots' shards ----------------------------------------------------------------------

    def _shards(
        self,
        node: Node,
        bots: Mapping[str, Bot],
        people: Iterable[Person],
        countries: Iterable[Country],
    ) -> tuple[Shard, ...]:
        """`shards: {NAME: {countries: [...], clubs: [...], accounts: {bot: localpart}}}`.

        Each country and club is in one shard at most (a club not at all when its country is in
        a shard: the country's clubs come with it); a shard names at least one. Its bots are the
        network's, on accounts of their own: `<localpart>-<shard>` unless `accounts` names one,
        and no account is another bot's or a person's."""
        country_of = {club.key: c.key for c in countries for club in c.clubs}
        country_keys = [c.key for c in countries]
        owner: dict[str, tuple[str, int]] = {}
        """Country or club key → (its shard, the line that put it there)."""
        accounts = {b.localpart: f"the network's bot {shown(n)}" for n, b in bots.items()}
        """Localpart → whose account it is, for collisions."""
        people_ids = {p.mxid[1:]: p.key for p in people if p.mxid}
        shards: list[Shard] = []
        if not bots:
            node.error('shards need the network\'s bots: declare them under "bots" first')
            return ()
        for entry in node.entries():
            key = entry.key
            if message := checks.slug(key):
                entry.at.error(message)
                continue
            f = entry.value.mapping(optional=("countries", "clubs", "accounts"))
            listed: dict[str, list[str]] = {"countries": [], "clubs": []}
            written = 0
            for field_name, known in (("countries", country_keys), ("clubs", list(country_of))):
                what = "country" if field_name == "countries" else "club"
                for item in _items(f.get(field_name)):
                    written += 1
                    value = item.string(checks.slug)
                    if not value:
                        continue
                    if value not in known:
                        close = difflib.get_close_matches(value, known, n=1)
                        hint = f'did you mean "{close[0]}"?' if close else f"no {what} has it"
                        item.error(f"unknown {what} {shown(value)}; {hint}")
                        continue
                    if value in country_keys and value in country_of:
                        item.error(
                            f"{shown(value)} is the key of a country and of a club; the bots' "
                            "processes tell a shard's rooms by these keys: rename the club"
                        )
                        continue
                    if value in owner:
                        shard, line = owner[value]
                        where = "this shard" if shard == key else f"shard {shown(shard)}"
                        item.error(
                            f"{what} {shown(value)} is already in {where} (line {line}); "
                            f"a {what} is served by one shard"
                        )
                        continue
                    taken = [c for c, k in country_of.items() if k == value and c in owner]
                    if what == "country" and taken:
                        shard, line = owner[taken[0]]
                        where = "this shard" if shard == key else f"shard {shown(shard)}"
                        item.error(
                            f"country {shown(value)} has club {shown(taken[0])}, which {where} "
                            f"serves (line {line}); a club is served by one shard"
                        )
                        continue
                    country = country_of.get(value) if what == "club" else None
                    if country is not None and country in owner:
                        shard, line = owner[country]
                        where = "this shard" if shard == key else f"shard {shown(shard)}"
                        item.error(
                            f"club {shown(value)} is in country {shown(country)}, which "
                            f"{where} has whole (line {line}); a club is served by one shard: "
                            "list the country's clubs one by one instead"
                        )
                        continue
                    owner[value] = (key, item.origin.line)
                    listed[field_name].append(value)
            clubs_served = len(listed["clubs"]) + sum(
                1 for country in country_of.values() if country in listed["countries"]
            )
            if not written:
                entry.at.error("a shard serves at least one club: list countries or clubs under it")
            elif listed["countries"] and not clubs_served:
                f["countries"].error(
                    f"the shard serves no club: no club is declared in "
                    f"{', '.join(listed['countries'])} yet; a shard serves at least one club"
                )
            own: dict[str, Node] = {}
            if (a := f.get("accounts")) is not None:
                for account in a.entries():
                    if account.key not in bots:
                        known_bots = ", ".join(bots)
                        account.at.error(f"unknown bot; the network's bots are {known_bots}")
                        continue
                    own[account.key] = account.value
            shard_bots: dict[str, Bot] = {}
            for name, bot in bots.items():
                at = own.get(name)
                localpart = (
                    at.string(checks.localpart) if at is not None else f"{bot.localpart}-{key}"
                )
                at = at or entry.at
                if at is entry.at and (message := checks.localpart(localpart)):
                    at.error(f"bot {shown(name)}'s account here: {message}")
                    continue
                if not localpart:
                    continue
                if localpart in accounts:
                    at.error(
                        f"{shown(localpart)} would be the account of bot {shown(name)} in shard "
                        f"{shown(key)}, but it is already the account of {accounts[localpart]}"
                        + ("" if at is not entry.at else "; name another under accounts")
                    )
                elif localpart in people_ids:
                    at.error(
                        f"{shown(localpart)} would be the account of bot {shown(name)} in shard "
                        f"{shown(key)}, but it is person {shown(people_ids[localpart])}'s"
                    )
                accounts.setdefault(localpart, f"bot {shown(name)} in shard {shown(key)}")
                shard_bots[name] = replace(bot, localpart=localpart)
            shards.append(
                Shard(key, tuple(listed["countries"]), tuple(listed["clubs"]), shard_bots)
            )
        return tuple(shards)

    # --- the network's servers -----------------------------------------------------------------

    def _servers(self, node: Node) -> tuple[Server, ...]:
        servers: list[Server] = []
        names: dict[str, str] = {}
        for entry in node.entries():
            if message := checks.slug(entry.key):
                entry.at.error(message)
            f = entry.value.mapping(required=("server_name",), optional=("url",))
            server_name = f["server_name"].string(_server_name)
            if server_name and server_name in names:
                f["server_name"].error(
                    f"{shown(server_name)} is already the server of {shown(names[server_name])}"
                )
            names.setdefault(server_name, entry.key)
            url = u.string(_base_url) if (u := f.get("url")) else None
            servers.append(Server(entry.key, server_name, url))
        return tuple(servers)

    def _federate(self, node: Node | None, default: bool) -> bool:
        self.federate_node = node
        return node.boolean() if node is not None else default

    def _federate_across(self) -> None:
        """Members and bots of one server are in rooms of another: the rooms must federate."""
        if self.federate_node is not None and not self.defaults.federate:
            self.federate_node.error(
                "false keeps every room on the server that made it, but the network has "
                "several servers (servers:) whose people share rooms; leave it out or write true"
            )
        self.defaults = replace(self.defaults, federate=True)

    def _country_server(self, f: Fields) -> str | None:
        """The country's `server`: required once `servers` are declared, one of their keys."""
        keys = tuple(s.key for s in self.servers)
        written = f.get("server")
        if not keys:
            if written is not None:
                written.error('"server" needs the network\'s "servers" declared at the top')
            return None
        if written is None:
            f.node.error(
                f'missing required key "server": the network has servers ({", ".join(keys)}); '
                "say which one hosts this country"
            )
            return None
        return written.choice(keys)

    def _mxid_server(self, mxid: str) -> str | None:
        """What is wrong with a person's user id given the network's servers, or None."""
        if not self.servers:
            return None
        _, colon, server = mxid.partition(":")
        names = [s.server_name for s in self.servers]
        if not colon:
            if len(names) > 1:
                return (
                    f"{shown(mxid)} does not say which of the network's servers the account is "
                    f"on; write it in full, e.g. {shown(mxid + ':' + names[0])}"
                )
            return None
        if server not in names:
            return (
                f"{shown(mxid)} is on {server}, which is not one of the network's servers "
                f"({', '.join(names)}); they federate with nobody else, so it could never join"
            )
        return None

    def _club(
        self,
        node: Node,
        country: str,
        club_template: Mapping[str, _RoomPatch],
        cohort_template: Mapping[str, _RoomPatch],
    ) -> Club:
        f = node.mapping(
            required=("key", "name"),
            optional=(
                "topic",
                "time_zone",
                "language",
                "staff",
                "members",
                "rooms",
                "cohorts",
                "moderation",
                "sessions",
                "call_widget",
                "reminders",
                "calls",
                "checkins",
                "cases",
                "methods",
            ),
        )
        key = f["key"].string(checks.slug)
        _unique(f["key"], key, self.club_lines, "club")
        staff: dict[str, tuple[str, ...]] = {}
        if s := f.get("staff"):
            sf = s.mapping(optional=STAFF_ROLES)
            staff = {role: self._person_refs(sf[role]) for role in STAFF_ROLES if role in sf}
        members = self._person_refs(m) if (m := f.get("members")) else ()
        everyone: set[str] | None = {k for keys in staff.values() for k in keys} | set(members)
        if m is not None and not m.is_list():
            everyone = None  # unreadable members: do not report every cohort member as well
        name = f["name"].string(name_text)
        rooms = self._rooms(f.get("rooms"), club_template, "club_template", CLUB_JOIN_RULES)
        names = {"club": name, "country": country}
        d = self.defaults
        _check_room_names(f["name"], rooms, d.room_name_format, "room_name_format", names)
        seen: dict[str, int] = {}
        cohorts = [
            self._cohort(c, key, everyone, cohort_template, seen, names)
            for c in _items(f.get("cohorts"))
        ]
        return Club(
            key=key,
            name=name,
            topic=t.string(topic_text) if (t := f.get("topic")) else None,
            time_zone=tz.string(checks.time_zone) if (tz := f.get("time_zone")) else d.time_zone,
            language=lang.choice(("ru", "en")) if (lang := f.get("language")) else d.language,
            staff=staff,
            members=members,
            rooms=rooms,
            cohorts=tuple(cohorts),
            moderation=(
                self._moderation(mod, d.moderation)
                if (mod := f.get("moderation"))
                else d.moderation
            ),
            origins=_origins_of(f.values, "name", "topic"),
            sessions=self._sessions(f, rooms),
            call_widget=w.boolean() if (w := f.get("call_widget")) else False,
            reminders=self._reminders(r) if (r := f.get("reminders")) else Reminders(),
            calls=self._calls(c, d.calls) if (c := f.get("calls")) else None,
            checkins=self._checkins(c) if (c := f.get("checkins")) else Checkins(),
            cases=_cases(c) if (c := f.get("cases")) else Cases(),
            methods=_methods(m) if (m := f.get("methods")) else (),
        )

    def _checkins(self, node: Node) -> Checkins:
        """`checkins: {questions: [...], keep_days: 90}`: one to three questions asked after the
        mood poll (room state, so readable by the server: keep them general), answers kept 7 to
        365 days."""
        f = node.mapping(optional=("questions", "keep_days"))
        questions: tuple[str, ...] = ()
        if (q := f.get("questions")) is not None:
            items = q.sequence()
            if not 1 <= len(items) <= MAX_CHECKIN_QUESTIONS:
                q.error(
                    f"expected 1 to {MAX_CHECKIN_QUESTIONS} questions (the mood poll comes first)"
                )
            questions = tuple(item.string(_question_text) for item in items)
        keep = f["keep_days"].integer(low=7, high=365) if "keep_days" in f else 90
        return Checkins(questions, keep)

    def _reminders(self, node: Node) -> Reminders:
        """`reminders: {before: [24h, 15m], to: dm|room}`: one to four distinct lead times from
        five minutes to two weeks, and where they go."""
        f = node.mapping(optional=("before", "to"))
        before = Reminders().before_s
        if (b := f.get("before")) is not None:
            items = b.sequence()
            if not 1 <= len(items) <= MAX_REMINDERS:
                b.error(f"expected 1 to {MAX_REMINDERS} lead times, like [24h, 15m]")
            found: list[int] = []
            for item in items:
                ms = duration_ms(item.string(_duration))
                if ms is None:
                    continue
                if not REMINDER_MIN_S <= ms // 1000 <= REMINDER_MAX_S:
                    item.error("a reminder goes out from 5m to 14d before the start")
                elif ms // 1000 in found:
                    item.error("this lead time is listed twice")
                else:
                    found.append(ms // 1000)
            before = tuple(sorted(found, reverse=True)) or before
        to = t.choice(TARGETS) if (t := f.get("to")) else "dm"
        return Reminders(before, to)

    def _sessions(self, club: Fields, rooms: Iterable[Room]) -> tuple[Session, ...]:
        """The club's `sessions` list; reported at the `sessions:` key if it has no room to be
        published in."""
        node = club.get("sessions")
        items = _items(node)
        if node is None or not items:
            return ()
        if not any(r.key == SESSIONS_ROOM for r in rooms):
            _key_node(club.node, "sessions").error(
                f'sessions are published in the club\'s room with key "{SESSIONS_ROOM}", and '
                "this club has none: add one to its rooms (or to club_template)"
            )
        seen: dict[str, int] = {}
        sessions = []
        for item in items:
            f = item.mapping(required=("key", "title", "when"), optional=SESSION_KEYS)
            key = f["key"].string(checks.slug)
            session = self._session(f, key)
            if _unique(f["key"], key, seen, "session") and session is not None:
                sessions.append(session)
        return tuple(sessions)

    def _session(self, f: Fields, key: str) -> Session | None:
        """One entry of `sessions` (its key already read), or None if it was reported."""
        title = f["title"].string(_session_title)
        first = f.get("from")
        start = _session_from(first) if first is not None else None
        when = _session_when(f["when"], start, first)
        duration_s = DEFAULT_SESSION_DURATION_S
        if d := f.get("duration"):
            text = d.string()
            try:
                duration_s = parse_duration(text) if text else duration_s
            except WhenError as e:
                d.error(f"expected a duration like 2h, 90m or 1h30: {e}; got {shown(text)}")
        kind = cast(SessionKind, k.choice(SESSION_KINDS)) if (k := f.get("kind")) else "meeting"
        online = fm.choice(SESSION_FORMATS) == "online" if (fm := f.get("format")) else False
        capacity = None
        if c := f.get("capacity"):
            capacity = c.integer(low=SESSION_CAPACITY[0], high=SESSION_CAPACITY[1])
            if online:
                c.error(
                    "an online session has no capacity (places are counted for a venue); "
                    "remove capacity or write format: offline"
                )
        materials = m.string(_https_link) if (m := f.get("materials")) else None
        agenda = _session_agenda(a) if (a := f.get("agenda")) else ()
        if when is None:
            return None
        return Session(
            key=key,
            title=title,
            when=f["when"].string(),
            start=when.start,
            rrule=when.rrule,
            duration_s=duration_s,
            kind=kind,
            online=online,
            capacity=capacity,
            materials=materials,
            agenda=agenda,
            origins=_origins_of(f.values, "title", "agenda"),
        )

    def _cohort(
        self,
        node: Node,
        club: str,
        club_people: Collection[str] | None,
        template: Mapping[str, _RoomPatch],
        seen: dict[str, int],
        names: Mapping[str, str],
    ) -> Cohort:
        f = node.mapping(required=("key", "name"), optional=("topic", "members", "rooms", "state"))
        key = f["key"].string(checks.slug)
        _unique(f["key"], key, seen, "cohort")
        members: tuple[str, ...] = ()
        if m := f.get("members"):
            members = self._person_refs(m, within=club_people, club=club)
        name = f["name"].string(name_text)
        rooms = self._rooms(
            f.get("rooms"),
            template,
            "cohort_template",
            COHORT_JOIN_RULES,
            bridge_refused=BRIDGE_IN_COHORT,
        )
        fmt = self.defaults.cohort_room_name_format
        _check_room_names(
            f["name"], rooms, fmt, "cohort_room_name_format", {**names, "cohort": name}
        )
        return Cohort(
            key=key,
            name=name,
            topic=t.string(topic_text) if (t := f.get("topic")) else None,
            members=members,
            rooms=rooms,
            state=cast(LifeState, s.choice(("active", "archived")))
            if (s := f.get("state"))
            else "active",
            origins=_origins_of(f.values, "name", "topic"),
        )

    def _rooms(
        self,
        node: Node | None,
        template: Mapping[str, _RoomPatch],
        template_name: str,
        join_rules: tuple[str, ...],
        *,
        bridge_refused: str | None = None,
    ) -> tuple[Room, ...]:
        patches = dict(template)
        seen: dict[str, int] = {}
        for item in _items(node):
            patch = self._room_patch(
                item, join_rules, name_required=False, bridge_refused=bridge_refused
            )
            if not _unique(patch.at, patch.key, seen, "room"):
                continue
            base = patches.get(patch.key)
            if base is None and patch.name is None:
                item.error(
                    f'missing required key "name" (no room {shown(patch.key)} in {template_name})'
                )
            if base is None:
                patches[patch.key] = patch
                continue
            merged = patch.over(base)
            # One half of the conflict here, the other in the template (both halves in one entry
            # were reported where they were written).
            written_here = (patch.join_rule is None) != (patch.audience is None)
            if merged.restricted_staff_room and written_here:
                _staff_room_restricted(patch, base, template_name)
            patches[patch.key] = merged
        default: JoinRule = "restricted" if "restricted" in join_rules else "invite"
        for p in patches.values():
            if p.bridge is not None and p.bridge_at is not None and bridge_refused is None:
                if p.audience == "staff":
                    p.bridge_at.error(BRIDGE_STAFF)
                elif p.key == SUPPORT_ROOM:
                    p.bridge_at.error(BRIDGE_SUPPORT)
                elif p.key == CASES_ROOM:
                    p.bridge_at.error(BRIDGE_CASES)
                else:
                    self.bridges.append((p.bridge_at, p.key, p.bridge))
        return tuple(self._room(p, default) for p in patches.values())

    def _room_patch(
        self,
        node: Node,
        join_rules: tuple[str, ...],
        *,
        name_required: bool,
        bridge_refused: str | None = None,
    ) -> _RoomPatch:
        """A room entry; `bridge_refused` says why it may not carry `bridge` (None: it may)."""
        f = node.mapping(
            required=("key", "name") if name_required else ("key",),
            optional=(
                "name",
                "topic",
                "join_rule",
                "audience",
                "history_visibility",
                "power_levels",
                "order",
                "suggested",
                "private_description",
                "bridge",
            ),
        )
        bridge_at = f.get("bridge")
        bridge = None
        if bridge_at is not None:
            bridge = _bridge(bridge_at)
            if bridge_refused is not None:
                bridge_at.error(bridge_refused)
                bridge = None
        private_text = checks.text(PRIVATE_DESCRIPTION_MAX_BYTES, multiline=True)
        patch = _RoomPatch(
            key=f["key"].string(checks.slug),
            at=f["key"],
            name=n.string(name_text) if (n := f.get("name")) else None,
            topic=t.string(topic_text) if (t := f.get("topic")) else None,
            join_rule=cast(JoinRule, j.choice(join_rules)) if (j := f.get("join_rule")) else None,
            history_visibility=(
                cast(HistoryVisibility, h.choice(HISTORY))
                if (h := f.get("history_visibility"))
                else None
            ),
            power_levels=self._power_levels(p) if (p := f.get("power_levels")) else PowerLevels(),
            order=o.string(checks.order) if (o := f.get("order")) else None,
            suggested=s.boolean() if (s := f.get("suggested")) else None,
            private_description=(
                d.string(private_text) if (d := f.get("private_description")) else None
            ),
            audience=cast(Audience, a.choice(AUDIENCES)) if (a := f.get("audience")) else None,
            join_rule_at=f.get("join_rule"),
            audience_at=f.get("audience"),
            origins=_origins_of(f.values, "name", "topic"),
            bridge=bridge,
            bridge_at=bridge_at if bridge is not None else None,
        )
        if patch.restricted_staff_room and patch.join_rule_at is not None:
            patch.join_rule_at.error(STAFF_RESTRICTED)
        return patch

    def _room(self, patch: _RoomPatch, default_join_rule: JoinRule) -> Room:
        staff = patch.audience == "staff"
        return Room(
            key=patch.key,
            name=patch.name or "",
            topic=patch.topic,
            join_rule=patch.join_rule or ("invite" if staff else default_join_rule),
            history_visibility=patch.history_visibility or self.defaults.history_visibility,
            power_levels=patch.power_levels,
            order=patch.order,
            suggested=bool(patch.suggested),
            private_description=patch.private_description,
            audience=patch.audience or "members",
            origins=patch.origins,
            bridge=patch.bridge,
        )

    def _check_bridges(self, bots: Mapping[str, Bot]) -> None:
        """Refuse bridges of the check-ins bot's rooms (peer support) and chats named twice."""
        checkins = bots.get("checkins", DEFAULT_BOT_ROOMS["checkins"])
        chats: dict[int, int] = {}
        for at, key, bridge in sorted(self.bridges, key=lambda b: b[0].origin.line):
            if checkins.rooms is not None and key in checkins.rooms:
                at.error(f"{BRIDGE_SUPPORT} (the check-ins bot works in {shown(key)})")
            elif bridge.chat in chats:
                at.error(
                    f"Telegram chat {bridge.chat} is already bridged to another room "
                    f"(line {chats[bridge.chat]}); a chat is bridged to one room only"
                )
            else:
                chats[bridge.chat] = at.origin.line

    def _person_refs(
        self, node: Node, *, within: Collection[str] | None = None, club: str = ""
    ) -> tuple[str, ...]:
        keys: list[str] = []
        for item in node.sequence():
            key = item.string(checks.slug)
            if not key:
                continue
            if key not in self.people:
                item.error(f"unknown person {shown(key)}; people are declared under people")
            elif key in keys:
                item.error(f"{shown(key)} is listed twice")
            elif within is not None and key not in within:
                item.error(f"{shown(key)} is not in club {shown(club)}; add them to its members")
            else:
                keys.append(key)
        return tuple(keys)


def _cases(node: Node) -> Cases:
    """`cases: {approval: true}`: a chair approves each case before it is posted."""
    f = node.mapping(optional=("approval",))
    return Cases(approval=f["approval"].boolean() if "approval" in f else False)


def _bridge(node: Node) -> TelegramBridge | None:
    """`bridge: {telegram: {chat: -100…, mode: mirror|relay}}`, or None (reported)."""
    f = node.mapping(required=("telegram",))
    if "telegram" not in f:
        return None
    t = f["telegram"].mapping(required=("chat",), optional=("mode",))
    mode: BridgeMode = (
        cast(BridgeMode, m.choice(BRIDGE_MODES)) if (m := t.get("mode")) else "mirror"
    )
    if "chat" not in t:
        return None
    chat_at = t["chat"]
    problems = len(node.report.problems)
    chat = chat_at.integer()
    if len(node.report.problems) > problems:
        return None
    if not TELEGRAM_CHAT_MIN < chat < 0:
        hint = " (a positive id is a person's private chat)" if chat > 0 else ""
        chat_at.error(
            f"expected a Telegram group or channel id, a negative number like "
            f"-1001234567890{hint}; got {chat}"
        )
        return None
    return TelegramBridge(chat=chat, mode=mode)


def _server_name(value: str) -> str | None:
    if is_server_name(value):
        return None
    return (
        'expected a Matrix server name like "kz.clubs.example" or "kz.clubs.example:8448"; '
        f"got {shown(value)}"
    )


def _base_url(value: str) -> str | None:
    if re.fullmatch(r"https?://[^\s/?#]+/?", value):
        return None
    return (
        'expected the client API\'s base URL like "https://matrix.kz.clubs.example"; '
        f"got {shown(value)}"
    )


def _session_title(value: str) -> str | None:
    if len(value) > SESSION_TITLE_MAX_CHARS:
        return f"expected at most {SESSION_TITLE_MAX_CHARS} characters; got {len(value)} characters"
    return name_text(value)


def _session_agenda(node: Node) -> tuple[tuple[str, int], ...]:
    """`agenda: ["10m Круг: как прошла неделя", "30m method listening", "20m case 42"]`: each
    item a duration, then the title (as `!agenda add` takes them)."""
    items = node.sequence()
    if len(items) > SESSION_AGENDA_MAX_ITEMS:
        node.error(f"expected at most {SESSION_AGENDA_MAX_ITEMS} agenda items; got {len(items)}")
        return ()
    agenda = []
    low, high = SESSION_ITEM_MINUTES
    for item in items:
        text = " ".join(item.string().split())
        first, _, title = text.partition(" ")
        seconds = agenda_duration(first) if first and title else None
        if seconds is None:
            item.error(
                f'expected a duration, then a title, like "10m Introductions"; got {shown(text)}'
            )
            continue
        if not low * 60 <= seconds <= high * 60 or seconds % 60:
            item.error(f"expected whole minutes from {low} to {high}; got {shown(first)}")
            continue
        if len(title) > SESSION_ITEM_MAX_CHARS:
            item.error(
                f"expected a title of at most {SESSION_ITEM_MAX_CHARS} characters; "
                f"got {len(title)} characters"
            )
            continue
        agenda.append((title, seconds // 60))
    return tuple(agenda)


def _https_link(value: str) -> str | None:
    if _HTTPS_LINK.fullmatch(value):
        return None
    return f"expected an https:// link (no spaces, at most 500 characters); got {shown(value)}"


def _session_from(node: Node) -> date | None:
    """`from: 2026-12-01` (a YAML date, read as its text), or None (reported)."""
    text = node.string()
    if not text:
        return None
    try:
        if _ISO_DATE.fullmatch(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    node.error(f"expected a date like 2026-12-01; got {shown(text)}")
    return None


def _session_when(node: Node, first: date | None, first_at: Node | None) -> When | None:
    """A session's `when` read deterministically, or None (reported at `when`).

    With `from`, the phrase is read against the wall time one minute before that date (the first
    occurrence is the first match from that day on). Without it, a repeating phrase is refused,
    and so is a one-off that depends on today («10 декабря», «в четверг», «завтра»); a one-off
    that names its year is read against the start of that year, so it is never "in the past"
    when compiling (the bot simply never schedules a past one).
    """
    text = node.string()
    if not text or (first_at is not None and first is None):
        return None  # nothing to read, or `from` already reported
    if first is not None:
        now = datetime.combine(first, datetime.min.time()) - timedelta(minutes=1)
    elif year := _YEAR_IN_PHRASE.search(text):
        now = datetime(max(int(year.group()), 1900), 1, 1) - timedelta(minutes=1)
    else:
        now = datetime(2000, 1, 1)
    try:
        when = parse_when(text, now_local=now)
    except WhenError as e:
        after = f" (read from {first.isoformat()}, the date of from)" if first else ""
        node.error(f"not a time the scheduling bot reads: {e}{after}")
        return None
    if first is None and when.rrule is not None:
        node.error(
            "a repeating time needs from: the date its first occurrence is counted from "
            "(like from: 2026-12-01)"
        )
        return None
    if first is None and not _YEAR_IN_PHRASE.search(text):
        node.error(
            "a one-off time without its year depends on the day it is read: write the year "
            "(«10.12.2026 в 19:00») or from: the date it is counted from"
        )
        return None
    try:
        check_rule(when.rrule, when.start)
    except RuleError as e:
        node.error(f"a rule the scheduling bot does not run: {e}")
        return None
    return when


def _key_node(node: Node, key: str) -> Node:
    """The node of a mapping's key itself (for a problem about the key, not its value)."""
    for raw_key, _ in node.raw.value:
        if isinstance(raw_key, yaml.ScalarNode) and raw_key.value == key:
            return Node(raw_key, key_path(node.path, key), node.report, node.present)
    return node


def _name_format(node: Node, known: tuple[str, ...]) -> str | None:
    """A room name format, or None (reported) if it is not one: placeholders from `known`
    only, balanced braces, `{room}` present, and visible text like any name."""
    fmt = node.string(name_text)
    if not fmt or name_text(fmt):
        return None
    try:
        placeholders = format_fields(fmt)
    except ValueError as e:
        node.error(f"expected a room name format like {shown(ROOM_NAME_FORMAT)}: {e}")
        return None
    expected = ", ".join(f"{{{k}}}" for k in known)
    for name in placeholders:
        if name not in known:
            hint = ""
            if name == "cohort":
                hint = " ({cohort} names only cohort rooms: see cohort_room_name_format)"
            node.error(f"unknown placeholder {{{name}}}; expected {expected}{hint}")
            return None
    if "room" not in placeholders:
        node.error(
            "expected a format containing {room}, the room's own name (like "
            f"{shown(ROOM_NAME_FORMAT)}); got {shown(fmt)}"
        )
        return None
    return fmt


def _check_room_names(
    at: Node, rooms: Iterable[Room], fmt: str, setting: str, names: Mapping[str, str]
) -> None:
    """Report, at the club's or cohort's name, a room whose formatted name is too long."""
    if any(name_text(name) for name in names.values()):
        return  # a name already reported as wrong
    for room in rooms:
        if name_text(room.name):
            continue
        size = len(room_name(fmt, room=room.name, **names).encode())
        if size > ROOM_NAME_MAX_BYTES:
            at.error(
                f"room {shown(room.key)} would be named with {size} bytes by defaults.{setting}; "
                f"expected at most {ROOM_NAME_MAX_BYTES} bytes: shorten this name or the format"
            )


def _staff_room_restricted(patch: _RoomPatch, base: _RoomPatch, template_name: str) -> None:
    """Report a club's entry that makes its template room a restricted staff room."""
    if patch.join_rule_at is not None:
        patch.join_rule_at.error(STAFF_RESTRICTED)
    elif patch.audience_at is not None and base.join_rule_at is not None:
        line = base.join_rule_at.origin.line
        patch.audience_at.error(
            f"{STAFF_RESTRICTED} (join_rule: restricted in {template_name}, line {line}); "
            "set join_rule: invite here"
        )


def _room_keys(
    club_template: Mapping[str, _RoomPatch],
    cohort_template: Mapping[str, _RoomPatch],
    countries: Iterable[Country],
) -> set[str]:
    """Every room key the file declares: the templates', and every club's and cohort's."""
    keys = set(club_template) | set(cohort_template)
    for country in countries:
        for club in country.clubs:
            keys.update(r.key for r in club.rooms)
            keys.update(r.key for cohort in club.cohorts for r in cohort.rooms)
    return keys


def _method_name(value: str) -> str | None:
    if not methods_conf.NAME.fullmatch(value):
        return (
            f"expected one lowercase word of 2 to 30 letters, digits or hyphens; got {shown(value)}"
        )
    if methods_conf.taken(value):
        return f"{shown(value)} already names one of the bot's own exercises"
    return None


def _method_texts(node: Node, limit: int) -> tuple[tuple[str, str], ...]:
    """`{ru: …, en: …}`: Russian required, English optional, each at most `limit` characters."""
    f = node.mapping(required=("ru",), optional=("en",))

    def fits(value: str) -> str | None:
        if not value.strip() or len(value) > limit:
            return f"expected 1 to {limit} characters; got {len(value)}"
        return None

    return tuple((lang, f[lang].string(fits).strip()) for lang in ("ru", "en") if lang in f)


def _methods(node: Node) -> tuple[Method, ...]:
    """`methods: [{name, aliases: [...], title: {ru, en}, text: {ru, en}}]`: a club's (or, in
    `defaults`, every club's) own exercises for the facilitation bot's methods library."""
    items = node.sequence()
    if len(items) > methods_conf.MAX_METHODS:
        node.error(f"expected at most {methods_conf.MAX_METHODS} methods; got {len(items)}")
    seen: dict[str, int] = {}
    found = []
    for item in items:
        f = item.mapping(required=("name", "title", "text"), optional=("aliases",))
        name = f["name"].string(_method_name)
        _unique(f["name"], name, seen, "method")
        aliases = []
        if (a := f.get("aliases")) is not None:
            words = a.sequence()
            if len(words) > methods_conf.MAX_ALIASES:
                a.error(f"expected at most {methods_conf.MAX_ALIASES} aliases; got {len(words)}")
            for word in words:
                alias = word.string(_method_name)
                _unique(word, alias, seen, "method")
                aliases.append(alias)
        title = _method_texts(f["title"], methods_conf.MAX_TITLE_CHARS)
        text = _method_texts(f["text"], methods_conf.MAX_TEXT_CHARS)
        found.append(Method(name, tuple(aliases), title, text))
    return tuple(found)


def _unique(at: Node, key: str, seen: dict[str, int], what: str) -> bool:
    """Record `key`; report it at `at` if it was seen before. False for duplicates."""
    if not key:
        return False
    if key in seen:
        at.error(f"duplicate {what} key {shown(key)} (first at line {seen[key]})")
        return False
    seen[key] = at.origin.line
    return True


def _items(node: Node | None) -> list[Node]:
    """The items of an optional list (absent or null: none)."""
    return node.sequence() if node is not None else []


def _origins_of(values: Mapping[str, Node], *keys: str) -> dict[str, Origin]:
    return {k: values[k].origin for k in keys if k in values and not values[k].is_null()}
