"""The compiler: network model → `DesiredNetwork` (pure and deterministic; no network).

Shape: network space → country spaces → club spaces → club rooms, and cohort spaces under their
club space → cohort rooms. Every room and space gets, from its first event on: the pinned room
version, Megolm encryption, history visibility `joined` (spaces may use `invited`), guest access
forbidden, full power levels (spaces: events_default 100, so no messages in spaces), and its name,
topic, retention and club settings as state. Club rooms are restricted to their club space unless
declared invite-only; cohort spaces and rooms are invite-only.

Room names carry their club, since Element lists rooms without their space: every club room
(staff rooms included) is named by `defaults.room_name_format` («Общий · Алматы» by default) and
every cohort room by `defaults.cohort_room_name_format` («Группа · Весна»), from the room's own
name and its club's, country's and cohort's names (`model.room_name`). The network, country,
club and cohort spaces keep the names the file gives them. Renaming is an ordinary update of
`m.room.name` in `clubs plan`.

A staff room (`audience: staff`, a club's or cohort's moderators room) has only the club's staff
and the bots serving it as members, and says so in its locator (`"audience": "staff"`), which is
how the moderation bot knows where that club's reports may go. Other rooms' locators carry no
audience.

A club's moderation settings (network defaults with the club's own over them) go into its club
settings as a `moderation` object of flat keys, only those the YAML set; with none set, the club
settings are only the time zone, the language and the bots.

Each bot is a member of the rooms it works in only (`Bot.serves`; spaces only for a bot with
every room, the moderation bot by default), and the club settings of every club room and space
list the bots serving it (`bots`: their user ids, in the order of the file's `bots:`), so a bot
knows where it belongs and the first one answers the built-in commands there.

A club's `sessions` room carries the sessions the file declares for the club as one
`org.commclubs.sessions` state event (`sessions_content`), an empty list when it declares none:
state the planner compares whole, so a session removed from the file is removed from the room (an
ordinary update, like the club settings). It has no power level of its own (state_default), and
holds only what may be public: no venue, no call link.

A room the file bridges to Telegram (`bridge:`) also has the bridge's bot (`@tg_bridge`) as a
member at the bot level: it is invited (the application service receives the invitation and
joins, or refuses an encrypted room without its admins' consent and leaves; a bot that left on
its own is not invited again unless `--reinvite`).

A network with shards (`shards:`) has each room's bots on the accounts of the room's shard
(`Network.shard_of`: its club's, else its country's), the network's own accounts (`bots:`) in
the rest (the network space, countries and clubs no shard names); `DesiredNetwork.shard_bots`
lists the shards' accounts. Moving a club to another shard is then an ordinary plan: the new
shard's bots invited and given the levels, the old ones kicked and dropped from the levels.

Power levels list staff at their role's level and the bots in the room at the bot level; never
the creator (room version 12 gives the creator, the provisioner, infinite power and forbids
listing it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from clubs.bots.scheduling.recurrence import occurrence_key
from clubs.core.errors import ClubsError
from clubs.core.ids import MAX_ID_BYTES, is_server_name
from clubs.core.namespace import CLUB_SESSIONS, CLUB_SETTINGS
from clubs.provisioning.desired import (
    DesiredNetwork,
    DesiredPerson,
    DesiredRoom,
    JoinRule,
    Locator,
)
from clubs.provisioning.model import (
    BRIDGE_BOT_LOCALPART,
    SESSIONS_ROOM,
    STAFF_ROLES,
    Calls,
    Checkins,
    Club,
    Cohort,
    Country,
    Moderation,
    Network,
    Person,
    PowerLevels,
    Reminders,
    Room,
    Session,
    room_name,
)

SPACE_EVENTS_DEFAULT = 100


def resolve_mxid(mxid: str, server_name: str) -> str:
    """`@local` → `@local:server_name`; a full user id stays as it is."""
    full = mxid if ":" in mxid else f"{mxid}:{server_name}"
    if len(full.encode()) > MAX_ID_BYTES:
        raise ClubsError(f"user id {full} is longer than {MAX_ID_BYTES} bytes")
    return full


def compile_network(network: Network, server_name: str) -> DesiredNetwork:
    """The desired rooms, people and bots of a network on the homeserver `server_name`.

    A network of several servers (`servers:`) is compiled per server: its countries and the
    people they need (`network_on`); the bots are the accounts on the first server, invited
    into every server's rooms (docs/federation.md)."""
    if not is_server_name(server_name):
        raise ClubsError(f"not a server name: {server_name!r}")
    if network.servers:
        home = network.servers[0].server_name
        return _Compiler(network_on(network, server_name), server_name, bots_on=home).run()
    return _Compiler(network, server_name).run()


def network_on(network: Network, server_name: str) -> Network:
    """What the server `server_name` of a network with `servers:` hosts: its own countries (and
    a network space of its own above them), the people of their clubs, and the people whose
    accounts it holds. Accounts of other servers are invited, never created here."""
    here = network.server_named(server_name)
    if here is None:
        names = ", ".join(s.server_name for s in network.servers)
        raise ClubsError(
            f"this homeserver, {server_name}, is not one of the network's servers ({names}); "
            "apply the network to each of its servers with that server's name"
        )
    countries = tuple(c for c in network.countries if c.server == here.key)
    in_clubs = {k for country in countries for club in country.clubs for k in club.people()}
    people: list[Person] = []
    for person in network.people:
        mxid = resolve_mxid(person.mxid, server_name) if person.mxid else None
        local = mxid is not None and mxid.partition(":")[2] == server_name
        if person.key in in_clubs or local:
            people.append(
                person if mxid is None or local else replace(person, onboarding="existing")
            )
    return replace(network, countries=countries, people=tuple(people))


def moderation_content(moderation: Moderation) -> dict[str, Any]:
    """The `moderation` object of the club settings: the keys the YAML set, in the bot's units."""
    m = moderation
    values: dict[str, Any] = {
        "personal_data": m.personal_data,
        "flood_messages": m.flood_messages,
        "flood_window_s": m.flood_seconds,
        "mute_s": m.mute_minutes * 60 if m.mute_minutes is not None else None,
        "max_mentions": m.max_mentions,
        "join_wave_joins": m.join_wave_joins,
        "join_wave_window_s": m.join_wave_seconds,
        "new_member_hours": m.new_member_hours,
        "words": list(m.words) or None,
    }
    return {k: v for k, v in values.items() if v is not None}


def sessions_content(sessions: Iterable[Session]) -> dict[str, Any]:
    """The content of a club's `CLUB_SESSIONS` state: its sessions sorted by key."""
    return {
        "sessions": [
            {
                "key": s.key,
                "title": s.title,
                "kind": s.kind,
                "start": occurrence_key(s.start),
                "rrule": s.rrule,
                "duration_s": s.duration_s,
                "online": s.online,
                "capacity": s.capacity,
                "materials": s.materials,
                # Only when set: an entry's digest names its series, unchanged without one.
                **(
                    {"agenda": [{"title": t, "minutes": m} for t, m in s.agenda]}
                    if s.agenda
                    else {}
                ),
            }
            for s in sorted(sessions, key=lambda s: s.key)
        ]
    }


BOT_ROLES = {"moderation": "admin"}
"""The moderation bot mutes (power levels) and closes rooms in a raid (join rules): both are
events at the admin level, so it has the admin role; other bots have the bot role."""


class _Compiler:
    def __init__(self, network: Network, server_name: str, *, bots_on: str | None = None) -> None:
        self.net = network
        self.server_name = server_name
        self.mxids = {
            p.key: resolve_mxid(p.mxid, server_name) for p in network.people if p.mxid is not None
        }
        home = bots_on or server_name
        self.bots = {name: f"@{b.localpart}:{home}" for name, b in network.bots.items()}
        self.shard_bots = {
            shard.key: {name: f"@{b.localpart}:{home}" for name, b in shard.bots.items()}
            for shard in network.shards
        }
        self.space_bots = tuple(name for name, b in network.bots.items() if b.in_spaces)
        every_bot = {
            *self.bots.values(),
            *(m for s in self.shard_bots.values() for m in s.values()),
        }
        clash = set(self.mxids.values()) & every_bot
        if clash:
            raise ClubsError(f"people and bots share user ids: {', '.join(sorted(clash))}")
        self.rooms: list[DesiredRoom] = []

    def run(self) -> DesiredNetwork:
        net = self.net
        everyone = [p.key for p in net.people]
        self._add(
            "network",
            Locator(net.key, "network_space", net.key),
            net.name,
            net.topic,
            parent=None,
            members=self._members({k: self._level("member") for k in everyone}),
            bots=self.space_bots,
        )
        for i, country in enumerate(net.countries):
            self._country(country, i)
        people = tuple(self._person(p.key) for p in net.people)
        return DesiredNetwork(
            net.key,
            self.server_name,
            tuple(self.rooms),
            people,
            self.bots,
            identity_policy=net.defaults.identity_policy,
            shard_bots=self.shard_bots,
        )

    # --- the tree --------------------------------------------------------------------------

    def _country(self, country: Country, index: int) -> None:
        people = [k for club in country.clubs for k in club.people()]
        self._add(
            f"country:{country.key}",
            Locator(self.net.key, "country_space", country.key, country=country.key),
            country.name,
            None,
            parent="network",
            members=self._members({k: self._level("member") for k in people}),
            bots=self.space_bots,
            order=f"{index:03d}",
        )
        for i, club in enumerate(country.clubs):
            self._club(country, club, i)

    def _club(self, country: Country, club: Club, index: int) -> None:
        ref = f"club:{club.key}"
        levels = self._club_levels(club)
        members = self._members(levels)
        staff = [k for role in STAFF_ROLES for k in club.staff.get(role, ())]
        staff_members = self._members({k: levels[k] for k in staff})
        settings: dict[str, Any] = {
            "name": club.name,  # already public as the club space's name; bots show it by times
            "time_zone": club.time_zone,
            "language": club.language,
        }
        if moderation := moderation_content(club.moderation):
            settings["moderation"] = moderation
        if club.call_widget:
            settings["call_widget"] = True
        if club.cases.approval:
            # Read by the case library (clubs/bots/cases/clubconf.py); absent: no approval.
            settings["cases"] = {"approval": True}
        if club.checkins != Checkins():
            # Read by the check-ins bot (clubs/bots/checkins/clubconf.py); absent: its defaults.
            checkins: dict[str, Any] = {"keep_days": club.checkins.keep_days}
            if club.checkins.questions:
                checkins["questions"] = list(club.checkins.questions)
            settings["checkins"] = checkins
        own = {m.name for m in club.methods}
        methods = [m for m in self.net.defaults.methods if m.name not in own] + list(club.methods)
        if methods:
            # Read by the facilitation bot (clubs/bots/facilitation/clubconf.py).
            settings["methods"] = [m.content() for m in methods]
        calls = club.calls or self.net.defaults.calls
        if calls != Calls():
            settings["calls"] = {"provider": calls.provider, "jitsi_url": calls.jitsi_url}
        if club.reminders != Reminders():
            settings["reminders"] = {
                "before_s": list(club.reminders.before_s),
                "to": club.reminders.to,
            }

        def locator(kind: str, key: str, cohort: Cohort | None = None) -> Locator:
            return Locator(
                self.net.key,
                kind,
                key,
                country=country.key,
                club=club.key,
                cohort=cohort.key if cohort else None,
                state=cohort.state if cohort else "active",
            )

        self._add(
            ref,
            locator("club_space", club.key),
            club.name,
            club.topic,
            parent=f"country:{country.key}",
            members=members,
            bots=self.space_bots,
            order=f"{index:03d}",
            settings=settings,
        )
        d = self.net.defaults
        names = {"club": club.name, "country": country.name}
        sessions = {(CLUB_SESSIONS, ""): sessions_content(club.sessions)}
        for room in club.rooms:
            room_locator = locator("club_room", room.key)
            name = room_name(d.room_name_format, room=room.name, **names)
            self._room(
                f"{ref}/{room.key}",
                room_locator,
                room,
                name,
                ref,
                members,
                staff_members,
                settings,
                extra_state=sessions if room.key == SESSIONS_ROOM else None,
            )
        for i, cohort in enumerate(club.cohorts):
            cohort_ref = f"cohort:{club.key}/{cohort.key}"
            cohort_members = self._members({k: levels[k] for k in (*cohort.members, *staff)})
            self._add(
                cohort_ref,
                locator("cohort_space", cohort.key, cohort),
                cohort.name,
                cohort.topic,
                parent=ref,
                members=cohort_members,
                bots=self.space_bots,
                order=f"cohort-{i:03d}",  # after the club's rooms, which use digits
                settings=settings,
            )
            for room in cohort.rooms:
                room_locator = locator("cohort_room", room.key, cohort)
                room_ref = f"{cohort_ref}/{room.key}"
                name = room_name(
                    d.cohort_room_name_format, room=room.name, cohort=cohort.name, **names
                )
                self._room(
                    room_ref,
                    room_locator,
                    room,
                    name,
                    cohort_ref,
                    cohort_members,
                    staff_members,
                    settings,
                )

    def _room(
        self,
        ref: str,
        locator: Locator,
        room: Room,
        name: str,
        parent: str,
        members: Mapping[str, int],
        staff_members: Mapping[str, int],
        settings: Mapping[str, Any],
        extra_state: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    ) -> None:
        """A club or cohort room (named `name`, the formatted name): for `members`, or for
        `staff_members` if it is a staff room; `extra_state` is its own state (the sessions)."""
        restricted = room.join_rule == "restricted"
        if room.audience == "staff":
            locator = replace(locator, audience="staff")
            members = staff_members
        in_cohort = locator.cohort is not None
        if room.bridge is not None:  # the bridge's bot, invited like a member, at the bot level
            bridge_bot = f"@{BRIDGE_BOT_LOCALPART}:{self.server_name}"
            members = {**members, bridge_bot: self._level("bot")}
        self._add(
            ref,
            locator,
            name,
            room.topic,
            parent=parent,
            members=members,
            bots=tuple(
                name
                for name, bot in self.net.bots.items()
                if bot.serves(room.key, in_cohort=in_cohort)
            ),
            is_space=False,
            join_rule=room.join_rule,
            join_allow=(parent,) if restricted else (),
            history_visibility=room.history_visibility,
            power=room.power_levels,
            order=room.order,
            suggested=room.suggested,
            private_description=room.private_description,
            settings=settings,
            extra_state=extra_state,
        )

    def _add(
        self,
        ref: str,
        locator: Locator,
        name: str,
        topic: str | None,
        *,
        parent: str | None,
        members: Mapping[str, int],
        bots: Iterable[str],
        is_space: bool = True,
        join_rule: JoinRule = "invite",
        join_allow: tuple[str, ...] = (),
        history_visibility: str | None = None,
        power: PowerLevels | None = None,
        order: str | None = None,
        suggested: bool = False,
        private_description: str | None = None,
        settings: Mapping[str, Any] | None = None,
        extra_state: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    ) -> None:
        d = self.net.defaults
        bots = tuple(bots)
        shard = self.net.shard_of(locator.country, locator.club)
        accounts = self.bots if shard is None else self.shard_bots[shard.key]
        members = {
            **members,
            **{accounts[name]: self._level(BOT_ROLES.get(name, "bot")) for name in bots},
        }
        members = dict(sorted(members.items()))
        if history_visibility is None:
            history_visibility = d.space_history_visibility if is_space else d.history_visibility
        state: dict[tuple[str, str], Mapping[str, Any]] = {
            ("m.room.encryption", ""): {
                "algorithm": d.encryption.algorithm,
                "rotation_period_ms": d.encryption.rotation_period_ms,
                "rotation_period_msgs": d.encryption.rotation_period_msgs,
            },
            ("m.room.history_visibility", ""): {"history_visibility": history_visibility},
            ("m.room.guest_access", ""): {"guest_access": d.guest_access},
            ("m.room.name", ""): {"name": name},
        }
        if topic:
            state[("m.room.topic", "")] = {"topic": topic}
        if d.retention_ms is not None:
            state[("m.room.retention", "")] = {"max_lifetime": d.retention_ms}
        if settings is not None:
            state[(CLUB_SETTINGS, "")] = {**settings, "bots": [accounts[name] for name in bots]}
        state.update(extra_state or {})
        self.rooms.append(
            DesiredRoom(
                ref=ref,
                locator=locator,
                name=name,
                topic=topic,
                is_space=is_space,
                parent_ref=parent,
                room_version=d.room_version,
                join_rule=join_rule,
                join_allow_refs=join_allow,
                state=state,
                power_levels=self._power_levels(power or PowerLevels(), members, is_space),
                members=members,
                order=order,
                suggested=suggested,
                private_description=private_description,
                federate=d.federate,
            )
        )

    # --- people and power ------------------------------------------------------------------

    def _level(self, role: str) -> int:
        return self.net.roles[role]

    def _club_levels(self, club: Club) -> dict[str, int]:
        """Person key → power level in the club: the highest of their roles."""
        levels = {k: self._level("member") for k in club.members}
        for role in STAFF_ROLES:
            for k in club.staff.get(role, ()):
                levels[k] = max(levels.get(k, self._level(role)), self._level(role))
        return levels

    def _members(self, levels: Mapping[str, int]) -> dict[str, int]:
        """mxid → level for the people with a known mxid (the bots are added room by room)."""
        return {self.mxids[k]: level for k, level in levels.items() if k in self.mxids}

    def _power_levels(
        self, override: PowerLevels, members: Mapping[str, int], is_space: bool
    ) -> dict[str, Any]:
        pl = self.net.power_levels.merged(override)
        thresholds = dict(pl.thresholds)
        if is_space:
            thresholds["events_default"] = SPACE_EVENTS_DEFAULT
        default = thresholds["users_default"]
        return {
            "users": {mxid: level for mxid, level in members.items() if level != default},
            **thresholds,
            "notifications": dict(pl.notifications),
            "events": dict(pl.events),
        }

    def _person(self, key: str) -> DesiredPerson:
        person = self.net.person(key)
        clubs: list[str] = []
        cohorts: list[str] = []
        for _, club in self.net.clubs():
            if key in club.people():
                clubs.append(club.key)
            cohorts += [f"{club.key}/{c.key}" for c in club.cohorts if key in c.members]
        return DesiredPerson(
            key=key,
            mxid=self.mxids.get(key),
            display_name=person.display_name,
            onboarding=person.onboarding,
            clubs=tuple(clubs),
            cohorts=tuple(cohorts),
            join=person.join or self.net.defaults.join,
        )
