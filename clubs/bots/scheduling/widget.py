"""The call of an online session as an Element widget in the club's sessions room, from five
minutes before the start to the end — only in clubs that accept it (`call_widget: true` in the
club settings): a widget is room state, so the call link becomes readable by the server, which
the encrypted announcement and reminders never expose.

Element reads `im.vector.modular.widgets` (state key = widget id) and rebuilds its own Jitsi
wrapper from `data.domain` and `data.conferenceId`; `io.element.widgets.layout` pins it to the
top. Removing it is the same state key with empty content. Only Jitsi-style links
(`https://<domain>/<room>`) make a widget; anything else stays a link in the messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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
