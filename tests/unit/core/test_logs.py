"""The redaction filter masks secrets whoever logs them."""

from __future__ import annotations

import io
import logging

import pytest

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
