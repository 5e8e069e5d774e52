"""The few Synapse admin API calls the moderation bot needs, and nothing else.

The bots run with their own accounts' tokens. Two things moderation does have no client-server
equivalent, or only a much slower one: reading the reports members send to the server (the
spec leaves reports to the server), and redacting everything one person sent across many rooms
in one request. Both need a server admin's token. Rather than handing a bot an HTTP client that
can call any admin endpoint (create admins, deactivate accounts, read any room, purge rooms), a
bot gets this object: each method is one endpoint, read-only or limited to redacting one user's
events. docs/security.md says what this does and does not protect against.

Paths (Synapse `docs/admin_api/`):
- `GET /_synapse/admin/v1/event_reports` and `…/event_reports/{id}`: reports, oldest first;
- `POST /_synapse/admin/v1/user/{user_id}/redact` and `GET …/user/redact_status/{id}`: redact a
  user's events in given rooms as a background task, and follow it;
- `GET /_synapse/admin/v1/users/{user_id}/memberships`: the user's membership in every room.
"""

from __future__ import annotations

from collections.abc import Sequence

from clubs.core.http import JsonDict, MatrixHttp, RoomId, UserId, admin_v1


class AdminView:
    """A narrow view of the admin API for moderation: event reports, one user's redactions and
    memberships. It does not own the client it is given (the composition root closes it)."""

    def __init__(self, http: MatrixHttp) -> None:
        self.__http = http  # name-mangled: not a handle for callers to reach for

    def __repr__(self) -> str:
        return "AdminView()"

    async def event_reports(self, start: int, limit: int) -> JsonDict:
        """One page of event reports from offset `start`, oldest first:
        `{"event_reports": [...], "total": n, "next_token"?: offset}`."""
        return await self.__http.get(
            admin_v1("event_reports"),
            query={"from": str(start), "limit": str(limit), "dir": "f"},
            label="admin event_reports",
        )

    async def event_report(self, report_id: int) -> JsonDict:
        """One report in full, with the reported event's `event_json` (ciphertext for an
        encrypted event: only a room member's device can decrypt it)."""
        return await self.__http.get(
            admin_v1("event_reports", str(report_id)), label="admin event_report"
        )

    async def redact_user(
        self, user_id: UserId, rooms: Sequence[RoomId], limit: int, reason: str | None
    ) -> str:
        """Start redacting up to `limit` of `user_id`'s newest events in each of `rooms` (Synapse
        sends the redactions as the user for a local one, as the admin otherwise). Returns the
        task id for `redact_status`."""
        body: JsonDict = {"rooms": list(rooms), "limit": limit}
        if reason:
            body["reason"] = reason
        resp = await self.__http.post(
            admin_v1("user", user_id, "redact"), body, label="admin user redact"
        )
        return str(resp["redact_id"])

    async def redact_status(self, redact_id: str) -> JsonDict:
        """`{"status": "scheduled"|"active"|"complete"|"failed", "failed_redactions": {...}}`."""
        return await self.__http.get(
            admin_v1("user", "redact_status", redact_id), label="admin redact status"
        )

    async def memberships(self, user_id: UserId) -> dict[str, str] | None:
        """Room id → `user_id`'s membership in every room the server knows (None if the answer
        is not the expected shape)."""
        resp = await self.__http.get(
            admin_v1("users", user_id, "memberships"), label="admin memberships"
        )
        found = resp.get("memberships")
        if not isinstance(found, dict):
            return None
        return {str(k): str(v) for k, v in found.items()}
