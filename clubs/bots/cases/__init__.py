"""The club's case library: conversation cases told to the facilitation bot in a DM."""
