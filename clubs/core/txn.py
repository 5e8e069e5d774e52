"""Deterministic transaction ids: the same logical send always gets the same `txn_id`.

Why: `PUT /rooms/{room}/send/{type}/{txn_id}` is idempotent per (room, user, device, txn_id).
Synapse remembers that key with the event it created (table `event_txn_id_device_id`, purged
after 24 hours; a 30-minute in-memory response cache sits in front), and a repeated request gets
the first event id back instead of a second message. A bot that crashes after sending but before
recording the send will, on restart, redo the job and send again. If the transaction id is
derived from the job itself, not from a counter or a random number, that second send is
absorbed by the server: nothing is sent twice. This needs the bot's one stable device (the key
includes the device) and a retry within 24 hours; after that a job is stale anyway.

Derive the parts from what identifies the job, e.g. `txn_id("reply", event_id)` for the answer
to a command, `txn_id(schedule_id, occurrence_iso, "reminder")` for a scheduled post. Two
different jobs must never share parts: prefix them with a kind.
"""

from __future__ import annotations

import json
import uuid

NAMESPACE = uuid.UUID("6f0f3d4e-2b7c-5a51-9c1e-8d6c4b1f0a27")
"""Fixed for ever: changing it would change every id and defeat deduplication across upgrades."""


def txn_id(*parts: str) -> str:
    """A URL-safe id (36 characters, hex and hyphens) that depends only on `parts`.

    The parts are encoded as a JSON list, so ("a/b", "c") and ("a", "b/c") differ.
    """
    if not parts:
        raise ValueError("txn_id needs at least one part naming the job")
    name = json.dumps(list(parts), ensure_ascii=True, separators=(",", ":"))
    return str(uuid.uuid5(NAMESPACE, name))
