"""What the case library keeps, per bot account in the shared database.

Clear (what finding, numbering and counting need): a case's number, its club's key, its state
(`pending` approval or `posted`), whether its author shared it network-wide, the month it was
posted, where it was posted (room and event, to redact it), a keyed pseudonym of the author
(`box.py`; never the user id) and the keyed hashes of its search terms. Sealed with AES-GCM: the
answers, the tags, the author's user id (to tell them about approval, or to show their name if
they asked), and a member's draft while they tell a case.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clubs.bots.cases.box import CaseBox
from clubs.core.db import Database, Migration
from clubs.core.ids import UserId

COMPONENT = "cases"
MAX_RESULTS = 10
MIGRATIONS: Sequence[Migration] = (
    Migration(
        1,
        "the case library: drafts, cases, search terms",
        """
        CREATE TABLE cs_drafts (
            bot TEXT NOT NULL,
            owner TEXT NOT NULL,
            room TEXT NOT NULL,
            step INTEGER NOT NULL,
            sealed BLOB NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (bot, owner)
        );
        CREATE TABLE cs_cases (
            id INTEGER PRIMARY KEY,
            bot TEXT NOT NULL,
            club TEXT NOT NULL,
            owner TEXT NOT NULL,
            state TEXT NOT NULL,
            shared INTEGER NOT NULL DEFAULT 0,
            month TEXT NOT NULL,
            room TEXT,
            event TEXT,
            sealed BLOB NOT NULL,
            source TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (bot, source)
        );
        CREATE INDEX cs_cases_owner ON cs_cases (bot, owner);
        CREATE INDEX cs_cases_club ON cs_cases (bot, club, state, month);
        CREATE TABLE cs_terms (
            bot TEXT NOT NULL,
            term TEXT NOT NULL,
            club TEXT NOT NULL,
            shared INTEGER NOT NULL,
            case_id INTEGER NOT NULL,
            PRIMARY KEY (bot, term, case_id)
        );
        CREATE INDEX cs_terms_case ON cs_terms (bot, case_id)
        """,
    ),
    Migration(
        2,
        "search terms with their scope in the index (a search reads no table rows)",
        "CREATE INDEX cs_terms_scope ON cs_terms (bot, term, shared, club, case_id)",
    ),
)


@dataclass
class Draft:
    owner: str
    room: str
    step: int
    """Index into the questions of the one being asked."""
    user: UserId
    club: str
    answers: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    """The member's messages already taken as answers (a replayed event changes nothing)."""
    editing: int | None = None
    """The case being edited (its number), or None for a new case."""
    only: str | None = None
    """When editing one answer: its question; None: every question in turn."""
    lang: str = "ru"

    def __repr__(self) -> str:  # the content never reaches a log through a repr
        return f"Draft(step={self.step})"


@dataclass(frozen=True)
class Case:
    id: int
    club: str
    owner: str
    state: str
    shared: bool
    month: str
    room: str | None
    event: str | None
    user: UserId
    named: bool
    answers: dict[str, str]
    tags: tuple[str, ...]
    created_at: float

    def __repr__(self) -> str:
        return f"Case(id={self.id}, state={self.state})"


_COLUMNS = "id, club, owner, state, shared, month, room, event, sealed, source, created_at"


class CaseStore:
    def __init__(self, db: Database, bot: str, box: CaseBox) -> None:
        self.db = db
        self.bot = bot
        self.box = box

    @classmethod
    async def open(cls, db: Database, bot: str, box: CaseBox) -> CaseStore:
        await db.migrate(COMPONENT, MIGRATIONS)
        return cls(db, bot, box)

    def owner(self, user_id: str) -> str:
        return self.box.pseudonym(user_id)

    # --- drafts ----------------------------------------------------------------------------

    async def draft(self, user_id: str) -> Draft | None:
        owner = self.owner(user_id)
        row = await self.db.fetchone(
            "SELECT room, step, sealed FROM cs_drafts WHERE bot = ? AND owner = ?",
            (self.bot, owner),
        )
        if row is None:
            return None
        data = self.box.open_json(row["sealed"], f"draft:{self.bot}:{owner}")
        return Draft(
            owner,
            row["room"],
            row["step"],
            UserId(str(data["user"])),
            str(data["club"]),
            {str(k): str(v) for k, v in data.get("answers", {}).items()},
            [str(e) for e in data.get("events", [])],
            data.get("editing"),
            data.get("only"),
            str(data.get("lang") or "ru"),
        )

    async def save_draft(self, draft: Draft, now: float) -> None:
        sealed = self.box.seal_json(
            {
                "user": draft.user,
                "club": draft.club,
                "answers": draft.answers,
                "events": draft.events[-50:],
                "editing": draft.editing,
                "only": draft.only,
                "lang": draft.lang,
            },
            f"draft:{self.bot}:{draft.owner}",
        )
        await self.db.execute(
            "INSERT INTO cs_drafts (bot, owner, room, step, sealed, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (bot, owner) DO UPDATE SET "
            "room = excluded.room, step = excluded.step, sealed = excluded.sealed, "
            "updated_at = excluded.updated_at",
            (self.bot, draft.owner, draft.room, draft.step, sealed, now),
        )

    async def drop_draft(self, user_id: str) -> int:
        return await self.db.execute(
            "DELETE FROM cs_drafts WHERE bot = ? AND owner = ?", (self.bot, self.owner(user_id))
        )

    # --- cases -----------------------------------------------------------------------------

    def seal_case(
        self, source: str, user: str, named: bool, answers: dict[str, str], tags: Any
    ) -> bytes:
        """A case's sealed column (bound to its source event, the row's unique key)."""
        return self.box.seal_json(
            {"user": user, "named": named, "answers": answers, "tags": list(tags)},
            f"case:{self.bot}:{source}",
        )

    async def add(
        self,
        *,
        user: str,
        club: str,
        answers: dict[str, str],
        tags: tuple[str, ...],
        terms: Iterable[str],
        named: bool,
        shared: bool,
        pending: bool,
        month: str,
        source: str,
        now: float,
    ) -> Case:
        """A new case (once per `source`, the command event that sent it)."""
        async with self.db.transaction():
            existing = await self._by("source", source)
            if existing is not None:
                return existing
            await self.db.execute(
                "INSERT INTO cs_cases (bot, club, owner, state, shared, month, sealed, source, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.bot,
                    club,
                    self.owner(user),
                    "pending" if pending else "posted",
                    int(shared),
                    month,
                    self.seal_case(source, user, named, answers, tags),
                    source,
                    now,
                    now,
                ),
            )
            case = await self._by("source", source)
            assert case is not None
            await self._index(case.id, club, shared, terms)
        return case

    async def _index(self, case_id: int, club: str, shared: bool, terms: Iterable[str]) -> None:
        await self.db.execute(
            "DELETE FROM cs_terms WHERE bot = ? AND case_id = ?", (self.bot, case_id)
        )
        for term in dict.fromkeys(terms):
            await self.db.execute(
                "INSERT INTO cs_terms (bot, term, club, shared, case_id) VALUES (?, ?, ?, ?, ?)",
                (self.bot, self.box.term(term), club, int(shared), case_id),
            )

    async def update(
        self,
        case: Case,
        answers: dict[str, str],
        tags: tuple[str, ...],
        terms: Iterable[str],
        now: float,
    ) -> Case:
        row = await self.db.fetchone(
            "SELECT source FROM cs_cases WHERE bot = ? AND id = ?", (self.bot, case.id)
        )
        assert row is not None
        async with self.db.transaction():
            await self.db.execute(
                "UPDATE cs_cases SET sealed = ?, updated_at = ? WHERE bot = ? AND id = ?",
                (
                    self.seal_case(row["source"], case.user, case.named, answers, tags),
                    now,
                    self.bot,
                    case.id,
                ),
            )
            await self._index(case.id, case.club, case.shared, terms)
        got = await self.get(case.id)
        assert got is not None
        return got

    async def posted(self, case_id: int, room: str, event: str | None, month: str) -> None:
        await self.db.execute(
            "UPDATE cs_cases SET state = 'posted', room = ?, event = ?, month = ? "
            "WHERE bot = ? AND id = ?",
            (room, event, month, self.bot, case_id),
        )

    async def get(self, case_id: int) -> Case | None:
        return await self._by("id", case_id)

    async def _by(self, column: str, value: Any) -> Case | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM cs_cases WHERE bot = ? AND {column} = ?",  # noqa: S608
            (self.bot, value),
        )
        return self._case(row) if row is not None else None

    def _case(self, row: Any) -> Case:
        data = self.box.open_json(row["sealed"], f"case:{self.bot}:{row['source']}")
        return Case(
            row["id"],
            row["club"],
            row["owner"],
            row["state"],
            bool(row["shared"]),
            row["month"],
            row["room"],
            row["event"],
            UserId(str(data["user"])),
            bool(data.get("named")),
            {str(k): str(v) for k, v in data.get("answers", {}).items()},
            tuple(str(t) for t in data.get("tags", [])),
            row["created_at"],
        )

    async def mine(self, user_id: str) -> list[Case]:
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM cs_cases WHERE bot = ? AND owner = ? ORDER BY id",  # noqa: S608
            (self.bot, self.owner(user_id)),
        )
        return [self._case(r) for r in rows]

    async def delete(self, case_id: int) -> int:
        async with self.db.transaction():
            await self.db.execute(
                "DELETE FROM cs_terms WHERE bot = ? AND case_id = ?", (self.bot, case_id)
            )
            return await self.db.execute(
                "DELETE FROM cs_cases WHERE bot = ? AND id = ?", (self.bot, case_id)
            )

    # --- finding ---------------------------------------------------------------------------

    async def search(
        self, clubs: Iterable[str], words: Sequence[str], limit: int = MAX_RESULTS
    ) -> tuple[list[Case], int]:
        """Posted cases of these clubs, or shared network-wide, having every word as a term
        (newest first): the first `limit` and how many there are. An indexed query; only the
        cases shown are opened."""
        clubs = sorted(set(clubs))
        marks = ",".join("?" * len(clubs)) or "NULL"
        scope = f"(t.club IN ({marks}) OR t.shared = 1)"
        if words:
            # One index range per term (term, then scope: cs_terms_scope), intersected.
            terms = [self.box.term(w) for w in dict.fromkeys(words)]
            ids_sql = " INTERSECT ".join(
                f"SELECT t.case_id AS id FROM cs_terms t WHERE t.bot = ? "  # noqa: S608
                f"AND t.term = ? AND {scope}"
                for _ in terms
            )
            params: list[Any] = [v for term in terms for v in (self.bot, term, *clubs)]
        else:
            ids_sql = (
                "SELECT t.id AS id FROM cs_cases t WHERE t.bot = ? "  # noqa: S608
                f"AND {scope}"
            )
            params = [self.bot, *clubs]
        # The matching ids once (a few hundred integers at most), then only the shown rows.
        found = await self.db.fetchall(
            f"SELECT c.id AS id FROM ({ids_sql}) AS m JOIN cs_cases c ON c.id = m.id "  # noqa: S608
            "WHERE c.bot = ? AND c.state = 'posted' ORDER BY c.id DESC",
            (*params, self.bot),
        )
        shown = [int(r["id"]) for r in found[:limit]]
        if not shown:
            return [], len(found)
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM cs_cases WHERE bot = ? "  # noqa: S608
            f"AND id IN ({','.join('?' * len(shown))}) ORDER BY id DESC",
            (self.bot, *shown),
        )
        return [self._case(r) for r in rows], len(found)

    async def pending(self, clubs: Iterable[str]) -> list[Case]:
        clubs = sorted(set(clubs))
        marks = ",".join("?" * len(clubs)) or "NULL"
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM cs_cases WHERE bot = ? AND state = 'pending' "  # noqa: S608
            f"AND club IN ({marks}) ORDER BY id",
            (self.bot, *clubs),
        )
        return [self._case(r) for r in rows]

    async def posted_since(self, club: str, month: str) -> list[Case]:
        """The club's posted cases from `month` on (for the organisers' figures)."""
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM cs_cases WHERE bot = ? AND club = ? "  # noqa: S608
            "AND state = 'posted' AND month >= ?",
            (self.bot, club, month),
        )
        return [self._case(r) for r in rows]

    async def forget(self, user_id: str) -> tuple[list[Case], int]:
        """The member's cases (to redact) and drafts dropped; returns the cases and how many
        rows went."""
        cases = await self.mine(user_id)
        gone = await self.drop_draft(user_id)
        for case in cases:
            gone += await self.delete(case.id)
        return cases, gone
