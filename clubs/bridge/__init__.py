"""Application service relaying designated, consenting rooms to Telegram."""
