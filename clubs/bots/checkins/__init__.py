"""The check-ins bot: opt-in weekly check-ins by DM, the "I need support" path to the club's
peer supporters, and the private small-wins journal (see `docs/checkins.md`)."""
