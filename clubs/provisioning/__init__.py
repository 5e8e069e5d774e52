"""YAML network model → planned, idempotent, crash-safe spaces and rooms on the homeserver."""
