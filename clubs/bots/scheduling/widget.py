"""The call of an online session as an Element widget in the club's sessions room, from five
minutes before the start to the end — only in clubs that accept it (`call_widget: true` in the
club settings): a widget is room state, so the call link becomes readable by the server, which
the encrypted announcement and reminders never expose.

Element reads `im.vector.modular.widgets` (state key = widget id) and rebuilds its own Jitsi
wrapper from `data.domain` and `data.conferenceId`; `io.element.widgets.layout` pins it to the
top. Removing it is the same state key with empty content. Only Jitsi-style links
(`https://<domain>/<room>`) make a widget; anything else stays a link in the messages.

Which call a new online session gets is the club's setting too (`calls`, from the network
file): a room on a Jitsi server, or the sessions room's own Element Call (`call_link`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

CALL_SERVICE = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")
"""A call service URL the bot will put into links: https, a host name, an optional path."""

WIDGETS = "im.vector.modular.widgets"
LAYOUT = "io.element.widgets.layout"
LEAD_S = 5 * 60
_JITSI = re.compile(r"^https://([a-z0-9.-]+\.[a-z]{2,})/([A-Za-z0-9_-]{3,128})$")


def widget_id(series_id: int, occ_key: str) -> str:
    digits = re.sub(r"\D", "", occ_key)
    return f"clubs_session_{series_id}_{digits}"


def jitsi_widget(link: str, title: str) -> dict[str, Any] | None:
    """The widget content for a Jitsi link, or None for a link that is not one."""
    m = _JITSI.match(link)
    if m is None:
        return None
    domain, conference = m.group(1), m.group(2)
    url = (
        "https://app.element.io/jitsi.html?confId=" + conference + "#conferenceDomain=$domain"
        "&conferenceId=$conferenceId&isAudioOnly=$isAudioOnly&displayName=$matrix_display_name"
        "&avatarUrl=$matrix_avatar_url&userId=$matrix_user_id&roomId=$matrix_room_id"
        "&theme=$theme&roomName=$roomName"
    )
    return {
        "type": "jitsi",
        "url": url,
        "name": "Jitsi",
        "data": {
            "domain": domain,
            "conferenceId": conference,
            "roomName": title,
            "isAudioOnly": False,
            "isVideoChannel": False,
        },
    }


def pinned_layout(current: Mapping[str, Any] | None, wid: str, *, on: bool) -> dict[str, Any]:
    """The layout with this widget pinned on top (or taken out), other widgets kept."""
    widgets = dict((current or {}).get("widgets") or {})
    if on:
        widgets[wid] = {"container": "top", "index": 0, "width": 100, "height": 40}
    else:
        widgets.pop(wid, None)
    return {**(current or {}), "widgets": widgets}


def accepts_widgets(settings: Mapping[str, Any]) -> bool:
    return settings.get("call_widget") is True


JITSI, ELEMENT_CALL = "jitsi", "element_call"
CALL_PROVIDERS = (JITSI, ELEMENT_CALL)


def call_link(settings: Mapping[str, Any], default_service: str, room_id: str, token: str) -> str:
    """The call of a new online session as the club's settings say (`calls`): a room on the
    Jitsi server (the network's, or the bot's default), or the sessions room's own Element Call,
    reached through a matrix.to link to the room (Element starts the call there). Anything
    malformed in the settings counts as not set."""
    calls = settings.get("calls")
    calls = calls if isinstance(calls, Mapping) else {}
    if calls.get("provider") == ELEMENT_CALL:
        return f"https://matrix.to/#/{room_id}"
    url = calls.get("jitsi_url")
    service = url if isinstance(url, str) and CALL_SERVICE.fullmatch(url) else default_service
    return f"{service.rstrip('/')}/clubs-{token}"
