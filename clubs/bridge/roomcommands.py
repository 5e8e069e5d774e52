"""`!tg` in a bridged room: the room's moderators pause and resume the relay; anyone asks what
the bridge is doing there.

    !tg            what the commands are
    !tg status     the mode, whether relaying runs or is paused, whether Telegram answers
    !tg pause      moderators (power 50 or more): nothing crosses, either way, until resumed
    !tg resume     moderators: relaying starts again with the next message

A pause is for a bad moment: a raid from the Telegram side, a member who posted something that
must not leave, a conversation the room wants to have among itself for a while. It holds across
restarts (the bridge's store). What is said while paused never crosses, not even after the
resume: nothing is queued. Redactions still reach Telegram, so a moderator can still take back
what crossed before. The commands themselves are never relayed. The Telegram chat is told when
the relay pauses and resumes, so its members know why the room is quiet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Verb = Literal["help", "status", "pause", "resume", "unknown"]

PAUSE_POWER = 50
"""Power a member needs to pause or resume (a moderator's, in the rooms the provisioner makes)."""

HELP = (
    "Мост в Telegram: !tg status — что происходит; !tg pause — остановить пересылку в обе "
    "стороны (модераторы); !tg resume — возобновить (модераторы). / Telegram bridge: "
    "!tg status — what is going on; !tg pause — stop relaying both ways (moderators); "
    "!tg resume — start again (moderators)."
)
NOT_ALLOWED = (
    "Остановить или возобновить пересылку могут только модераторы комнаты. / Only the room's "
    "moderators can pause or resume the relay."
)
PAUSED = (
    "⏸ Пересылка в Telegram и из Telegram остановлена. Сказанное сейчас не перешлётся и потом. "
    "/ ⏸ Relaying to and from Telegram is paused. What is said now will not be relayed later "
    "either."
)
RESUMED = (
    "▶️ Пересылка в Telegram и из Telegram снова идёт. / ▶️ Relaying to and from Telegram is on "
    "again."
)
TELEGRAM_PAUSED = (
    "⏸ Модераторы комнаты в Matrix остановили пересылку. / Relay paused by the room's moderators."
)
TELEGRAM_RESUMED = "▶️ Пересылка снова идёт. / Relay resumed."


def parse(content: Mapping[str, Any]) -> Verb | None:
    """The `!tg` command a message holds, or None when it is not one (then it may be relayed)."""
    body = content.get("body")
    if not isinstance(body, str) or content.get("msgtype") not in ("m.text", "m.notice"):
        return None
    words = body.strip().split()
    if not words or words[0].lower() != "!tg":
        return None
    if len(words) == 1 or words[1].lower() == "help":
        return "help"
    verb = words[1].lower()
    if verb in ("status", "pause", "resume"):
        return verb  # type: ignore[return-value]  # narrowed by the membership test
    return "unknown"


def status(*, mode: str, paused: bool, telegram_ok: bool, encrypted: bool) -> str:
    """The answer to `!tg status`: fixed words, no names, no chat id."""
    ru_mode = "в обе стороны" if mode == "relay" else "только из Matrix в Telegram"
    en_mode = "both ways" if mode == "relay" else "from Matrix to Telegram only"
    ru_state = "остановлена модераторами" if paused else "идёт"
    en_state = "paused by the moderators" if paused else "on"
    ru_tg = "отвечает" if telegram_ok else "не отвечает, сообщения ждут"
    en_tg = "answering" if telegram_ok else "not answering, messages wait"
    ru_e2e = " Комната зашифрована: пересылаемое выходит из шифрования." if encrypted else ""
    en_e2e = " The room is encrypted: what is relayed leaves the encryption." if encrypted else ""
    return (
        f"Мост в Telegram: пересылка {ru_mode}, {ru_state}; Telegram {ru_tg}.{ru_e2e} / "
        f"Telegram bridge: relaying {en_mode}, {en_state}; Telegram {en_tg}.{en_e2e}"
    )


@dataclass(frozen=True)
class Outcome:
    answer: str
    """The bot's reply in the room."""
    paused: bool
    """Whether the room is paused after the command."""
    tell_telegram: str | None = None
    """What the Telegram chat is told (only when the pause changed)."""


def decide(
    verb: Verb,
    *,
    allowed: bool,
    paused: bool,
    mode: str,
    telegram_ok: bool,
    encrypted: bool,
) -> Outcome:
    """What a command does, given whether its sender may pause (power ≥ `PAUSE_POWER`) and
    the room's state: pure, so every branch is tested without a homeserver."""
    if verb in ("pause", "resume"):
        if not allowed:
            return Outcome(NOT_ALLOWED, paused)
        pause = verb == "pause"
        tell = (TELEGRAM_PAUSED if pause else TELEGRAM_RESUMED) if pause != paused else None
        return Outcome(PAUSED if pause else RESUMED, pause, tell)
    if verb == "status":
        text = status(mode=mode, paused=paused, telegram_ok=telegram_ok, encrypted=encrypted)
        return Outcome(text, paused)
    return Outcome(HELP, paused)
