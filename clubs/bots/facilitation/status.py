"""The session's one status message: what it shows, and its edits in place.

The message is an `m.notice` sent with the `!start` event's txn parts (kept in `status_job`),
pinned while the session runs and edited with `m.replace` only when its text changes. Time
left is shown in whole minutes, so a quiet session edits it at most about once a minute.
"""

from __future__ import annotations

import hashlib

from clubs.bots.context import BotContext
from clubs.bots.facilitation.parse import who
from clubs.bots.facilitation.session import Session
from clubs.core.html import Text
from clubs.core.ids import EventId, RoomId


def status_text(bot: BotContext, session: Session, lang: str, now: float) -> Text:
    left = session.time_left(now)
    rnd = session.round
    return bot.render(
        "facilitation/status",
        lang,
        title=session.title,
        item=session.item.title if session.item else None,
        number=session.current + 1,
        items=len(session.agenda),
        left=None if left is None else (left + 59) // 60 if left > 0 else -((-left) // 60),
        speaker=who(session.speaker) if session.speaker else None,
        queue=[{"who": who(e.user), "direct": e.direct} for e in session.queue[:10]],
        more=max(0, len(session.queue) - 10),
        turn=who(rnd.current) if rnd and rnd.current else None,
        turns_left=len(rnd.order) - rnd.pos - 1 if rnd else 0,
        upcoming=[i.title for i in session.agenda[session.current + 1 :][:5]],
    )


async def refresh(
    bot: BotContext,
    room_id: RoomId,
    session: Session,
    lang: str,
    job: tuple[str, ...],
    now: float,
) -> None:
    """Edit the status message if what it shows changed. `job` names this edit: a replay of
    the same change makes the same txn id, so the server keeps one edit."""
    if session.status_event is None and session.status_job:
        # The first send waited in the outbox: the same txn gives its event id once sent.
        first = status_text(bot, session, lang, now)
        sent = await bot.notice(
            room_id,
            "facilitation/status_wrap",
            job=tuple(session.status_job),
            lang=lang,
            body=first.body,
        )
        if sent is not None:
            session.status_event = sent
            await bot.pin(room_id, sent)
    text = status_text(bot, session, lang, now)
    if session.status_event is None or text.body == session.status_text:
        return
    digest = hashlib.sha256(text.body.encode()).hexdigest()[:16]
    await bot.edit(room_id, EventId(session.status_event), text, job=(*job, digest))
    session.status_text = text.body
    session.status_seq += 1
