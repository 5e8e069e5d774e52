"""A club's `checkins:` option in the network file: loaded with located errors, published in
the club settings, and read back by the bot as the club's questions and retention."""

from __future__ import annotations

import pytest

from clubs.bots.checkins.clubconf import ClubCheckins, club_checkins
from clubs.core.namespace import CLUB_SETTINGS
from clubs.core.yamlconf import ConfigError
from clubs.provisioning.compile import compile_network
from clubs.provisioning.load import parse_network

NETWORK = """\
version: 1
network: demo
name: "Сеть"
club_template:
  rooms:
    - {key: support, name: "Поддержка", join_rule: invite}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "Алматы"
        checkins:
          questions: ["Как прошла неделя?", "Что помогло?"]
          keep_days: 30
      - key: astana
        name: "Астана"
"""


def test_a_clubs_questions_reach_the_bot_through_its_settings() -> None:
    net = compile_network(parse_network(NETWORK, "n.yaml"), "hs.test")
    own = net.room("club:almaty/support").state[(CLUB_SETTINGS, "")]
    plain = net.room("club:astana/support").state[(CLUB_SETTINGS, "")]
    assert own["checkins"] == {"questions": ["Как прошла неделя?", "Что помогло?"], "keep_days": 30}
    assert "checkins" not in plain  # the defaults are not written
    assert club_checkins(own) == ClubCheckins(("Как прошла неделя?", "Что помогло?"), 30)
    assert club_checkins(plain) == ClubCheckins(None, 90)


def test_only_the_retention_keeps_the_default_questions() -> None:
    text = NETWORK.replace('          questions: ["Как прошла неделя?", "Что помогло?"]\n', "")
    net = compile_network(parse_network(text, "n.yaml"), "hs.test")
    own = net.room("club:almaty/support").state[(CLUB_SETTINGS, "")]
    assert own["checkins"] == {"keep_days": 30}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "questions: []",
            "n.yaml:14:22: countries[0].clubs[0].checkins.questions: expected 1 to 3 questions "
            "(the mood poll comes first)",
        ),
        ('questions: ["a", "b", "c", "d"]', "expected 1 to 3 questions"),
        ('questions: [""]', "expected some text"),
        (
            "keep_days: 3",
            "n.yaml:15:22: countries[0].clubs[0].checkins.keep_days: expected an integer from 7 "
            "to 365; got 3",
        ),
        ("keep_days: 1000", "checkins.keep_days"),
        ("keep_days: yes", "checkins.keep_days"),
        ("every: week", "every"),
    ],
)
def test_a_wrong_checkins_option_is_a_located_error(option: str, message: str) -> None:
    key = option.split(":")[0]
    lines = NETWORK.splitlines(keepends=True)
    body = [ln for ln in lines if not ln.startswith(("          questions", "          keep_days"))]
    at = body.index("        checkins:\n") + 1
    text = "".join([*body[:at], "          " + option + "\n", *body[at:]])
    if key == "keep_days":
        text = text.replace(
            "        checkins:\n", '        checkins:\n          questions: ["a"]\n'
        )
    with pytest.raises(ConfigError) as caught:
        parse_network(text, "n.yaml")
    assert message in str(caught.value)
    if message.startswith("n.yaml:"):
        assert str(caught.value) == message
