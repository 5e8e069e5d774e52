"""The bots (moderation, facilitation, scheduling, check-ins) and the runtime hosting them."""
