"""What the scheduling bot keeps: series of sessions, changes to single occurrences, what was
announced where, and who holds a place at an offline session.

Everything a member or facilitator wrote (title, call link, venue address, materials link) is
sealed at rest; the rest is what the schedule needs (zone, wall time, rule, duration, capacity).
RSVPs themselves live in the poll store (the encrypted poll is the source of truth); this store
only remembers who was confirmed or waitlisted last, so a change can be told to the person once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clubs.core.db import Database, Migration
from clubs.core.ids import EventId, RoomId, UserId
from clubs.core.sealed import Sealer

COMPONENT = "scheduling"
MIGRATIONS: Sequence[Migration] = (
    Migration(
        1,
        "session series, occurrence changes, announcements, places at offline sessions",
        """
        CREATE TABLE sched_series (
            bot TEXT NOT NULL,
            id INTEGER NOT NULL,
            source TEXT NOT NULL,
            club TEXT NOT NULL,
            room_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            tz TEXT NOT NULL,
            start_local TEXT NOT NULL,
            rrule TEXT,
            duration_s INTEGER NOT NULL,
            online INTEGER NOT NULL,
            capacity INTEGER,
            sealed BLOB NOT NULL,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('active', 'ended')),
            PRIMARY KEY (bot, id),
            UNIQUE (bot, source)
        );
        CREATE TABLE sched_changes (
            bot TEXT NOT NULL,
            series_id INTEGER NOT NULL,
            occ_key TEXT NOT NULL,
            cancelled INTEGER NOT NULL,
            PRIMARY KEY (bot, series_id, occ_key)
        );
        CREATE TABLE sched_occurrences (
            bot TEXT NOT NULL,
            series_id INTEGER NOT NULL,
            occ_key TEXT NOT NULL,
            start_utc REAL NOT NULL,
            announce_room TEXT NOT NULL,
            announce_event TEXT,
            poll_room TEXT NOT NULL,
            poll_event TEXT,
            state TEXT NOT NULL CHECK (state IN ('upcoming', 'over', 'cancelled')),
            PRIMARY KEY (bot, series_id, occ_key)
        );
        CREATE INDEX sched_occurrences_poll ON sched_occurrences (bot, poll_event);
        CREATE TABLE sched_places (
            bot TEXT NOT NULL,
            series_id INTEGER NOT NULL,
            occ_key TEXT NOT NULL,
            user_id TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('confirmed', 'waitlisted')),
            since TEXT NOT NULL,
            PRIMARY KEY (bot, series_id, occ_key, user_id)
        )
        """,
    ),
    Migration(
        2,
        "sessions announced in several clubs (network-wide lectures)",
        """
        ALTER TABLE sched_series ADD COLUMN also TEXT NOT NULL DEFAULT '[]';
        CREATE TABLE sched_posts (
            bot TEXT NOT NULL,
            series_id INTEGER NOT NULL,
            occ_key TEXT NOT NULL,
            club TEXT NOT NULL,
            announce_room TEXT NOT NULL,
            announce_event TEXT,
            poll_room TEXT NOT NULL,
            poll_event TEXT,
            PRIMARY KEY (bot, series_id, occ_key, club)
        );
        CREATE INDEX sched_posts_poll ON sched_posts (bot, poll_event)
        """,
    ),
    Migration(
        3,
        "moved occurrences; a generation per announced occurrence for its jobs' keys; what each"
        " editing command resolved to",
        """
        ALTER TABLE sched_changes ADD COLUMN moved_to TEXT;
        ALTER TABLE sched_occurrences ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE sched_commands (
            bot TEXT NOT NULL,
            event_id TEXT NOT NULL,
            intent TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (bot, event_id)
        )
        """,
    ),
    Migration(
        4,
        "members' secret calendar feed links (only a hash of each link is kept)",
        """
        CREATE TABLE sched_feeds (
            bot TEXT NOT NULL,
            user_id TEXT NOT NULL,
            token_hash TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (bot, user_id),
            UNIQUE (bot, token_hash)
        )
        """,
    ),
)


@dataclass(frozen=True)
class Series:
    """A session or a series of them, as a facilitator declared it."""

    id: int
    source: str
    """What made it: the command's event id, or `state:<club>:<key>:<digest>` for a session
    the network file declares."""
    club: str
    room_id: RoomId
    """Where it was created (the club's sessions room)."""
    kind: str
    tz: str
    start_local: str
    """The first occurrence's wall time in `tz` (ISO, no offset)."""
    rrule: str | None
    duration_s: int
    online: bool
    capacity: int | None
    title: str
    link: str | None
    venue: str | None
    materials: str | None
    created_by: UserId
    state: str
    also: tuple[str, ...] = ()
    """Other clubs the session is announced in (a network-wide lecture); `club` owns it."""

    @property
    def clubs(self) -> tuple[str, ...]:
        return (self.club, *self.also)

    def __repr__(self) -> str:  # titles, links and addresses never reach a log through a repr
        return f"Series(id={self.id}, club={self.club!r}, state={self.state!r})"


@dataclass(frozen=True)
class NewSeries:
    club: str
    room_id: RoomId
    kind: str
    tz: str
    start_local: str
    rrule: str | None
    duration_s: int
    online: bool
    capacity: int | None
    title: str
    link: str | None
    venue: str | None
    materials: str | None
    created_by: UserId
    also: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"NewSeries(club={self.club!r}, kind={self.kind!r})"


@dataclass(frozen=True)
class Post:
    """An occurrence's announcement and RSVP poll in one club."""

    club: str
    announce_room: RoomId
    announce_event: EventId | None
    poll_room: RoomId
    poll_event: EventId | None


def _post(r: Any) -> Post:
    return Post(
        club=str(r["club"]),
        announce_room=RoomId(str(r["announce_room"])),
        announce_event=EventId(r["announce_event"]) if r["announce_event"] else None,
        poll_room=RoomId(str(r["poll_room"])),
        poll_event=EventId(r["poll_event"]) if r["poll_event"] else None,
    )


@dataclass(frozen=True)
class Occurrence:
    series_id: int
    occ_key: str
    start_utc: float
    announce_room: RoomId
    announce_event: EventId | None
    poll_room: RoomId
    poll_event: EventId | None
    state: str
    gen: int = 0
    """How many times this announced occurrence was moved: its jobs' keys carry it, so the
    jobs of a new time never collide with the (done or cancelled) jobs of an earlier one."""


@dataclass(frozen=True)
class Changes:
    """How single occurrences of a series differ from its rule, by occurrence key."""

    skipped: frozenset[str] = frozenset()
    """Slots of the rule that do not take place (cancelled, or moved away)."""
    added: frozenset[str] = frozenset()
    """Wall times occurrences were moved to (less any cancelled since)."""


class ScheduleStore:
    """One scheduling bot's sessions inside the shared service database."""

    def __init__(self, db: Database, bot: str, sealer: Sealer) -> None:
        self.db = db
        self.bot = bot
        self.sealer = sealer

    @classmethod
    async def open(cls, db: Database, bot: str, sealer: Sealer) -> ScheduleStore:
        await db.migrate(COMPONENT, MIGRATIONS)
        return cls(db, bot, sealer)

    # --- series ----------------------------------------------------------------------------------

    async def add_series(self, new: NewSeries, *, source: str, now: float) -> Series:
        """Store a series created by the command `source` (an event id): the same command
        handled again after a crash gives the series it created the first time."""
        existing = await self._series_where("source = ?", (source,))
        if existing:
            return existing[0]
        sealed = self.sealer.seal_json(
            {
                "title": new.title,
                "link": new.link,
                "venue": new.venue,
                "materials": new.materials,
            }
        )
        async with self.db.transaction():
            row = await self.db.fetchone(
                "SELECT COALESCE(MAX(id), 0) + 1 AS next FROM sched_series WHERE bot = ?",
                (self.bot,),
            )
            series_id = int(row["next"]) if row is not None else 1
            await self.db.execute(
                "INSERT INTO sched_series (bot, id, source, club, room_id, kind, tz, start_local,"
                " rrule, duration_s, online, capacity, sealed, created_by, created_at, state, also)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?)",
                (
                    self.bot,
                    series_id,
                    source,
                    new.club,
                    new.room_id,
                    new.kind,
                    new.tz,
                    new.start_local,
                    new.rrule,
                    new.duration_s,
                    int(new.online),
                    new.capacity,
                    sealed,
                    new.created_by,
                    now,
                    json.dumps(list(new.also)),
                ),
            )
        series = await self.series(series_id)
        assert series is not None
        return series

    async def series_by_source(self, source: str) -> Series | None:
        found = await self._series_where("source = ?", (source,))
        return found[0] if found else None

    async def series(self, series_id: int) -> Series | None:
        found = await self._series_where("id = ?", (series_id,))
        return found[0] if found else None

    async def active_series(self, club: str | None = None) -> list[Series]:
        if club is None:
            return await self._series_where("state = 'active'", ())
        return [s for s in await self._series_where("state = 'active'", ()) if club in s.clubs]

    async def set_venue(self, series_id: int, venue: str | None) -> bool:
        """Change the venue of a series (sealed like the rest of what people wrote)."""
        series = await self.series(series_id)
        if series is None:
            return False
        sealed = self.sealer.seal_json(
            {
                "title": series.title,
                "link": series.link,
                "venue": venue,
                "materials": series.materials,
            }
        )
        return bool(
            await self.db.execute(
                "UPDATE sched_series SET sealed = ? WHERE bot = ? AND id = ?",
                (sealed, self.bot, series_id),
            )
        )

    async def end_series(self, series_id: int) -> bool:
        return bool(
            await self.db.execute(
                "UPDATE sched_series SET state = 'ended' WHERE bot = ? AND id = ? "
                "AND state = 'active'",
                (self.bot, series_id),
            )
        )

    async def _series_where(self, where: str, params: tuple[Any, ...]) -> list[Series]:
        rows = await self.db.fetchall(
            "SELECT id, source, club, room_id, kind, tz, start_local, rrule, duration_s, online,"  # noqa: S608 - `where` is one of this module's constants
            " capacity, sealed, created_by, state, also"
            f" FROM sched_series WHERE bot = ? AND {where} ORDER BY id",
            (self.bot, *params),
        )
        out = []
        for r in rows:
            secret: Mapping[str, Any] = self.sealer.open_json(r["sealed"])
            out.append(
                Series(
                    id=int(r["id"]),
                    source=str(r["source"]),
                    club=str(r["club"]),
                    room_id=RoomId(str(r["room_id"])),
                    kind=str(r["kind"]),
                    tz=str(r["tz"]),
                    start_local=str(r["start_local"]),
                    rrule=r["rrule"],
                    duration_s=int(r["duration_s"]),
                    online=bool(r["online"]),
                    capacity=r["capacity"],
                    title=str(secret.get("title") or ""),
                    link=secret.get("link"),
                    venue=secret.get("venue"),
                    materials=secret.get("materials"),
                    created_by=UserId(str(r["created_by"])),
                    state=str(r["state"]),
                    also=tuple(str(c) for c in json.loads(r["also"])),
                )
            )
        return out

    async def resolve(self, event_id: str, intent: Mapping[str, Any], now: float) -> dict[str, Any]:
        """What an editing command means, fixed the first time it is handled: "the next one"
        handled again after a crash is still the occurrence it was the first time. Returns the
        intent stored first."""
        await self.db.execute(
            "INSERT OR IGNORE INTO sched_commands (bot, event_id, intent, created_at) "
            "VALUES (?, ?, ?, ?)",
            (self.bot, event_id, json.dumps(dict(intent)), now),
        )
        found = await self.resolved(event_id)
        assert found is not None
        return found

    async def resolved(self, event_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(
            "SELECT intent FROM sched_commands WHERE bot = ? AND event_id = ?",
            (self.bot, event_id),
        )
        if row is None:
            return None
        intent: dict[str, Any] = json.loads(row["intent"])
        return intent

    async def prune_commands(self, before: float) -> int:
        return await self.db.execute(
            "DELETE FROM sched_commands WHERE bot = ? AND created_at < ?", (self.bot, before)
        )

    # --- calendar feeds --------------------------------------------------------------------------

    async def set_feed(self, user_id: UserId, token_hash: str, now: float) -> None:
        """The member's feed link from now on (the one before stops working)."""
        await self.db.execute(
            "INSERT INTO sched_feeds (bot, user_id, token_hash, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (bot, user_id) DO UPDATE SET token_hash = excluded.token_hash, "
            "created_at = excluded.created_at",
            (self.bot, user_id, token_hash, now),
        )

    async def drop_feed(self, user_id: UserId) -> bool:
        return bool(
            await self.db.execute(
                "DELETE FROM sched_feeds WHERE bot = ? AND user_id = ?", (self.bot, user_id)
            )
        )

    async def feed_owner(self, token_hash: str) -> UserId | None:
        row = await self.db.fetchone(
            "SELECT user_id FROM sched_feeds WHERE bot = ? AND token_hash = ?",
            (self.bot, token_hash),
        )
        return UserId(str(row["user_id"])) if row is not None else None

    async def confirmed_places(self, user_id: UserId) -> dict[int, set[str]]:
        """series → the occurrence keys where the member holds a place."""
        rows = await self.db.fetchall(
            "SELECT series_id, occ_key FROM sched_places "
            "WHERE bot = ? AND user_id = ? AND status = 'confirmed'",
            (self.bot, user_id),
        )
        out: dict[int, set[str]] = {}
        for r in rows:
            out.setdefault(int(r["series_id"]), set()).add(str(r["occ_key"]))
        return out

    # --- single occurrences ----------------------------------------------------------------------

    async def cancel(self, series_id: int, occ_key: str) -> bool:
        """Cancel one occurrence; returns whether it was not cancelled already."""
        return bool(
            await self.db.execute(
                "INSERT OR IGNORE INTO sched_changes (bot, series_id, occ_key, cancelled) "
                "VALUES (?, ?, ?, 1)",
                (self.bot, series_id, occ_key),
            )
        )

    async def changes(self, series_id: int) -> Changes:
        rows = await self.db.fetchall(
            "SELECT occ_key, cancelled, moved_to FROM sched_changes "
            "WHERE bot = ? AND series_id = ?",
            (self.bot, series_id),
        )
        skipped = frozenset(str(r["occ_key"]) for r in rows if r["cancelled"])
        added = frozenset(str(r["moved_to"]) for r in rows if r["moved_to"]) - skipped
        return Changes(skipped, added)

    async def move(self, series_id: int, from_key: str, to_key: str) -> None:
        """One occurrence takes place at `to_key` instead. An occurrence moved before moves
        again from its original slot (the slot stays skipped, its new time changes)."""
        async with self.db.transaction():
            moved = await self.db.execute(
                "UPDATE sched_changes SET moved_to = ? "
                "WHERE bot = ? AND series_id = ? AND moved_to = ?",
                (to_key, self.bot, series_id, from_key),
            )
            if not moved:
                await self.db.execute(
                    "INSERT INTO sched_changes (bot, series_id, occ_key, cancelled, moved_to) "
                    "VALUES (?, ?, ?, 1, ?) ON CONFLICT (bot, series_id, occ_key) "
                    "DO UPDATE SET cancelled = 1, moved_to = excluded.moved_to",
                    (self.bot, series_id, from_key, to_key),
                )

    async def set_rule(self, series_id: int, rrule: str | None) -> None:
        """The series' rule from now on (a series split in two ends where the other begins)."""
        await self.db.execute(
            "UPDATE sched_series SET rrule = ? WHERE bot = ? AND id = ?",
            (rrule, self.bot, series_id),
        )

    async def rekey_occurrence(
        self, old: Occurrence, series_id: int, occ_key: str, start_utc: float
    ) -> Occurrence:
        """An announced occurrence now takes place at another time (or belongs to the series
        a split made): its announcement, polls and places go with it, one transaction."""
        where = (self.bot, old.series_id, old.occ_key)
        async with self.db.transaction():
            await self.db.execute(
                "UPDATE sched_occurrences SET series_id = ?, occ_key = ?, start_utc = ?, "
                "gen = gen + 1 WHERE bot = ? AND series_id = ? AND occ_key = ?",
                (series_id, occ_key, start_utc, *where),
            )
            for table in ("sched_posts", "sched_places"):
                await self.db.execute(
                    f"UPDATE {table} SET series_id = ?, occ_key = ? "  # noqa: S608 - constant
                    "WHERE bot = ? AND series_id = ? AND occ_key = ?",
                    (series_id, occ_key, *where),
                )
        moved = await self.occurrence(series_id, occ_key)
        assert moved is not None
        return moved

    async def record_occurrence(self, occ: Occurrence) -> None:
        """Upsert what was announced for one occurrence (ids filled in as they become known)."""
        await self.db.execute(
            "INSERT INTO sched_occurrences (bot, series_id, occ_key, start_utc, announce_room,"
            " announce_event, poll_room, poll_event, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (bot, series_id, occ_key) DO UPDATE SET"
            " announce_event = COALESCE(excluded.announce_event, announce_event),"
            " poll_event = COALESCE(excluded.poll_event, poll_event),"
            " start_utc = excluded.start_utc, state = excluded.state",
            (
                self.bot,
                occ.series_id,
                occ.occ_key,
                occ.start_utc,
                occ.announce_room,
                occ.announce_event,
                occ.poll_room,
                occ.poll_event,
                occ.state,
            ),
        )

    async def set_occurrence_state(self, series_id: int, occ_key: str, state: str) -> None:
        await self.db.execute(
            "UPDATE sched_occurrences SET state = ? "
            "WHERE bot = ? AND series_id = ? AND occ_key = ?",
            (state, self.bot, series_id, occ_key),
        )

    async def occurrence(self, series_id: int, occ_key: str) -> Occurrence | None:
        found = await self._occurrences_where("series_id = ? AND occ_key = ?", (series_id, occ_key))
        return found[0] if found else None

    async def record_post(self, series_id: int, occ_key: str, post: Post) -> None:
        """What was announced for one occurrence in another club (ids filled in as known)."""
        await self.db.execute(
            "INSERT INTO sched_posts (bot, series_id, occ_key, club, announce_room,"
            " announce_event, poll_room, poll_event) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (bot, series_id, occ_key, club) DO UPDATE SET"
            " announce_event = COALESCE(excluded.announce_event, announce_event),"
            " poll_event = COALESCE(excluded.poll_event, poll_event)",
            (
                self.bot,
                series_id,
                occ_key,
                post.club,
                post.announce_room,
                post.announce_event,
                post.poll_room,
                post.poll_event,
            ),
        )

    async def other_posts(self, series_id: int, occ_key: str) -> list[Post]:
        rows = await self.db.fetchall(
            "SELECT club, announce_room, announce_event, poll_room, poll_event FROM sched_posts"
            " WHERE bot = ? AND series_id = ? AND occ_key = ? ORDER BY club",
            (self.bot, series_id, occ_key),
        )
        return [_post(r) for r in rows]

    async def occurrence_by_poll(self, poll_event: str) -> Occurrence | None:
        """The occurrence whose RSVP poll this is (in its own club or in another)."""
        row = await self.db.fetchone(
            "SELECT series_id, occ_key FROM sched_posts WHERE bot = ? AND poll_event = ?",
            (self.bot, poll_event),
        )
        if row is not None:
            return await self.occurrence(int(row["series_id"]), str(row["occ_key"]))
        found = await self._occurrences_where("poll_event = ?", (poll_event,))
        return found[0] if found else None

    async def upcoming(self, series_id: int) -> list[Occurrence]:
        return await self._occurrences_where("series_id = ? AND state = 'upcoming'", (series_id,))

    async def _occurrences_where(self, where: str, params: tuple[Any, ...]) -> list[Occurrence]:
        rows = await self.db.fetchall(
            "SELECT series_id, occ_key, start_utc, announce_room, announce_event, poll_room,"  # noqa: S608 - `where` is one of this module's constants
            f" poll_event, state, gen FROM sched_occurrences WHERE bot = ? AND {where}"
            " ORDER BY start_utc",
            (self.bot, *params),
        )
        return [
            Occurrence(
                series_id=int(r["series_id"]),
                occ_key=str(r["occ_key"]),
                start_utc=float(r["start_utc"]),
                announce_room=RoomId(str(r["announce_room"])),
                announce_event=EventId(r["announce_event"]) if r["announce_event"] else None,
                poll_room=RoomId(str(r["poll_room"])),
                poll_event=EventId(r["poll_event"]) if r["poll_event"] else None,
                state=str(r["state"]),
                gen=int(r["gen"]),
            )
            for r in rows
        ]

    # --- places at offline sessions --------------------------------------------------------------

    async def places(self, series_id: int, occ_key: str) -> dict[UserId, tuple[str, str]]:
        """user → (status, the vote event that gave it)."""
        rows = await self.db.fetchall(
            "SELECT user_id, status, since FROM sched_places "
            "WHERE bot = ? AND series_id = ? AND occ_key = ?",
            (self.bot, series_id, occ_key),
        )
        return {UserId(str(r["user_id"])): (str(r["status"]), str(r["since"])) for r in rows}

    async def set_places(
        self, series_id: int, occ_key: str, places: Mapping[UserId, tuple[str, str]]
    ) -> None:
        """Replace the places of one occurrence (one transaction)."""
        async with self.db.transaction():
            await self.db.execute(
                "DELETE FROM sched_places WHERE bot = ? AND series_id = ? AND occ_key = ?",
                (self.bot, series_id, occ_key),
            )
            for user, (status, since) in places.items():
                await self.db.execute(
                    "INSERT INTO sched_places (bot, series_id, occ_key, user_id, status, since) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (self.bot, series_id, occ_key, user, status, since),
                )
