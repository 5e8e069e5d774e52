"""`servers:` and a country's `server:`: which of the network's own servers hosts what."""

from __future__ import annotations

import pytest

from clubs.core.errors import ClubsError
from clubs.provisioning.compile import compile_network
from tests.unit.provisioning.test_load import errors, load

TWO = """\
version: 1
network: demo
name: "Сеть"
servers:
  kz: {server_name: "kz.clubs.example", url: "https://matrix.kz.clubs.example"}
  de: {server_name: "de.clubs.example:8448"}
bots:
  moderation: bot-moderation
people:
  - {key: anna, mxid: "@anna:kz.clubs.example", onboarding: precreate}
  - {key: bob, mxid: "@bob:de.clubs.example:8448", onboarding: precreate}
  - {key: vera}
  - {key: gleb, mxid: "@gleb:de.clubs.example:8448", onboarding: precreate}
club_template:
  rooms:
    - {key: general, name: "Общий"}
countries:
  - key: kz
    name: "Казахстан"
    server: kz
    clubs:
      - {key: almaty, name: "Алматы", members: [anna, bob, vera]}
  - key: de
    name: "Германия"
    server: de
    clubs:
      - {key: berlin, name: "Берлин", members: [bob]}
"""


def test_servers_and_the_country_each_is_on() -> None:
    net = load(TWO)
    assert [(s.key, s.server_name, s.url) for s in net.servers] == [
        ("kz", "kz.clubs.example", "https://matrix.kz.clubs.example"),
        ("de", "de.clubs.example:8448", None),
    ]
    assert [c.server for c in net.countries] == ["kz", "de"]
    assert net.allowlist("kz.clubs.example") == ("de.clubs.example:8448",)


def test_a_network_without_servers_is_one_server_as_before() -> None:
    text = TWO.replace(TWO[TWO.index("servers:") : TWO.index("bots:")], "")
    text = text.replace("    server: kz\n", "").replace("    server: de\n", "")
    text = text.replace(":kz.clubs.example", "").replace(":de.clubs.example:8448", ":x.org")
    net = load(text)
    assert net.servers == ()
    assert net.allowlist("clubs.local") == ()
    assert [c.server for c in net.countries] == [None, None]


def test_an_unknown_server_is_a_located_error() -> None:
    assert errors(TWO.replace("server: de\n", "server: fr\n")) == [
        'n.yaml:25:13: countries[1].server: expected one of kz, de; got "fr"'
    ]


def test_a_country_without_a_server_is_refused_once_servers_are_declared() -> None:
    assert errors(TWO.replace("    server: de\n", "")) == [
        'n.yaml:23:5: countries[1]: missing required key "server": the network has servers '
        "(kz, de); say which one hosts this country"
    ]


def test_a_server_without_servers_declared_is_refused() -> None:
    text = TWO.replace(TWO[TWO.index("servers:") : TWO.index("bots:")], "")
    text = text.replace(":kz.clubs.example", "").replace(":de.clubs.example:8448", "")
    assert errors(text) == [
        'n.yaml:17:13: countries[0].server: "server" needs the network\'s "servers" '
        "declared at the top",
        'n.yaml:22:13: countries[1].server: "server" needs the network\'s "servers" '
        "declared at the top",
    ]


def test_bad_server_names_urls_and_duplicates() -> None:
    text = TWO.replace('"de.clubs.example:8448"}', '"kz.clubs.example", url: "ftp://x"}')
    text = text.replace("de.clubs.example:8448", "kz.clubs.example")
    assert errors(text) == [
        'n.yaml:6:21: servers.de.server_name: "kz.clubs.example" is already the server of "kz"',
        "n.yaml:6:46: servers.de.url: expected the client API's base URL like "
        '"https://matrix.kz.clubs.example"; got "ftp://x"',
    ]
    assert errors(TWO.replace('"kz.clubs.example", url', '"kz clubs", url'))[0].startswith(
        "n.yaml:5:21: servers.kz.server_name: expected a Matrix server name"
    )


def test_people_must_be_on_one_of_the_networks_servers() -> None:
    assert errors(TWO.replace("@bob:de.clubs.example:8448", "@bob:matrix.org")) == [
        'n.yaml:11:22: people[1].mxid: "@bob:matrix.org" is on matrix.org, which is not one '
        "of the network's servers (kz.clubs.example, de.clubs.example:8448); they federate "
        "with nobody else, so it could never join"
    ]
    assert errors(TWO.replace("@anna:kz.clubs.example", "@anna")) == [
        'n.yaml:10:23: people[0].mxid: "@anna" does not say which of the network\'s servers '
        'the account is on; write it in full, e.g. "@anna:kz.clubs.example"'
    ]


def test_each_server_gets_its_countries_and_the_bots_of_the_first_server() -> None:
    net = load(TWO)
    kz = compile_network(net, "kz.clubs.example")
    refs = {r.ref for r in kz.rooms}
    assert "country:kz" in refs
    assert "country:de" not in refs
    assert kz.bots == {"moderation": "@bot-moderation:kz.clubs.example"}
    people = {p.key: p for p in kz.people}
    # bob is in an Almaty club but his account is on de: invited here, never created here.
    assert people["bob"].onboarding == "existing"
    assert people["anna"].onboarding == "precreate"
    assert "gleb" not in people

    de = compile_network(net, "de.clubs.example:8448")
    refs = {r.ref for r in de.rooms}
    assert "country:de" in refs
    assert "country:kz" not in refs
    assert de.bots == {"moderation": "@bot-moderation:kz.clubs.example"}
    people = {p.key: p for p in de.people}
    assert people["bob"].onboarding == "precreate"
    assert people["gleb"].onboarding == "precreate"  # no club, but his account lives here
    assert "anna" not in people
    club = next(r for r in de.rooms if r.ref == "club:berlin")
    assert "@bot-moderation:kz.clubs.example" in club.members


def test_rooms_federate_when_there_are_several_servers() -> None:
    net = load(TWO)
    assert net.defaults.federate is True
    assert all(r.federate for r in compile_network(net, "kz.clubs.example").rooms)
    written = TWO.replace("bots:\n", "defaults: {federate: false}\nbots:\n")
    assert errors(written) == [
        "n.yaml:7:22: defaults.federate: false keeps every room on the server that made it, but "
        "the network has several servers (servers:) whose people share rooms; leave it out or "
        "write true"
    ]


def test_a_server_outside_the_list_cannot_be_compiled_for() -> None:
    with pytest.raises(ClubsError, match=r"this homeserver, other\.example, is not one of"):
        compile_network(load(TWO), "other.example")
