"""PolicyWatcher: rule changes (from any client) become bans and unbans, as a pure diff."""

from __future__ import annotations

from typing import Any

from clubs.bots.moderation.policy import (
    PolicySet,
    PolicyWatcher,
    entity_hash,
    parse_rule,
    policy_actions,
    rule_content,
)

LIST = "!policy"
USER = "m.policy.rule.user"
SERVER = "m.policy.rule.server"


def ev(event_type: str, state_key: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"type": event_type, "state_key": state_key, "content": content}


def ban(entity: str) -> dict[str, Any]:
    return {"entity": entity, "recommendation": "m.ban", "reason": "r"}


def kinds(actions: list[Any]) -> list[tuple[str, str]]:
    return sorted((a.kind, a.user_id) for a in actions)


def test_literal_user_rule_bans_even_someone_never_seen() -> None:
    w = PolicyWatcher([LIST])
    assert kinds(w.feed(LIST, [ev(USER, "k", ban("@spy:evil.example"))])) == [
        ("ban", "@spy:evil.example")
    ]


def test_glob_rule_bans_known_matching_users_only() -> None:
    w = PolicyWatcher([LIST], users=["@spam1:x.example", "@spam2:x.example", "@anna:c.example"])
    actions = w.feed(LIST, [ev(USER, "k", ban("@spam*:x.example"))])
    assert kinds(actions) == [("ban", "@spam1:x.example"), ("ban", "@spam2:x.example")]


def test_removal_by_empty_content_unbans() -> None:
    w = PolicyWatcher([LIST])
    w.feed(LIST, [ev(USER, "k", ban("@spy:evil.example"))])
    assert kinds(w.feed(LIST, [ev(USER, "k", {})])) == [("unban", "@spy:evil.example")]
    assert len(w.rules) == 0


def test_no_unban_while_another_rule_still_bans() -> None:
    w = PolicyWatcher([LIST], users=["@spy:evil.example"])
    w.feed(LIST, [ev(USER, "a", ban("@spy:evil.example")), ev(SERVER, "b", ban("evil.example"))])
    assert w.feed(LIST, [ev(USER, "a", {})]) == []
    assert kinds(w.feed(LIST, [ev(SERVER, "b", {})])) == [("unban", "@spy:evil.example")]


def test_replaying_the_same_state_changes_nothing() -> None:
    w = PolicyWatcher([LIST])
    events = [ev(USER, "k", ban("@spy:evil.example"))]
    w.feed(LIST, events)
    assert w.feed(LIST, events) == []


def test_changing_a_rules_entity_unbans_the_old_and_bans_the_new() -> None:
    w = PolicyWatcher([LIST])
    w.feed(LIST, [ev(USER, "k", ban("@old:x.example"))])
    actions = w.feed(LIST, [ev(USER, "k", ban("@new:x.example"))])
    assert kinds(actions) == [("ban", "@new:x.example"), ("unban", "@old:x.example")]


def test_hashed_rule_matches_known_users_by_hash() -> None:
    w = PolicyWatcher([LIST], users=["@anna:c.example", "@spy:c.example"])
    content = rule_content("@spy:c.example", "r", hashed=True)
    assert "@spy:c.example" not in str(content)
    assert kinds(w.feed(LIST, [ev(USER, "h", content)])) == [("ban", "@spy:c.example")]


def test_server_rules_never_reach_protected_servers() -> None:
    w = PolicyWatcher(
        [LIST], users=["@anna:c.example", "@x:raid.example"], protected_servers=["c.example"]
    )
    actions = w.feed(LIST, [ev(SERVER, "s", ban("*"))])
    assert kinds(actions) == [("ban", "@x:raid.example")]
    # A user rule still reaches a local user.
    assert kinds(w.feed(LIST, [ev(USER, "u", ban("@anna:c.example"))])) == [
        ("ban", "@anna:c.example")
    ]


def test_non_ban_recommendations_and_other_rooms_are_ignored() -> None:
    w = PolicyWatcher([LIST])
    allow = {"entity": "@a:x.example", "recommendation": "org.matrix.mjolnir.allow"}
    assert w.feed(LIST, [ev(USER, "k", allow)]) == []
    assert w.feed("!elsewhere", [ev(USER, "k", ban("@a:x.example"))]) == []
    assert w.feed(LIST, [{"type": USER, "content": ban("@a:x.example")}]) == []  # not state


def test_note_users_bans_newcomers_already_listed() -> None:
    w = PolicyWatcher([LIST])
    w.feed(LIST, [ev(USER, "k", ban("@bad*:x.example"))])
    assert kinds(w.note_users(["@bad1:x.example", "@good:x.example"])) == [
        ("ban", "@bad1:x.example")
    ]
    assert w.note_users(["@bad1:x.example"]) == []


def test_policy_actions_is_a_pure_diff() -> None:
    before = PolicySet()
    after = PolicySet()
    after.apply(LIST, USER, "k", ban("@a:x.example"))
    assert kinds(policy_actions(before, after, [])) == [("ban", "@a:x.example")]
    assert kinds(policy_actions(after, before, [])) == [("unban", "@a:x.example")]
    assert policy_actions(after, after, ["@a:x.example"]) == []
    rule = parse_rule(
        USER, "k", {"recommendation": "m.ban", "hashes": {"sha256": entity_hash("@h:x")}}
    )
    assert rule is not None
    assert kinds(policy_actions([], [rule], ["@h:x", "@o:x"])) == [("ban", "@h:x")]
