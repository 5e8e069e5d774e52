"""The redaction filter masks secrets whoever logs them."""

from __future__ import annotations

import io
import logging

import pytest
from cryptography.fernet import Fernet

from clubs.core.logs import redact, setup_logging


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("token syt_YWxpY2U_abcdefghijklmnop_0a1b2c seen", "syt_YWxpY2U_abcdefghijklmnop_0a1b2c"),
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("GET /_matrix/client/v3/sync?access_token=zzz123&since=s1", "zzz123"),
        ('{"password": "hunter2-long", "user": "x"}', "hunter2-long"),
        ("pickle_key=k3y-material", "k3y-material"),
        ("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----", "MIIB"),
    ],
)
def test_secrets_are_masked(text: str, secret: str) -> None:
    assert secret not in redact(text)


# Shaped like a Fernet key and a Fernet token (fixed, so the expected texts are exact).
KEY = "q3Jb0cX2v8xR5tY7uI9oP1aS4dF6gH8jK0lZ2xC4vB0="
TOKEN = (
    "gAAAAABnZ0Ecqk9yQ1UuJk3D8gFtYh5mVxW2pL7rN4sT6vB9cE1aZ3dG5hJ8kM0nP2qR4sU6wY8zA1bC3dE5fG7h"
    "J9kL1mN3pQ5rS7tU9vW1xY3zA5bC7dE9fG1hJ3kL5mN7pQ=="
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"CLUBS_MASTER_KEY={KEY}", "CLUBS_MASTER_KEY=<redacted>"),
        (f"env: CLUBS_MASTER_KEY: {KEY} ok", "env: CLUBS_MASTER_KEY: <redacted> ok"),
        (f'export CLUBS_MASTER_KEY="{KEY}"; run', "export CLUBS_MASTER_KEY=<redacted>; run"),
        (f'{{"CLUBS_MASTER_KEY": "{KEY}"}}', '{"CLUBS_MASTER_KEY": <redacted>}'),
        ("CLUBS_MASTER_KEY = short-one, next", "CLUBS_MASTER_KEY = <redacted>, next"),
        (f"vault {TOKEN} unreadable", "vault <redacted fernet token> unreadable"),
        (f"key ({KEY}) rejected", "key (<redacted key>) rejected"),
        (f"bad [{KEY}]", "bad [<redacted key>]"),
        # Not secrets: the key file's path, event and room ids (unpadded), short base64.
        (
            "CLUBS_MASTER_KEY_FILE=/run/secrets/master_key",
            "CLUBS_MASTER_KEY_FILE=/run/secrets/master_key",
        ),
        (
            "event $" + "a" * 43 + " in !" + "b" * 43 + ":x",
            "event $" + "a" * 43 + " in !" + "b" * 43 + ":x",
        ),
        ("hash YWJj=", "hash YWJj="),
    ],
)
def test_master_key_and_fernet_material_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_real_fernet_keys_and_tokens_are_masked() -> None:
    key = Fernet.generate_key()
    token = Fernet(key).encrypt(b'{"a": "b"}').decode()
    assert redact(f"k {key.decode()} t {token}.") == "k <redacted key> t <redacted fernet token>."
    assert redact(f"{key.decode()}\n{token}") == "<redacted key>\n<redacted fernet token>"


def test_filter_runs_on_every_record_including_third_party() -> None:
    stream = io.StringIO()
    handler = setup_logging(2, stream=stream)
    try:
        logging.getLogger("aiohttp.client").debug("url %s", "/x?access_token=leak-me-please")
        try:
            raise ValueError("password=also-secret")
        except ValueError:
            logging.getLogger("nio.crypto").exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert "leak-me-please" not in out
    assert "also-secret" not in out
    assert "access_token=<redacted>" in out


def test_chatty_libraries_are_quiet_by_default() -> None:
    handler = setup_logging(0, stream=io.StringIO())
    try:
        assert logging.getLogger("nio").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("aiohttp.access").getEffectiveLevel() == logging.WARNING
    finally:
        logging.getLogger().removeHandler(handler)


def test_messages_that_quote_event_content_keep_only_their_opening() -> None:
    stream = io.StringIO()
    handler = setup_logging(2, stream=stream)
    try:
        # nio, verbatim: jsonschema text with the event's content; the whole /sync response.
        logging.getLogger("nio.events.misc").warning(
            "Error validating event: ['canary-1'] is not of type 'string'"
        )
        logging.getLogger("nio.responses").debug(
            "Validating response schema %r: %s", {"type": "object"}, {"body": "canary-2"}
        )
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert "canary" not in out
    assert "Error validating event (details withheld" in out
    assert "Validating response schema (details withheld" in out
