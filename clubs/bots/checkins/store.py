"""What the check-ins bot keeps, per bot account in the shared database.

Clear (what scheduling and counting need): who opted in, their club, zone, days and time, a
random token that names the member in job keys (so a job row says nothing about who it is
for once the member row is gone), each check-in's slot, week, DM room, poll id and progress.
Sealed with AES-GCM (`box.py`): the mood, the answers, which messages held them, what was
shared; journal entries; the text of a pending "I need support".
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clubs.bots.checkins.aggregate import Answered
from clubs.bots.checkins.box import Box
from clubs.bots.checkins.week import WeeklyPlan, days_from_text
from clubs.core.db import Database, Migration
from clubs.core.ids import RoomId, UserId

COMPONENT = "checkins"
DEFAULT_QUESTIONS = 3
"""The default text questions (templates `checkins/q_talked`, `q_how`, `q_share`)."""
MIGRATIONS: Sequence[Migration] = (
    Migration(
        1,
        "members who opted in, their check-ins, the journal, supporters, pending help",
        """
        CREATE TABLE ci_members (
            bot TEXT NOT NULL,
            user_id TEXT NOT NULL,
            token TEXT NOT NULL,
            club TEXT NOT NULL,
            lang TEXT NOT NULL,
            tz TEXT NOT NULL,
            days TEXT NOT NULL,
            hour INTEGER NOT NULL,
            minute INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('on', 'off')),
            paused_until REAL NOT NULL DEFAULT 0,
            alert INTEGER NOT NULL DEFAULT 0,
            version INTEGER NOT NULL DEFAULT 1,
            updated_at REAL NOT NULL,
            PRIMARY KEY (bot, user_id),
            UNIQUE (bot, token)
        );
        CREATE TABLE ci_checkins (
            id INTEGER PRIMARY KEY,
            bot TEXT NOT NULL,
            token TEXT NOT NULL,
            club TEXT NOT NULL,
            slot TEXT NOT NULL,
            week TEXT NOT NULL,
            room_id TEXT NOT NULL,
            poll_id TEXT,
            step INTEGER NOT NULL DEFAULT 0,
            answered INTEGER NOT NULL DEFAULT 0,
            reminded INTEGER NOT NULL DEFAULT 0,
            alerted INTEGER NOT NULL DEFAULT 0,
            sealed BLOB NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (bot, token, slot)
        );
        CREATE INDEX ci_checkins_poll ON ci_checkins (bot, poll_id);
        CREATE INDEX ci_checkins_club ON ci_checkins (bot, club, created_at);
        CREATE TABLE ci_wins (
            id INTEGER PRIMARY KEY,
            bot TEXT NOT NULL,
            user_id TEXT NOT NULL,
            sealed BLOB NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX ci_wins_user ON ci_wins (bot, user_id, created_at);
        CREATE TABLE ci_supporters (
            bot TEXT NOT NULL,
            club TEXT NOT NULL,
            user_id TEXT NOT NULL,
            since REAL NOT NULL,
            PRIMARY KEY (bot, club, user_id)
        );
        CREATE TABLE ci_help (
            bot TEXT NOT NULL,
            user_id TEXT NOT NULL,
            sealed BLOB NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (bot, user_id)
        )
        """,
    ),
    Migration(
        2,
        "the journal's monthly digests: the member's own, and wins shared with the club",
        """
        ALTER TABLE ci_wins ADD COLUMN shared_club TEXT;
        ALTER TABLE ci_wins ADD COLUMN shared_month TEXT;
        CREATE INDEX ci_wins_shared ON ci_wins (bot, shared_club, shared_month);
        CREATE TABLE ci_digests (
            bot TEXT NOT NULL,
            user_id TEXT NOT NULL,
            token TEXT NOT NULL,
            tz TEXT NOT NULL,
            lang TEXT NOT NULL,
            PRIMARY KEY (bot, user_id),
            UNIQUE (bot, token)
        )
        """,
    ),
    Migration(
        3,
        "a journal entry once per command event",
        """
        ALTER TABLE ci_wins ADD COLUMN source TEXT;
        CREATE UNIQUE INDEX ci_wins_source ON ci_wins (bot, source)
        """,
    ),
    Migration(
        4,
        "which entry a `!wins delete` command deleted (a replay deletes no other)",
        """
        CREATE TABLE ci_win_deletes (
            bot TEXT NOT NULL,
            source TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (bot, source)
        )
        """,
    ),
)


@dataclass(frozen=True)
class Member:
    user_id: UserId
    token: str
    club: str
    lang: str
    plan: WeeklyPlan
    on: bool
    paused_until: float
    alert: bool
    version: int


@dataclass
class Content:
    """The sealed part of a check-in."""

    mood: int | None = None
    answers: dict[int, str] = field(default_factory=dict)
    """Question number (1-based, text questions only) → the member's words."""
    events: dict[str, int] = field(default_factory=dict)
    """The member's message event id → the question it answered (edits find it here)."""
    shared: list[int] = field(default_factory=list)
    told_low: bool = False
    """The member was shown the help resources after a mood of 1 (once per check-in)."""
    questions: list[str] | None = None
    """The club's own text questions when the check-in was sent; None: the default ones."""

    @property
    def count(self) -> int:
        """How many text questions this check-in asks."""
        return len(self.questions) if self.questions is not None else DEFAULT_QUESTIONS

    def to_json(self) -> dict[str, Any]:
        return {
            "mood": self.mood,
            "answers": {str(k): v for k, v in self.answers.items()},
            "events": self.events,
            "shared": self.shared,
            "told_low": self.told_low,
            "questions": self.questions,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Content:
        mood = data.get("mood")
        questions = data.get("questions")
        return cls(
            mood if isinstance(mood, int) else None,
            {int(k): str(v) for k, v in dict(data.get("answers") or {}).items()},
            {str(k): int(v) for k, v in dict(data.get("events") or {}).items()},
            [int(i) for i in data.get("shared") or []],
            bool(data.get("told_low")),
            [str(q) for q in questions] if isinstance(questions, list) else None,
        )


@dataclass(frozen=True)
class Checkin:
    id: int
    token: str
    club: str
    slot: str
    week: str
    room_id: RoomId
    poll_id: str | None
    step: int
    answered: bool
    reminded: bool
    alerted: bool
    content: Content

    def __repr__(self) -> str:  # the content never reaches a log through a repr
        return f"Checkin(id={self.id}, slot={self.slot!r}, step={self.step})"


@dataclass(frozen=True)
class Win:
    id: int
    text: str
    created_at: float

    def __repr__(self) -> str:
        return f"Win(id={self.id})"


@dataclass(frozen=True)
class Digest:
    """A member who asked for their journal once a month."""

    user_id: UserId
    token: str
    tz: str
    lang: str


@dataclass(frozen=True)
class Forgotten:
    """What `forget` deleted, for the member's answer."""

    schedule: bool
    checkins: int
    wins: int
    supporter: int
    help: int
    tokens: tuple[str, ...]
    """The member's tokens (check-ins and digest), whose pending jobs are to be cancelled."""


_CHECKIN_COLUMNS = (
    "id, token, club, slot, week, room_id, poll_id, step, answered, reminded, alerted, sealed"
)
_MEMBER_COLUMNS = (
    "user_id, token, club, lang, tz, days, hour, minute, state, paused_until, alert, version"
)


class CheckinStore:
    def __init__(self, db: Database, bot: str, box: Box) -> None:
        self.db = db
        self.bot = bot
        self.box = box

    @classmethod
    async def open(cls, db: Database, bot: str, box: Box) -> CheckinStore:
        await db.migrate(COMPONENT, MIGRATIONS)
        return cls(db, bot, box)

    # --- members ---------------------------------------------------------------------------

    async def member(self, user_id: str) -> Member | None:
        row = await self.db.fetchone(
            f"SELECT {_MEMBER_COLUMNS} FROM ci_members WHERE bot = ? AND user_id = ?",  # noqa: S608
            (self.bot, user_id),
        )
        return _member(row) if row is not None else None

    async def member_by_token(self, token: str) -> Member | None:
        row = await self.db.fetchone(
            f"SELECT {_MEMBER_COLUMNS} FROM ci_members WHERE bot = ? AND token = ?",  # noqa: S608
            (self.bot, token),
        )
        return _member(row) if row is not None else None

    async def opt_in(
        self, user_id: str, club: str, lang: str, plan: WeeklyPlan, now: float
    ) -> Member:
        """Opt in, or change the plan: on, not paused, a new version (older jobs go stale).
        `lang` is the language of a new member (their club's); an existing member keeps theirs
        (`set_lang`)."""
        async with self.db.transaction():
            await self.db.execute(
                "INSERT INTO ci_members (bot, user_id, token, club, lang, tz, days, hour, minute, "
                "state, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'on', ?) "
                "ON CONFLICT (bot, user_id) DO UPDATE SET club = excluded.club, "
                "tz = excluded.tz, days = excluded.days, "
                "hour = excluded.hour, minute = excluded.minute, state = 'on', "
                "paused_until = 0, version = version + 1, updated_at = excluded.updated_at",
                (
                    self.bot,
                    user_id,
                    secrets.token_hex(12),
                    club,
                    lang,
                    plan.tz,
                    plan.days_text,
                    plan.hour,
                    plan.minute,
                    now,
                ),
            )
        member = await self.member(user_id)
        assert member is not None
        return member

    async def set_state(
        self, user_id: str, *, on: bool, paused_until: float, now: float
    ) -> Member | None:
        """Off, paused or back: the version moves on (pending jobs go stale)."""
        await self.db.execute(
            "UPDATE ci_members SET state = ?, paused_until = ?, version = version + 1, "
            "updated_at = ? WHERE bot = ? AND user_id = ?",
            ("on" if on else "off", paused_until, now, self.bot, user_id),
        )
        return await self.member(user_id)

    async def set_lang(self, user_id: str, lang: str, now: float) -> bool:
        """The language the bot writes to the member in: check-ins, reminders, digests."""
        async with self.db.transaction():
            changed = await self.db.execute(
                "UPDATE ci_members SET lang = ?, updated_at = ? WHERE bot = ? AND user_id = ?",
                (lang, now, self.bot, user_id),
            )
            await self.db.execute(
                "UPDATE ci_digests SET lang = ? WHERE bot = ? AND user_id = ?",
                (lang, self.bot, user_id),
            )
        return bool(changed)

    async def set_alert(self, user_id: str, consent: bool, now: float) -> bool:
        return bool(
            await self.db.execute(
                "UPDATE ci_members SET alert = ?, updated_at = ? WHERE bot = ? AND user_id = ?",
                (int(consent), now, self.bot, user_id),
            )
        )

    # --- check-ins -------------------------------------------------------------------------

    async def add_checkin(
        self,
        token: str,
        club: str,
        slot: str,
        week: str,
        room_id: str,
        now: float,
        *,
        questions: Sequence[str] | None = None,
    ) -> Checkin:
        """The check-in of this slot (created once: a job run again finds the same row)."""
        content = Content(questions=list(questions) if questions is not None else None)
        await self.db.execute(
            "INSERT OR IGNORE INTO ci_checkins (bot, token, club, slot, week, room_id, sealed, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (self.bot, token, club, slot, week, room_id, self._seal(token, content), now),
        )
        found = await self._one("token = ? AND slot = ?", (token, slot))
        assert found is not None
        return found

    async def checkin(self, checkin_id: int) -> Checkin | None:
        return await self._one("id = ?", (checkin_id,))

    async def by_poll(self, poll_id: str) -> Checkin | None:
        return await self._one("poll_id = ?", (poll_id,))

    async def latest(self, token: str) -> Checkin | None:
        """The member's newest check-in: the only one whose answers may still change."""
        return await self._one("token = ? ORDER BY id DESC LIMIT 1", (token,))

    async def before(self, token: str, checkin_id: int) -> Checkin | None:
        return await self._one("token = ? AND id < ? ORDER BY id DESC LIMIT 1", (token, checkin_id))

    async def save(self, c: Checkin) -> None:
        """What the member's answers changed: the sealed content and the progress. Only the
        sync loop's handlers call this (one at a time); jobs use the narrow updates below, so a
        job never writes back a stale copy of the answers."""
        await self.db.execute(
            "UPDATE ci_checkins SET step = ?, answered = ?, alerted = ?, sealed = ? "
            "WHERE bot = ? AND id = ?",
            (
                c.step,
                int(c.answered),
                int(c.alerted),
                self._seal(c.token, c.content),
                self.bot,
                c.id,
            ),
        )

    async def set_sent(self, checkin_id: int, poll_id: str) -> None:
        """The check-in went out: its poll, and question 1 awaited (only if still unsent)."""
        await self.db.execute(
            "UPDATE ci_checkins SET poll_id = ?, step = MAX(step, 1) "
            "WHERE bot = ? AND id = ? AND poll_id IS NULL",
            (poll_id, self.bot, checkin_id),
        )

    async def mark_reminded(self, checkin_id: int) -> None:
        await self.db.execute(
            "UPDATE ci_checkins SET reminded = 1 WHERE bot = ? AND id = ?", (self.bot, checkin_id)
        )

    async def answered_in(self, club: str, since: float) -> list[Answered]:
        """The club's answered check-ins since `since`, for the aggregates (mood opened here,
        never returned with who gave it)."""
        rows = await self.db.fetchall(
            "SELECT token, week, sealed FROM ci_checkins "
            "WHERE bot = ? AND club = ? AND answered = 1 AND created_at >= ?",
            (self.bot, club, since),
        )
        return [
            Answered(str(r["week"]), self._open(str(r["token"]), r["sealed"]).mood) for r in rows
        ]

    async def prune(self, club: str, before: float) -> int:
        """Retention: the club's check-ins older than `before` are deleted (answers with
        them)."""
        return await self.db.execute(
            "DELETE FROM ci_checkins WHERE bot = ? AND club = ? AND created_at < ?",
            (self.bot, club, before),
        )

    async def clubs(self) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT DISTINCT club FROM ci_checkins WHERE bot = ?", (self.bot,)
        )
        return [str(r["club"]) for r in rows]

    async def _one(self, where: str, params: tuple[Any, ...]) -> Checkin | None:
        row = await self.db.fetchone(
            f"SELECT {_CHECKIN_COLUMNS} FROM ci_checkins WHERE bot = ? AND {where}",  # noqa: S608
            (self.bot, *params),
        )
        if row is None:
            return None
        token = str(row["token"])
        return Checkin(
            int(row["id"]),
            token,
            str(row["club"]),
            str(row["slot"]),
            str(row["week"]),
            RoomId(str(row["room_id"])),
            row["poll_id"],
            int(row["step"]),
            bool(row["answered"]),
            bool(row["reminded"]),
            bool(row["alerted"]),
            self._open(token, row["sealed"]),
        )

    def _seal(self, token: str, content: Content) -> bytes:
        return self.box.seal_json(content.to_json(), f"checkin|{token}")

    def _open(self, token: str, blob: bytes) -> Content:
        return Content.from_json(self.box.open_json(bytes(blob), f"checkin|{token}"))

    # --- the journal -----------------------------------------------------------------------

    async def add_win(self, user_id: str, text: str, now: float, *, source: str) -> bool:
        """A journal entry, once per command event (`source`): a replayed command adds none."""
        return bool(
            await self.db.execute(
                "INSERT OR IGNORE INTO ci_wins (bot, user_id, sealed, created_at, source) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.bot, user_id, self.box.seal(text.encode(), f"win|{user_id}"), now, source),
            )
        )

    async def wins(self, user_id: str, limit: int) -> list[Win]:
        rows = await self.db.fetchall(
            "SELECT id, sealed, created_at FROM ci_wins WHERE bot = ? AND user_id = ? "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (self.bot, user_id, limit),
        )
        return [
            Win(
                int(r["id"]),
                self.box.open(bytes(r["sealed"]), f"win|{user_id}").decode(),
                float(r["created_at"]),
            )
            for r in rows
        ]

    async def count_wins(self, user_id: str) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS n FROM ci_wins WHERE bot = ? AND user_id = ?", (self.bot, user_id)
        )
        return int(row["n"]) if row is not None else 0

    async def win_times(self, user_id: str) -> list[float]:
        """When each entry was written (for counts over time; nothing opened)."""
        rows = await self.db.fetchall(
            "SELECT created_at FROM ci_wins WHERE bot = ? AND user_id = ? ORDER BY created_at",
            (self.bot, user_id),
        )
        return [float(r["created_at"]) for r in rows]

    async def wins_between(self, user_id: str, start: float, end: float) -> list[Win]:
        rows = await self.db.fetchall(
            "SELECT id, sealed, created_at FROM ci_wins WHERE bot = ? AND user_id = ? "
            "AND created_at >= ? AND created_at < ? ORDER BY created_at, id",
            (self.bot, user_id, start, end),
        )
        return [
            Win(
                int(r["id"]),
                self.box.open(bytes(r["sealed"]), f"win|{user_id}").decode(),
                float(r["created_at"]),
            )
            for r in rows
        ]

    async def all_wins(self, user_id: str) -> list[Win]:
        """Every entry of the member's journal, oldest first (for their own export)."""
        return await self.wins_between(user_id, float("-inf"), float("inf"))

    async def delete_win(self, user_id: str, win_id: int, *, source: str, now: float) -> bool:
        """One entry gone for good (also from a club digest not posted yet), once per command
        event (`source`): a replayed command, whose list has shifted since, deletes nothing.
        False if this command had deleted already."""
        async with self.db.transaction():
            done = await self.db.execute(
                "INSERT OR IGNORE INTO ci_win_deletes (bot, source, at) VALUES (?, ?, ?)",
                (self.bot, source, now),
            )
            if done:
                await self.db.execute(
                    "DELETE FROM ci_wins WHERE bot = ? AND user_id = ? AND id = ?",
                    (self.bot, user_id, win_id),
                )
                # The record of a delete is needed only while its event can be replayed.
                await self.db.execute(
                    "DELETE FROM ci_win_deletes WHERE bot = ? AND at < ?",
                    (self.bot, now - 8 * 24 * 3600),
                )
        return bool(done)

    async def share_win(self, user_id: str, win_id: int, club: str, month: str) -> bool:
        """Mark an entry for the club's anonymous digest of `month` (once)."""
        return bool(
            await self.db.execute(
                "UPDATE ci_wins SET shared_club = ?, shared_month = ? "
                "WHERE bot = ? AND user_id = ? AND id = ? AND shared_club IS NULL",
                (club, month, self.bot, user_id, win_id),
            )
        )

    async def shared_wins(self, club: str, month: str) -> list[str]:
        """The texts shared with the club for `month`, in no telling order (sorted by text)."""
        rows = await self.db.fetchall(
            "SELECT user_id, sealed FROM ci_wins WHERE bot = ? AND shared_club = ? "
            "AND shared_month = ?",
            (self.bot, club, month),
        )
        return sorted(
            self.box.open(bytes(r["sealed"]), f"win|{r['user_id']}").decode() for r in rows
        )

    async def set_digest(self, user_id: str, tz: str, lang: str) -> Digest:
        await self.db.execute(
            "INSERT INTO ci_digests (bot, user_id, token, tz, lang) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (bot, user_id) DO UPDATE SET tz = excluded.tz, lang = excluded.lang",
            (self.bot, user_id, secrets.token_hex(12), tz, lang),
        )
        found = await self.digest_of(user_id)
        assert found is not None
        return found

    async def digest_of(self, user_id: str) -> Digest | None:
        row = await self.db.fetchone(
            "SELECT user_id, token, tz, lang FROM ci_digests WHERE bot = ? AND user_id = ?",
            (self.bot, user_id),
        )
        return _digest(row) if row is not None else None

    async def digest_by_token(self, token: str) -> Digest | None:
        row = await self.db.fetchone(
            "SELECT user_id, token, tz, lang FROM ci_digests WHERE bot = ? AND token = ?",
            (self.bot, token),
        )
        return _digest(row) if row is not None else None

    async def drop_digest(self, user_id: str) -> Digest | None:
        found = await self.digest_of(user_id)
        await self.db.execute(
            "DELETE FROM ci_digests WHERE bot = ? AND user_id = ?", (self.bot, user_id)
        )
        return found

    # --- supporters and "I need support" ----------------------------------------------------

    async def set_supporter(self, club: str, user_id: str, on: bool, now: float) -> bool:
        if on:
            sql = (
                "INSERT OR IGNORE INTO ci_supporters (bot, club, user_id, since) "
                "VALUES (?, ?, ?, ?)"
            )
            return bool(await self.db.execute(sql, (self.bot, club, user_id, now)))
        return bool(
            await self.db.execute(
                "DELETE FROM ci_supporters WHERE bot = ? AND club = ? AND user_id = ?",
                (self.bot, club, user_id),
            )
        )

    async def supporters(self, clubs: Sequence[str]) -> list[UserId]:
        found: list[UserId] = []
        for club in clubs:
            rows = await self.db.fetchall(
                "SELECT user_id FROM ci_supporters WHERE bot = ? AND club = ? ORDER BY since",
                (self.bot, club),
            )
            found += [UserId(str(r["user_id"])) for r in rows if r["user_id"] not in found]
        return found

    async def set_help(self, user_id: str, text: str, expires_at: float) -> None:
        await self.db.execute(
            "INSERT INTO ci_help (bot, user_id, sealed, expires_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (bot, user_id) DO UPDATE SET sealed = excluded.sealed, "
            "expires_at = excluded.expires_at",
            (self.bot, user_id, self.box.seal(text.encode(), f"help|{user_id}"), expires_at),
        )

    async def take_help(self, user_id: str, now: float) -> str | None:
        """The pending text (deleted as it is taken); None if none or expired."""
        async with self.db.transaction():
            row = await self.db.fetchone(
                "SELECT sealed, expires_at FROM ci_help WHERE bot = ? AND user_id = ?",
                (self.bot, user_id),
            )
            await self.db.execute(
                "DELETE FROM ci_help WHERE bot = ? AND user_id = ?", (self.bot, user_id)
            )
        if row is None or float(row["expires_at"]) < now:
            return None
        return self.box.open(bytes(row["sealed"]), f"help|{user_id}").decode()

    # --- forgetting ------------------------------------------------------------------------

    async def forget(self, user_id: str) -> Forgotten:
        """Delete every row about the member, in one transaction."""
        async with self.db.transaction():
            rows = await self.db.fetchall(
                "SELECT token FROM ci_members WHERE bot = ? AND user_id = ?", (self.bot, user_id)
            )
            tokens = tuple(str(r["token"]) for r in rows)
            checkins = 0
            for token in tokens:
                checkins += await self.db.execute(
                    "DELETE FROM ci_checkins WHERE bot = ? AND token = ?", (self.bot, token)
                )
            schedule = await self.db.execute(
                "DELETE FROM ci_members WHERE bot = ? AND user_id = ?", (self.bot, user_id)
            )
            wins = await self.db.execute(
                "DELETE FROM ci_wins WHERE bot = ? AND user_id = ?", (self.bot, user_id)
            )
            supporter = await self.db.execute(
                "DELETE FROM ci_supporters WHERE bot = ? AND user_id = ?", (self.bot, user_id)
            )
            help_rows = await self.db.execute(
                "DELETE FROM ci_help WHERE bot = ? AND user_id = ?", (self.bot, user_id)
            )
            digests = await self.db.fetchall(
                "SELECT token FROM ci_digests WHERE bot = ? AND user_id = ?", (self.bot, user_id)
            )
            tokens += tuple(str(r["token"]) for r in digests)
            await self.db.execute(
                "DELETE FROM ci_digests WHERE bot = ? AND user_id = ?", (self.bot, user_id)
            )
        return Forgotten(bool(schedule), checkins, wins, supporter, help_rows, tokens)


def _digest(row: Any) -> Digest:
    return Digest(UserId(str(row["user_id"])), str(row["token"]), str(row["tz"]), str(row["lang"]))


def _member(row: Any) -> Member:
    return Member(
        UserId(str(row["user_id"])),
        str(row["token"]),
        str(row["club"]),
        str(row["lang"]),
        WeeklyPlan(
            days_from_text(str(row["days"])), int(row["hour"]), int(row["minute"]), str(row["tz"])
        ),
        row["state"] == "on",
        float(row["paused_until"]),
        bool(row["alert"]),
        int(row["version"]),
    )
