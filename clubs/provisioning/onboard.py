"""Onboarding people: precreated accounts and single-use registration tokens.

- `precreate`: `PUT /_synapse/admin/v2/users/<mxid>` once, with a random password kept in the
  Vault (written before the call, so a crash loses nothing). A later apply never sends the
  password again: re-sending it would log the person out of every device.
- `token`: `POST /_synapse/admin/v1/registration_tokens/new` with one use and an expiry; only a
  sha256 of the token is stored (`TokenStore`). The token itself is handed back once, to be
  printed in an invite text (`invite_text`), and never logged.

Synapse does not say which account used a token. Once the person has registered, the admin links
them by writing their user id in the network file (`mxid:` of the person); the next apply invites
them to their club's rooms.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jinja2

from clubs.core.errors import NotFound
from clubs.core.http import MatrixHttp, admin_v1, admin_v2
from clubs.core.paths import config_dir
from clubs.core.secrets import Vault
from clubs.provisioning.tokens import TokenRecord, TokenStore, token_hash

log = logging.getLogger(__name__)

DEFAULT_TOKEN_TTL_S = 72 * 3600
LANGUAGES = ("ru", "en")


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token: shown once to the admin, never stored or logged."""

    person: str
    token: str
    expiry_ms: int | None

    def __repr__(self) -> str:
        return f"IssuedToken(person={self.person!r}, expiry_ms={self.expiry_ms!r})"


def password_key(mxid: str) -> str:
    return f"{mxid}/password"


async def create_account(http: MatrixHttp, vault: Vault, mxid: str, body: dict[str, Any]) -> bool:
    """Create a precreated person's account if it does not exist. Returns whether it did.

    The password goes to the vault first; an account that already exists is never touched
    (its password is not re-sent).
    """
    url = admin_v2("users", mxid)
    password = vault.get(password_key(mxid))
    if password is None:
        password = secrets.token_urlsafe(18)
        vault.set(password_key(mxid), password)
    try:
        await http.get(url, label="admin user")
        return False
    except NotFound:
        pass
    await http.put(
        url, {**body, "password": password, "logout_devices": False}, label="admin user upsert"
    )
    log.info("created one precreated account")
    return True


async def issue_token(
    http: MatrixHttp,
    store: TokenStore,
    network: str,
    person: str,
    *,
    uses_allowed: int = 1,
    ttl_s: int | None = DEFAULT_TOKEN_TTL_S,
) -> IssuedToken:
    """A new single-use registration token for `person`; only its hash is stored."""
    expiry_ms = int((time.time() + ttl_s) * 1000) if ttl_s is not None else None
    resp = await http.post(
        admin_v1("registration_tokens", "new"),
        {"uses_allowed": uses_allowed, "expiry_time": expiry_ms},
        label="admin token new",
    )
    token = str(resp["token"])
    store.add(network, person, token, expiry_ms=expiry_ms, uses_allowed=uses_allowed)
    log.info("issued one registration token")
    return IssuedToken(person, token, expiry_ms)


async def revoke_token(http: MatrixHttp, store: TokenStore, record: TokenRecord) -> bool:
    """Delete the token on the server (found by its hash) and mark it revoked locally."""
    resp = await http.get(admin_v1("registration_tokens"), label="admin tokens")
    deleted = False
    for t in resp.get("registration_tokens", []):
        token = t.get("token") if isinstance(t, dict) else None
        if isinstance(token, str) and token_hash(token) == record.token_sha256:
            await http.delete(admin_v1("registration_tokens", token), label="admin token delete")
            deleted = True
    store.mark_revoked(record.id)
    return deleted


def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(config_dir() / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - plain text for printing, not HTML
    )


def invite_text(
    homeserver: str, token: str, expiry_ms: int | None, *, network: str, lang: str = "ru"
) -> str:
    """The printable invite (ru or en) with the homeserver URL and the token."""
    if lang not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}")
    expires = (
        datetime.fromtimestamp(expiry_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        if expiry_ms is not None
        else None
    )
    template = _templates().get_template(f"provisioning/invite.{lang}.txt.j2")
    return template.render(homeserver=homeserver, token=token, expires=expires, network=network)
