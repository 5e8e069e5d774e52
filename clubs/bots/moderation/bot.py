"""The moderation bot: network-wide bans, protections, reports and an audit trail.

Wiring and lifecycle only. Decisions live in `detect.py`, `policy.py` and `power.py` (pure),
actions in `moderator.py` (and the modules it is made of), state in `store.py`; what moderators
type is in `commands.py`, what the bot does on its own in `protections.py`, its background loops
in `upkeep.py`, and what they share (rooms, policy room, alerts, audit) in `network.py`.

The network's policy room doubles as the moderators' management room (encrypted, invite-only,
staff only): rules written there by anyone with the power to do so apply everywhere, and every
action, alert and report is posted there, or in a club's own moderators room for what concerns
that club.
"""

from __future__ import annotations

from typing import Any

from clubs.bots.base import Bot
from clubs.bots.moderation.commands import ModerationCommands
from clubs.bots.moderation.network import Network
from clubs.bots.moderation.protections import Protections
from clubs.bots.moderation.upkeep import Upkeep
from clubs.core.http import RoomId


class ModerationBot(Bot):
    name = "moderation"

    def __init__(self, net: Network) -> None:
        """`net` is what the bot's parts share (`Network(db, network=..., clock=...)`): the
        commands, the protections and the background loops are built on it here."""
        self.net = net
        self.upkeep = Upkeep(net)
        self.register_handler_class(ModerationCommands(net))
        self.register_handler_class(Protections(net, self.upkeep))

    @property
    def policy_room(self) -> RoomId | None:
        """The network's policy room, once `start` found or created it."""
        return self.net.policy_room

    async def start(self, ctx: Any) -> None:
        await self.net.open(ctx)
        ctx.spawn(self.upkeep.lift_mutes_forever(), "mutes")
        ctx.spawn(self.upkeep.follow_members_forever(), "members")
        if self.net.reports is not None:
            ctx.spawn(self.upkeep.poll_reports_forever(), "reports")
