"""The scheduling bot: club sessions, their times and recurrence, announcements and places."""
