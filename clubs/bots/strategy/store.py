"""What the strategies part keeps, per bot account in the shared database.

Clear (what finding, numbering, scheduling and counting need): a keyed pseudonym of the member
(`box.py`; never the user id), their club and cohort keys, each person's number in the member's
list, times, the nudge's token and version, share codes and the pseudonym of the facilitator a
strategy is shared with, and per update the club, cohort, month and pseudonym (for the counts).
Sealed with AES-GCM: the member's user id (for nudges), each person's label, goal, what works,
what to avoid and the next step, every log entry (date, 1–5, note), and who a share is between
with the messages that showed it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clubs.bots.strategy.box import StrategyBox
from clubs.bots.strategy.counts import Update
from clubs.bots.strategy.parse import FIELDS
from clubs.core.db import Database, Migration
from clubs.core.ids import UserId

COMPONENT = "strategy"
MAX_PEOPLE = 20
MAX_ENTRIES = 500
MIGRATIONS: Sequence[Migration] = (
    Migration(
        1,
        "cohort members' strategies: members, people, log entries, shares, update counts",
        """
        CREATE TABLE st_members (
            bot TEXT NOT NULL,
            owner TEXT NOT NULL,
            token TEXT NOT NULL,
            lang TEXT NOT NULL,
            nudge INTEGER NOT NULL DEFAULT 0,
            version INTEGER NOT NULL DEFAULT 1,
            sealed BLOB NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (bot, owner),
            UNIQUE (bot, token)
        );
        CREATE TABLE st_people (
            id INTEGER PRIMARY KEY,
            bot TEXT NOT NULL,
            owner TEXT NOT NULL,
            no INTEGER NOT NULL,
            club TEXT NOT NULL,
            cohort TEXT NOT NULL,
            sealed BLOB NOT NULL,
            source TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (bot, owner, no),
            UNIQUE (bot, source)
        );
        CREATE TABLE st_entries (
            id INTEGER PRIMARY KEY,
            bot TEXT NOT NULL,
            owner TEXT NOT NULL,
            person INTEGER NOT NULL,
            sealed BLOB NOT NULL,
            source TEXT NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (bot, source)
        );
        CREATE INDEX st_entries_person ON st_entries (bot, person);
        CREATE TABLE st_shares (
            id INTEGER PRIMARY KEY,
            bot TEXT NOT NULL,
            code TEXT NOT NULL,
            owner TEXT NOT NULL,
            person INTEGER NOT NULL,
            viewer TEXT NOT NULL,
            sealed BLOB NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (bot, code),
            UNIQUE (bot, person, viewer)
        );
        CREATE INDEX st_shares_viewer ON st_shares (bot, viewer);
        CREATE TABLE st_updates (
            bot TEXT NOT NULL,
            source TEXT NOT NULL,
            club TEXT NOT NULL,
            cohort TEXT NOT NULL,
            month TEXT NOT NULL,
            who TEXT NOT NULL,
            PRIMARY KEY (bot, source)
        );
        CREATE INDEX st_updates_club ON st_updates (bot, club, month)
        """,
    ),
)


@dataclass(frozen=True)
class Member:
    owner: str
    user_id: UserId
    token: str
    lang: str
    nudge: bool
    version: int


@dataclass(frozen=True)
class Person:
    id: int
    no: int
    club: str
    cohort: str
    label: str
    fields: dict[str, str]
    created_at: float
    updated_at: float

    def __repr__(self) -> str:  # the content never reaches a log through a repr
        return f"Person(id={self.id}, no={self.no})"


@dataclass(frozen=True)
class Entry:
    id: int
    at: float
    """The day of the conversation (UTC midnight of the date the member gave, or the time
    it was logged)."""
    level: int
    note: str

    def __repr__(self) -> str:
        return f"Entry(id={self.id})"


@dataclass(frozen=True)
class Share:
    id: int
    code: str
    person: int
    owner_user: UserId
    viewer_user: UserId
    views: list[tuple[str, str]] = field(default_factory=list)
    """(room id, event id) of every message that showed the strategy to the viewer."""

    def __repr__(self) -> str:
        return f"Share(id={self.id})"


@dataclass(frozen=True)
class Forgotten:
    people: int
    entries: int
    shares: tuple[Share, ...]
    updates: int
    token: str | None


class StrategyStore:
    def __init__(self, db: Database, bot: str, box: StrategyBox) -> None:
        self.db = db
        self.bot = bot
        self.box = box

    @classmethod
    async def open(cls, db: Database, bot: str, box: StrategyBox) -> StrategyStore:
        await db.migrate(COMPONENT, MIGRATIONS)
        return cls(db, bot, box)

    def owner(self, user_id: str) -> str:
        return self.box.pseudonym(user_id)

    # --- members ---------------------------------------------------------------------------

    async def member(self, user_id: str) -> Member | None:
        return await self._member("owner", self.owner(user_id))

    async def member_by_token(self, token: str) -> Member | None:
        return await self._member("token", token)

    async def _member(self, column: str, value: str) -> Member | None:
        row = await self.db.fetchone(
            f"SELECT owner, token, lang, nudge, version, sealed FROM st_members "  # noqa: S608
            f"WHERE bot = ? AND {column} = ?",
            (self.bot, value),
        )
        if row is None:
            return None
        data = self.box.open_json(row["sealed"], f"member:{row['owner']}")
        return Member(
            row["owner"],
            UserId(str(data["user"])),
            row["token"],
            row["lang"],
            bool(row["nudge"]),
            row["version"],
        )

    async def ensure_member(self, user_id: str, lang: str, now: float) -> Member:
        owner = self.owner(user_id)
        sealed = self.box.seal_json({"user": user_id}, f"member:{owner}")
        await self.db.execute(
            "INSERT INTO st_members (bot, owner, token, lang, sealed, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (bot, owner) DO UPDATE SET "
            "lang = excluded.lang",
            (self.bot, owner, secrets.token_hex(12), lang, sealed, now),
        )
        member = await self.member(user_id)
        assert member is not None
        return member

    async def set_nudge(self, user_id: str, on: bool, now: float) -> Member | None:
        """On or off; the version moves on, so a pending nudge of the old setting goes stale."""
        await self.db.execute(
            "UPDATE st_members SET nudge = ?, version = version + 1, updated_at = ? "
            "WHERE bot = ? AND owner = ?",
            (int(on), now, self.bot, self.owner(user_id)),
        )
        return await self.member(user_id)

    # --- people ----------------------------------------------------------------------------

    async def people(self, user_id: str) -> list[Person]:
        owner = self.owner(user_id)
        rows = await self.db.fetchall(
            "SELECT id, no, club, cohort, sealed, created_at, updated_at FROM st_people "
            "WHERE bot = ? AND owner = ? ORDER BY no",
            (self.bot, owner),
        )
        return [self._person(owner, r) for r in rows]

    async def person(self, user_id: str, no: int) -> Person | None:
        owner = self.owner(user_id)
        row = await self.db.fetchone(
            "SELECT id, no, club, cohort, sealed, created_at, updated_at FROM st_people "
            "WHERE bot = ? AND owner = ? AND no = ?",
            (self.bot, owner, no),
        )
        return self._person(owner, row) if row is not None else None

    async def person_by_id(self, owner: str, person_id: int) -> Person | None:
        row = await self.db.fetchone(
            "SELECT id, no, club, cohort, sealed, created_at, updated_at FROM st_people "
            "WHERE bot = ? AND owner = ? AND id = ?",
            (self.bot, owner, person_id),
        )
        return self._person(owner, row) if row is not None else None

    def _person(self, owner: str, row: Any) -> Person:
        data = self.box.open_json(row["sealed"], f"person:{owner}")
        fields = {f: str(data.get(f) or "") for f in FIELDS}
        return Person(
            row["id"],
            row["no"],
            row["club"],
            row["cohort"],
            str(data.get("label") or ""),
            fields,
            row["created_at"],
            row["updated_at"],
        )

    async def count_people(self, user_id: str) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS n FROM st_people WHERE bot = ? AND owner = ?",
            (self.bot, self.owner(user_id)),
        )
        return int(row["n"]) if row is not None else 0

    async def add_person(
        self, user_id: str, club: str, cohort: str, label: str, now: float, *, source: str
    ) -> Person:
        """A new person at the next free number (once per command event: a replay finds it)."""
        owner = self.owner(user_id)
        sealed = self.box.seal_json({"label": label}, f"person:{owner}")
        async with self.db.transaction():
            await self.db.execute(
                "INSERT OR IGNORE INTO st_people (bot, owner, no, club, cohort, sealed, source, "
                "created_at, updated_at) SELECT ?, ?, COALESCE(MAX(no), 0) + 1, ?, ?, ?, ?, ?, ? "
                "FROM st_people WHERE bot = ? AND owner = ?",
                (self.bot, owner, club, cohort, sealed, source, now, now, self.bot, owner),
            )
        row = await self.db.fetchone(
            "SELECT id, no, club, cohort, sealed, created_at, updated_at FROM st_people "
            "WHERE bot = ? AND source = ?",
            (self.bot, source),
        )
        assert row is not None
        return self._person(owner, row)

    async def set_field(
        self, user_id: str, person: Person, name: str, text: str, now: float
    ) -> None:
        owner = self.owner(user_id)
        data: dict[str, str] = {"label": person.label, **person.fields}
        data[name] = text
        await self.db.execute(
            "UPDATE st_people SET sealed = ?, updated_at = ? WHERE bot = ? AND id = ?",
            (self.box.seal_json(data, f"person:{owner}"), now, self.bot, person.id),
        )

    async def delete_person(self, user_id: str, person: Person) -> tuple[Share, ...]:
        """The person, their log and their shares (returned: their views are to be redacted)."""
        owner = self.owner(user_id)
        shares = await self.shares_of(user_id, person.id)
        async with self.db.transaction():
            await self.db.execute(
                "DELETE FROM st_entries WHERE bot = ? AND owner = ? AND person = ?",
                (self.bot, owner, person.id),
            )
            await self.db.execute(
                "DELETE FROM st_shares WHERE bot = ? AND owner = ? AND person = ?",
                (self.bot, owner, person.id),
            )
            await self.db.execute(
                "DELETE FROM st_people WHERE bot = ? AND owner = ? AND id = ?",
                (self.bot, owner, person.id),
            )
        return tuple(shares)

    # --- the log ---------------------------------------------------------------------------

    async def add_entry(
        self,
        user_id: str,
        person: Person,
        at: float,
        level: int,
        note: str,
        now: float,
        *,
        source: str,
    ) -> bool:
        """A conversation in the person's log; False if this command's entry is there already."""
        owner = self.owner(user_id)
        sealed = self.box.seal_json({"at": at, "level": level, "note": note}, f"entry:{owner}")
        return bool(
            await self.db.execute(
                "INSERT OR IGNORE INTO st_entries (bot, owner, person, sealed, source, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self.bot, owner, person.id, sealed, source, now),
            )
        )

    async def entries(self, user_id: str, person: Person) -> list[Entry]:
        """The person's log, oldest conversation first."""
        owner = self.owner(user_id)
        rows = await self.db.fetchall(
            "SELECT id, sealed FROM st_entries WHERE bot = ? AND owner = ? AND person = ?",
            (self.bot, owner, person.id),
        )
        out = []
        for row in rows:
            data = self.box.open_json(row["sealed"], f"entry:{owner}")
            out.append(Entry(row["id"], float(data["at"]), int(data["level"]), str(data["note"])))
        return sorted(out, key=lambda e: (e.at, e.id))

    async def count_entries(self, user_id: str, person: Person) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS n FROM st_entries WHERE bot = ? AND owner = ? AND person = ?",
            (self.bot, self.owner(user_id), person.id),
        )
        return int(row["n"]) if row is not None else 0

    # --- counts ----------------------------------------------------------------------------

    async def record_update(
        self, user_id: str, club: str, cohort: str, month: str, *, source: str
    ) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO st_updates (bot, source, club, cohort, month, who) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (self.bot, source, club, cohort, month, self.owner(user_id)),
        )

    async def updates(self, clubs: Iterable[str], since_month: str) -> list[Update]:
        wanted = sorted(set(clubs))
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        rows = await self.db.fetchall(
            f"SELECT club, cohort, month, who FROM st_updates WHERE bot = ? "  # noqa: S608
            f"AND club IN ({marks}) AND month >= ?",
            (self.bot, *wanted, since_month),
        )
        return [Update(r["club"], r["cohort"], r["month"], r["who"]) for r in rows]

    # --- shares ----------------------------------------------------------------------------

    async def share(self, user_id: str, person: Person, viewer: UserId, now: float) -> Share:
        """Share the person's strategy with `viewer` (the same share if it exists)."""
        owner = self.owner(user_id)
        sealed = self.box.seal_json(
            {"owner": user_id, "viewer": viewer, "views": []}, f"share:{owner}"
        )
        for _ in range(5):  # a code that is taken already: another
            changed = await self.db.execute(
                "INSERT OR IGNORE INTO st_shares (bot, code, owner, person, viewer, sealed, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    self.bot,
                    secrets.token_hex(3),
                    owner,
                    person.id,
                    self.owner(viewer),
                    sealed,
                    now,
                ),
            )
            found = await self._shares("person = ? AND viewer = ?", (person.id, self.owner(viewer)))
            if found:
                return found[0]
            if changed:
                break
        raise RuntimeError("no share code could be drawn")

    async def shares_of(self, user_id: str, person_id: int) -> list[Share]:
        return await self._shares("owner = ? AND person = ?", (self.owner(user_id), person_id))

    async def shares_for(self, viewer: str) -> list[Share]:
        return await self._shares("viewer = ?", (self.owner(viewer),))

    async def share_by_code(self, code: str) -> Share | None:
        found = await self._shares("code = ?", (code,))
        return found[0] if found else None

    async def owner_of_share(self, share: Share) -> str:
        return self.owner(share.owner_user)

    async def add_view(self, share: Share, room_id: str, event_id: str) -> None:
        owner = self.owner(share.owner_user)
        views = [*share.views, (room_id, event_id)]
        sealed = self.box.seal_json(
            {"owner": share.owner_user, "viewer": share.viewer_user, "views": views},
            f"share:{owner}",
        )
        await self.db.execute(
            "UPDATE st_shares SET sealed = ? WHERE bot = ? AND id = ?", (sealed, self.bot, share.id)
        )

    async def unshare(self, user_id: str, person: Person) -> tuple[Share, ...]:
        shares = await self.shares_of(user_id, person.id)
        await self.db.execute(
            "DELETE FROM st_shares WHERE bot = ? AND owner = ? AND person = ?",
            (self.bot, self.owner(user_id), person.id),
        )
        return tuple(shares)

    async def _shares(self, where: str, params: tuple[Any, ...]) -> list[Share]:
        rows = await self.db.fetchall(
            f"SELECT id, code, owner, person, sealed FROM st_shares "  # noqa: S608
            f"WHERE bot = ? AND {where} ORDER BY id",
            (self.bot, *params),
        )
        out = []
        for row in rows:
            data = self.box.open_json(row["sealed"], f"share:{row['owner']}")
            out.append(
                Share(
                    row["id"],
                    row["code"],
                    row["person"],
                    UserId(str(data["owner"])),
                    UserId(str(data["viewer"])),
                    [(str(r), str(e)) for r, e in data.get("views") or []],
                )
            )
        return out

    # --- forgetting ------------------------------------------------------------------------

    async def shares_involving(self, user_id: str) -> list[Share]:
        """The member's shares and the shares made to them as a facilitator."""
        owner = self.owner(user_id)
        return await self._shares("(owner = ? OR viewer = ?)", (owner, owner))

    async def forget(self, user_id: str) -> Forgotten:
        """Every row about the member: their people, log, shares (theirs, and those made *to*
        them as a facilitator; returned) and update counts."""
        owner = self.owner(user_id)
        member = await self.member(user_id)
        shares = await self.shares_involving(user_id)
        async with self.db.transaction():
            entries = await self.db.execute(
                "DELETE FROM st_entries WHERE bot = ? AND owner = ?", (self.bot, owner)
            )
            await self.db.execute(
                "DELETE FROM st_shares WHERE bot = ? AND (owner = ? OR viewer = ?)",
                (self.bot, owner, owner),
            )
            gone = await self.db.execute(
                "DELETE FROM st_people WHERE bot = ? AND owner = ?", (self.bot, owner)
            )
            updates = await self.db.execute(
                "DELETE FROM st_updates WHERE bot = ? AND who = ?", (self.bot, owner)
            )
            await self.db.execute(
                "DELETE FROM st_members WHERE bot = ? AND owner = ?", (self.bot, owner)
            )
        return Forgotten(
            gone, entries, tuple(shares), updates, member.token if member is not None else None
        )
