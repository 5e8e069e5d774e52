"""The one namespace for every custom event type and state key Matrix Clubs writes.

State is not end-to-end encrypted: the server and every member can read these events, so they
carry keys and settings, never personal data.
"""

from __future__ import annotations

NS = "org.commclubs"

LOCATOR = f"{NS}.locator"
"""State event (state_key "") in every managed room: which network/club/cohort/room this is.
Written in `initial_state` of createRoom, so a room and its identity are created atomically.

Content: `network`, `kind` (one of ROOM_KINDS), `key`, `schema`, `state` ("active" or
"archived"), `country` / `club` / `cohort` where they apply, and `audience: "staff"` in a staff
room (a club's moderators room: only the club's staff and the bots are in it, so the moderation
bot may post that club's reports there). Rooms for everyone carry no `audience`."""

CLUB_SETTINGS = f"{NS}.club"
"""State event (state_key "") with club settings bots need, in every club and cohort room and
space: time zone, language, moderation settings and the bots serving the room.

Content: `time_zone`, `language`, `bots`, and `moderation` when the network file sets any of the
moderation bot's settings for the club: an object of flat keys, only those set (`personal_data`,
`flood_messages`, `flood_window_s`, `mute_s`, `max_mentions`, `join_wave_joins`,
`join_wave_window_s`, `new_member_hours`, `words`). `bots` lists the user ids of the bots serving
the room (its bot members), in the order of the network file's `bots:`; the first of them that a
bots process hosts answers the built-in commands (`!ping`, `!help`) there, and a bot invited by
the provisioner into a room whose non-empty list does not name it leaves again. Readable by every
member, like all state."""

CLUB_SESSIONS = f"{NS}.sessions"
"""State event (state_key "") in a club's `sessions` room: the sessions the network file declares
for the club (its `sessions:`), written only by the provisioner (state_default power).

Content: `{"sessions": [...]}`, sorted by key, each `key`, `title`, `kind` (meeting, lecture,
seminar, training), `start` (the first occurrence's wall time in the club's zone,
`2026-12-03T19:00`), `rrule` (RFC 5545 RRULE value, null for a one-off), `duration_s`, `online`,
`capacity` (null: no limit) and `materials` (an https link or null). An empty list when the club
declares none, so that sessions removed from the file are removed from the room. Never a venue
or a call link: like all state it is readable by the server and every member of the room."""

DM_MARKER = f"{NS}.dm"
"""State event (state_key "") in a DM room a bot created: `{"marker": <random>}`, opaque on
purpose. A bot that crashed between creating the room and recording it finds the room again by
this marker instead of creating a second one."""

OCCURRENCE = f"{NS}.occurrence"
"""A key in the content of the scheduling bot's "starting now" notice (an encrypted
`m.room.message`, never state: a title or a call link may say too much to the server):
`{"series": <id as text>, "title": ..., "link": <call link or null>, "ends_at": <epoch s>,
"agenda": [{"title": ..., "minutes": n}, ...]}` (the agenda of a session the network file
declares; empty otherwise). The facilitation bot, in the same sessions room, takes the title
(for a `!start` without one), the agenda, the call link and the series (its parking lot) from
it; it trusts it only from the network's bots."""

BRIDGE_CONSENT = f"{NS}.bridge_consent"
"""State event (state_key "") in an encrypted bridged room: its admins' consent to relaying it
to Telegram (written by `clubs bridge consent`, which takes the writer's power level 100).

Content: `telegram_chat` (the chat id the consent is for), `by` (the admin's user id) and `at`
(milliseconds). An empty content is a withdrawn consent. The Telegram bridge acts on it only
when its sender has power 100 (or is a creator of a v12 room) and the chat matches its portal's,
and relays only events sent after the event itself (its `origin_server_ts`)."""

LOCATOR_SCHEMA = 1

ROOM_KINDS = (
    "network_space",
    "country_space",
    "club_space",
    "club_room",
    "cohort_space",
    "cohort_room",
    "policy_room",
)
