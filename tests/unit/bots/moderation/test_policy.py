"""Policy rules: parsing, globs, hashed entities, removal."""

from __future__ import annotations

from clubs.bots.moderation.policy import (
    PolicySet,
    entity_hash,
    parse_rule,
    rule_content,
    rule_state_key,
    server_acl_content,
    server_acl_denies,
)


def test_user_rule_with_glob_bans_matching_users_only() -> None:
    rules = PolicySet()
    content = {"entity": "@spam*:evil.example", "recommendation": "m.ban", "reason": "spam"}
    assert rules.apply("!list", "m.policy.rule.user", "r1", content) is True
    hit = rules.banning("@spammer1:evil.example")
    assert hit is not None
    assert hit.reason == "spam"
    assert rules.banning("@anna:clubs.example") is None
    assert rules.banning("@spammer1:evil.example.org") is None


def test_question_mark_matches_exactly_one_character() -> None:
    rule = parse_rule("m.policy.rule.user", "k", {"entity": "@a?:x", "recommendation": "m.ban"})
    assert rule is not None
    assert rule.matches("@ab:x")
    assert not rule.matches("@abc:x")
    assert not rule.matches("@a:x")


def test_server_rule_bans_everyone_on_the_server() -> None:
    rules = PolicySet()
    rules.apply(
        "!l",
        "m.policy.rule.server",
        "s",
        {"entity": "*.raid.example", "recommendation": "m.ban", "reason": ""},
    )
    assert rules.banning("@x:node1.raid.example") is not None
    assert rules.banning("@x:raid.example.com") is None


def test_empty_content_removes_the_rule() -> None:
    rules = PolicySet()
    rules.apply("!l", "m.policy.rule.user", "r", {"entity": "@p:x", "recommendation": "m.ban"})
    assert rules.apply("!l", "m.policy.rule.user", "r", {}) is True
    assert rules.banning("@p:x") is None
    assert rules.apply("!l", "m.policy.rule.user", "r", {}) is False


def test_hashed_rule_bans_without_publishing_the_id() -> None:
    content = rule_content("@provocateur:clubs.example", "doxxing", hashed=True)
    assert "@provocateur" not in str(content)
    assert "provocateur" not in rule_state_key("@provocateur:clubs.example")
    rules = PolicySet()
    rules.apply("!l", "m.policy.rule.user", rule_state_key("@provocateur:clubs.example"), content)
    assert rules.banning("@provocateur:clubs.example") is not None
    assert rules.banning("@someone:clubs.example") is None


def test_msc4205_unstable_field_and_legacy_types_are_read() -> None:
    sha = entity_hash("@x:y")
    rule = parse_rule(
        "org.matrix.mjolnir.rule.user",
        "k",
        {"recommendation": "org.matrix.mjolnir.ban", "org.matrix.msc4205.hashes": {"sha256": sha}},
    )
    assert rule is not None
    assert rule.is_ban
    assert rule.matches("@x:y")


def test_non_ban_recommendations_do_not_ban() -> None:
    rules = PolicySet()
    rules.apply(
        "!l",
        "m.policy.rule.user",
        "a",
        {"entity": "@friend:x", "recommendation": "org.matrix.mjolnir.allow"},
    )
    assert rules.banning("@friend:x") is None


def test_malformed_rules_are_ignored() -> None:
    for content in (
        None,
        [],
        {"entity": 5, "recommendation": "m.ban"},
        {"entity": "@x:y"},
        {"recommendation": "m.ban"},
        {"entity": "", "recommendation": "m.ban"},
    ):
        assert parse_rule("m.policy.rule.user", "k", content) is None
    assert parse_rule("m.room.message", "k", {"entity": "@x:y", "recommendation": "m.ban"}) is None
    assert (
        parse_rule("m.policy.rule.user", None, {"entity": "@x:y", "recommendation": "m.ban"})
        is None
    )


def test_glob_special_characters_are_literal() -> None:
    rule = parse_rule(
        "m.policy.rule.user", "k", {"entity": "@a.b+(c):x", "recommendation": "m.ban"}
    )
    assert rule is not None
    assert rule.matches("@a.b+(c):x")
    assert not rule.matches("@aXb+(c):x")


def _server_rules(*entities: str, recommendation: str = "m.ban") -> PolicySet:
    rules = PolicySet()
    for i, entity in enumerate(entities):
        content = {"entity": entity, "recommendation": recommendation, "reason": "r"}
        rules.apply("!list", "m.policy.rule.server", f"s{i}", content)
    return rules


def test_server_acl_denies_banned_servers_but_never_our_own() -> None:
    rules = _server_rules("evil.example", "*.spam.example", "*", "clubs.examp?e")
    rules.apply(
        "!list", "m.policy.rule.user", "u", {"entity": "@x:y.example", "recommendation": "m.ban"}
    )
    hashed = {"recommendation": "m.ban", "hashes": {"sha256": entity_hash("hidden.example")}}
    rules.apply("!list", "m.policy.rule.server", "h", hashed)
    # `*` and `clubs.examp?e` would deny the network's own server: left out. User rules and
    # hashed server rules cannot be written into an ACL.
    assert server_acl_denies(rules, ["clubs.example"]) == ["*.spam.example", "evil.example"]
    assert server_acl_denies(_server_rules("evil.example", recommendation="m.other"), []) == []


def test_server_acl_content_is_written_only_when_it_changes() -> None:
    assert server_acl_content(None, []) is None  # no ACL and nothing to deny: nothing to write
    new = server_acl_content(None, ["evil.example"])
    assert new == {"allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": False}
    assert server_acl_content(new, ["evil.example"]) is None
    # A narrower allow list someone set stays; the deny list is the bot's.
    custom = {"allow": ["clubs.example", "evil.example"], "deny": ["old.example"]}
    assert server_acl_content(custom, []) == {
        "allow": ["clubs.example", "evil.example"],
        "deny": [],
        "allow_ip_literals": False,
    }
