"""Service accounts on Synapse: shared-secret registration, login, rate-limit exemptions.

The provisioner and the bots are accounts created with Synapse's shared-secret registration API
(no open registration needed). Their rate limits are lifted one account at a time with the admin
API; the server-wide limits that protect people stay as they are.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from clubs.core.errors import Forbidden, MatrixError
from clubs.core.http import DeviceId, MatrixHttp, UserId, admin_v1, cs
from clubs.core.secrets import Vault

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    """An account's access: who, which device, and the token (never logged)."""

    user_id: UserId
    device_id: DeviceId
    access_token: str

    def __repr__(self) -> str:  # keep the token out of tracebacks and logs
        return f"Session(user_id={self.user_id!r}, device_id={self.device_id!r})"


def registration_mac(
    secret: str, nonce: str, localpart: str, password: str, admin: bool, user_type: str | None
) -> str:
    """The HMAC-SHA1 that Synapse's shared-secret registration expects."""
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    parts = [nonce, localpart, password, "admin" if admin else "notadmin"]
    if user_type:
        parts.append(user_type)
    mac.update(b"\x00".join(p.encode() for p in parts))
    return mac.hexdigest()


async def register_shared_secret(
    http: MatrixHttp,
    shared_secret: str,
    localpart: str,
    password: str,
    *,
    admin: bool = False,
    user_type: str | None = None,
    displayname: str | None = None,
) -> Session:
    """Create an account with Synapse's shared-secret API. Raises MatrixError(M_USER_IN_USE)."""
    url = admin_v1("register")
    nonce = (await http.get(url, auth=False))["nonce"]
    body: dict[str, object] = {
        "nonce": nonce,
        "username": localpart,
        "password": password,
        "admin": admin,
        "mac": registration_mac(shared_secret, nonce, localpart, password, admin, user_type),
    }
    if user_type:
        body["user_type"] = user_type
    if displayname:
        body["displayname"] = displayname
    resp = await http.post(url, body, auth=False, label="admin register")
    return Session(UserId(resp["user_id"]), DeviceId(resp["device_id"]), resp["access_token"])


async def login_password(
    http: MatrixHttp, user_id: str, password: str, device_id: str | None = None
) -> Session:
    body: dict[str, object] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
        "initial_device_display_name": "service",
    }
    if device_id:
        body["device_id"] = device_id
    resp = await http.post(cs("login"), body, auth=False)
    return Session(UserId(resp["user_id"]), DeviceId(resp["device_id"]), resp["access_token"])


async def whoami(http: MatrixHttp) -> UserId:
    resp = await http.get(cs("account", "whoami"))
    return UserId(resp["user_id"])


async def ensure_ratelimit_override(admin: MatrixHttp, user_id: str) -> bool:
    """Exempt one account from rate limits (0/0). Returns whether anything changed."""
    url = admin_v1("users", user_id, "override_ratelimit")
    current = await admin.get(url, label="admin override_ratelimit")
    if current.get("messages_per_second") == 0 and current.get("burst_count") == 0:
        return False
    await admin.post(
        url, {"messages_per_second": 0, "burst_count": 0}, label="admin override_ratelimit"
    )
    return True


async def ensure_service_account(
    http: MatrixHttp,
    vault: Vault,
    shared_secret: str,
    localpart: str,
    *,
    server_name: str,
    admin: bool = False,
    user_type: str | None = "bot",
    displayname: str | None = None,
) -> tuple[Session, bool]:
    """Return a working session for a service account, creating it on first use.

    The password and token live in the vault. A stored token that still works is reused (same
    device, no new login); otherwise the account logs in again *on the same device id*, so a bot
    never acquires a second device. Returns (session, created).
    """
    user_id = f"@{localpart}:{server_name}"
    stored_token = vault.get(f"{user_id}/access_token")
    stored_device = vault.get(f"{user_id}/device_id")
    if stored_token and stored_device:
        probe = MatrixHttp(http.base_url, stored_token, session=http.session)
        try:
            if await whoami(probe) == user_id:
                await silence_push(probe)
                return Session(UserId(user_id), DeviceId(stored_device), stored_token), False
        except Forbidden:
            log.warning("stored token of %s is no longer valid; logging in again", user_id)
    password = vault.get(f"{user_id}/password")
    if password is None:
        password = secrets.token_urlsafe(24)
        vault.set(f"{user_id}/password", password)  # before registering: a crash loses nothing
    created = False
    try:
        session = await register_shared_secret(
            http,
            shared_secret,
            localpart,
            password,
            admin=admin,
            user_type=user_type,
            displayname=displayname,
        )
        created = True
    except MatrixError as e:
        if e.errcode != "M_USER_IN_USE":
            raise
        session = await login_password(http, user_id, password, stored_device)
    vault.set(f"{user_id}/access_token", session.access_token)
    vault.set(f"{user_id}/device_id", session.device_id)
    await silence_push(MatrixHttp(http.base_url, session.access_token, session=http.session))
    return session, created


MASTER_PUSH_RULE = cs("pushrules", "global", "override", ".m.rule.master", "enabled")


async def silence_push(http: MatrixHttp) -> bool:
    """Turn on the account's master push rule ("never notify"). A service account reads every
    message of every room it is in and has no phone to wake: without this Synapse evaluates its
    push rules and stores a notification row for it on every message (four bots in a room quadruple
    that work). Returns whether it changed anything."""
    current = await http.get(MASTER_PUSH_RULE, label="push rule")
    if current.get("enabled") is True:
        return False
    await http.put(MASTER_PUSH_RULE, {"enabled": True}, label="push rule")
    return True
