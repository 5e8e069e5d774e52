"""The moderation bot's hands: bans, kicks, mutes, raid locks, redactions and the policy room.

Everything is plain client-server HTTP with the bot's own token (plus the admin view, when one
is given, for one user's memberships and server-side redactions): membership, power levels,
join rules, redactions and policy rules are room state or unencrypted events, so no E2EE client
is needed. Each part is a module of its own, on the shared `RoomAccess` (access.py):

- fanout.py: bans, unbans and kicks across rooms at once;
- restrictions.py: timed mutes and raid locks, undone later also across restarts;
- redactions.py: one person's newest events, redacted;
- policyroom.py: the policy room, its rules and the server ACLs it asks for.

Logs carry ids, counts and durations only: never reasons, never message content.
"""

from __future__ import annotations

from clubs.bots.moderation.fanout import Fanout
from clubs.bots.moderation.policyroom import PolicyRoom
from clubs.bots.moderation.redactions import Redactions
from clubs.bots.moderation.restrictions import Restrictions


class Moderator(Fanout, Restrictions, Redactions, PolicyRoom):
    """One moderation bot account's actions (see the module doc), with its store for what must
    be undone later. Constructed like `RoomAccess`."""
