"""What the bridge tells monitoring (`/metrics` beside `/health` on its application-service
port, which only the homeserver and monitoring reach): transactions from the homeserver,
messages relayed each way and their lag, what was dropped or refused, Telegram's state.

Labels are fixed words (a direction, an outcome, what happened); never a room, a chat, a user
or content.
"""

from __future__ import annotations

from clubs.core.metrics import LAG_BUCKETS, REGISTRY

TRANSACTIONS = REGISTRY.counter(
    "clubs_bridge_transactions_total",
    "Transactions from the homeserver, by outcome (accepted, replayed, refused).",
    ("outcome",),
)
EVENTS = REGISTRY.counter(
    "clubs_bridge_events_total",
    "What the relay did: relayed_to_telegram, relayed_to_matrix, dropped, media_refused, "
    "refused_rooms, not_relayed_paused.",
    ("what",),
)
RELAY_LAG = REGISTRY.histogram(
    "clubs_bridge_relay_lag_seconds",
    "From a message's origin time to its copy sent on the other side (to_telegram includes "
    "the moderation hold; to_matrix counts from Telegram's whole-second date).",
    ("direction",),
    LAG_BUCKETS,
)
PUSH_LAG = REGISTRY.histogram(
    "clubs_bridge_push_lag_seconds",
    "From a Matrix event's origin time to the homeserver's transaction carrying it reaching the "
    "bridge (how far behind the homeserver's pushes are).",
    (),
    LAG_BUCKETS,
)
TELEGRAM_OK = REGISTRY.gauge(
    "clubs_bridge_telegram_ok", "1 while calls to Telegram's Bot API succeed, else 0."
)
LAST_POLL = REGISTRY.gauge(
    "clubs_bridge_last_poll_timestamp_seconds",
    "Unix time of the last successful getUpdates (alert: Telegram -> Matrix stalled).",
)
