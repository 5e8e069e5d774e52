"""Logging that never carries secrets or message content.

Our own code logs ids, types, counts and durations, never content. As a second line of defence a
`RedactingFilter` sits on every handler: it masks anything shaped like an access token, a bearer
header, a password, token or key field (`CLUBS_MASTER_KEY=…` included), a private key, or a bare
Fernet token or key (the vault's ciphertext and key), whoever logged it, and it cuts the messages
in which nio quotes whole events or responses (`QUOTING_MESSAGES`) down to their fixed opening.
Third-party loggers that print request bodies or query strings at DEBUG are held at WARNING
unless explicitly asked for.
"""

from __future__ import annotations

import logging
import re
import sys

# Loggers of libraries that print bodies, URLs with tokens or event content when chatty.
TAMED_LOGGERS = (
    "nio",
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.server",
    "peewee",
    "mautrix",
    "aiosqlite",  # at DEBUG: every statement with its parameters (user ids, event ids)
)

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Synapse access/refresh tokens and registration tokens.
    (re.compile(r"\bsy[tr]_[A-Za-z0-9_\-]{6,}"), "syt_<redacted>"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-=]+"), "Bearer <redacted>"),
    (re.compile(r"(?i)(access_token|as_token|hs_token|token)=[^&\s\"']+"), r"\1=<redacted>"),
    (
        re.compile(
            r"(?i)([\"']?(?:password|passphrase|access_token|refresh_token|as_token|hs_token|"
            r"registration_token|token|secret|private_key|pickle_key|recovery_key|master_key|"
            r"mac)[\"']?"
            r"\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,}]+)"
        ),
        r"\1<redacted>",
    ),
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        "<redacted private key>",
    ),
    # Fernet tokens (version byte 0x80 and a timestamp's zero high bytes: "gAAAAA…").
    (re.compile(r"(?<![A-Za-z0-9_\-])gAAAAA[A-Za-z0-9_\-]{60,}={0,2}"), "<redacted fernet token>"),
    # Fernet keys: 32 bytes in url-safe base64, 43 characters and one "=".
    (re.compile(r"(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{43}=(?![A-Za-z0-9_\-=])"), "<redacted key>"),
)


# Third-party messages that quote whole events or responses (message bodies, display names):
# only their fixed opening is kept. nio logs the first two even at WARNING, the third at DEBUG
# (the entire parsed /sync, /messages or /joined_members response).
QUOTING_MESSAGES = (
    "Error validating event",  # nio.events.misc: jsonschema text quoting the event's content
    "Error validating response",  # nio.responses: idem, for a response
    "Validating response schema",  # nio.responses, DEBUG: the schema and the whole response
)
WITHHELD = " (details withheld: they quote event content)"


def redact(text: str) -> str:
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RedactingFilter(logging.Filter):
    """Formats the record's message once and masks secrets in it (and in the traceback text);
    a message that quotes event content keeps only its fixed opening."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(QUOTING_MESSAGES):
            record.msg = next(p for p in QUOTING_MESSAGES if record.msg.startswith(p)) + WITHHELD
            record.args = None
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not break logging
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def setup_logging(verbosity: int = 0, *, stream: object = None) -> logging.Handler:
    """Configure the root logger: one stderr handler with the redaction filter.

    verbosity 0 → INFO for our code, 1 → DEBUG for our code, 2 → DEBUG for everything.
    """
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 1 else logging.INFO)
    for name in TAMED_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    return handler


def install_redaction_everywhere() -> None:
    """Add the redaction filter to every handler already attached anywhere (e.g. by pytest)."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for h in lg.handlers:
            if not any(isinstance(f, RedactingFilter) for f in h.filters):
                h.addFilter(RedactingFilter())
