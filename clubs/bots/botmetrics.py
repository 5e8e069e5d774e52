"""What the bots tell monitoring (`/metrics` on the bots' HTTP endpoint): commands and their
latency, how far behind the homeserver a bot's sync is, job lag, failures.

Labels are the bot's name, the command's canonical name (never an alias or what was typed: an
unknown command is not counted), the job's kind and a fixed outcome word; never a room, a user
or any content.
"""

from __future__ import annotations

from clubs.core.metrics import LAG_BUCKETS, LATENCY_BUCKETS, REGISTRY

COMMANDS = REGISTRY.counter(
    "clubs_bot_commands_total",
    "Commands handled, by outcome (ok, usage, refused, untrusted, ratelimited, held, error).",
    ("bot", "command", "outcome"),
)
COMMAND_SECONDS = REGISTRY.histogram(
    "clubs_bot_command_seconds",
    "Time from a command's arrival at the bot to its handler's end.",
    ("bot", "command"),
    LATENCY_BUCKETS,
)
EVENT_LAG = REGISTRY.histogram(
    "clubs_bot_event_lag_seconds",
    "Sync lag: from an event's origin_server_ts to the bot handling it (live events).",
    ("bot",),
    LAG_BUCKETS,
)
LAST_SYNC = REGISTRY.gauge(
    "clubs_bot_last_sync_timestamp_seconds",
    "Unix time of the bot's last successful sync (alert: a silent bot).",
    ("bot",),
)
READY = REGISTRY.gauge(
    "clubs_bot_ready", "1 once the bot has caught up with the homeserver.", ("bot",)
)
SYNC_FAILURES = REGISTRY.counter(
    "clubs_bot_sync_failures_total", "Failed sync requests (retried with backoff).", ("bot",)
)
HANDLER_ERRORS = REGISTRY.counter(
    "clubs_bot_handler_errors_total",
    "Events whose handling failed for good (the bot went on).",
    ("bot",),
)
JOBS = REGISTRY.counter(
    "clubs_bot_jobs_total",
    "Durable jobs run, by outcome (done, missed, failed, retried).",
    ("bot", "kind", "outcome"),
)
JOB_LAG = REGISTRY.histogram(
    "clubs_bot_job_lag_seconds",
    "From a job's due time to its handler starting.",
    ("bot", "kind"),
    LAG_BUCKETS,
)
