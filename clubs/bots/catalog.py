"""The bots this build ships, by name: the composition root picks from here (no import-time
registration; a deployment enables bots by listing their accounts).

Only the moderation bot gets the admin view (`HostServices.admin_view`): no other factory may
pass it on."""

from __future__ import annotations

from clubs.bots.base import Bot
from clubs.bots.cases.box import CaseBox
from clubs.bots.cases.cases import Cases
from clubs.bots.cases.owndata import OwnData
from clubs.bots.checkins.bot import CheckinsBot
from clubs.bots.checkins.box import Box
from clubs.bots.facilitation.bot import FacilitationBot
from clubs.bots.host import BotFactory, HostServices
from clubs.bots.moderation.bot import ModerationBot
from clubs.bots.moderation.network import Network
from clubs.bots.scheduling.bot import SchedulingBot
from clubs.bots.scheduling.feed import feed_key
from clubs.bots.strategy.box import StrategyBox
from clubs.bots.strategy.strategies import Strategies
from clubs.core.errors import ClubsError
from clubs.core.secrets import Vault


def _moderation(services: HostServices) -> Bot:
    return ModerationBot(
        Network(
            services.db,
            network=services.network,
            admin=services.admin_view,
            other_bots=services.service_accounts,
            clock=services.clock,
        )
    )


def _scheduling(services: HostServices) -> Bot:
    if services.sealer is None:
        raise ClubsError("the scheduling bot needs a sealer: titles, links and venues are sealed")
    vault = services.vault or Vault(services.data_dir.parent / "secrets" / "vault")
    return SchedulingBot(
        services.db,
        services.sealer,
        services.clock,
        feed_key=feed_key(vault),
        public_url=services.public_url,
    )


def _checkins(services: HostServices) -> Bot:
    # The answers' AES-GCM key is its own vault entry.
    vault = services.vault or Vault(services.data_dir.parent / "secrets" / "vault")
    return CheckinsBot(services.db, Box.from_vault(vault), services.clock)


def _facilitation(services: HostServices) -> Bot:
    if services.sealer is None:
        raise ClubsError("the facilitation bot needs a sealer: sessions and notes are sealed")
    bot = FacilitationBot(
        services.db,
        services.sealer,
        services.clock,
        service_accounts=services.service_accounts,
    )
    # Cohort members' strategies: their own AES-GCM key in the vault.
    vault = services.vault or Vault(services.data_dir.parent / "secrets" / "vault")
    strategies = Strategies(
        services.db,
        StrategyBox.from_vault(vault),
        services.clock,
        service_accounts=services.service_accounts,
    )
    bot.register_handler_class(strategies)
    # The club's case library: its own AES-GCM and pseudonym keys in the vault.
    cases = Cases(
        services.db,
        CaseBox.from_vault(vault),
        services.clock,
        service_accounts=services.service_accounts,
    )
    bot.register_handler_class(cases)
    bot.cases = cases  # cases on a session's agenda
    # One !export / !forget-me for every part of this account that keeps a member's data.
    bot.register_handler_class(OwnData([cases, strategies, bot.reflection]))
    return bot


def default_factories() -> dict[str, BotFactory]:
    return {
        "moderation": _moderation,
        "scheduling": _scheduling,
        "checkins": _checkins,
        "facilitation": _facilitation,
    }
