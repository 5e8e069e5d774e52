"""`clubs bots run --shard` and `clubs up` with the network file's `shards:`: which accounts a
process runs, which rooms it serves, where its state lives, and one process per shard."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from clubs.bots.rooms import room_info
from clubs.botsrun import add_parsers, config_from_args
from clubs.core.errors import ClubsError
from clubs.core.http import RoomId
from clubs.core.namespace import LOCATOR
from clubs.up import child_specs

NETWORK = """\
version: 1
network: demo
name: "Сеть"
bots:
  moderation: bot-moderation
  scheduling: bot-scheduling
shards:
  asia: {countries: [kz], clubs: [tbilisi]}
countries:
  - {key: kz, name: "Казахстан", clubs: [{key: almaty, name: "Алматы"}]}
  - key: ge
    name: "Грузия"
    clubs: [{key: tbilisi, name: "Тбилиси"}, {key: batumi, name: "Батуми"}]
"""


def args(tmp_path: Path, *extra: str, text: str = NETWORK) -> argparse.Namespace:
    path = tmp_path / "network.yaml"
    path.write_text(text)
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    where = ["--network", str(path), "--var-dir", str(tmp_path / "var")]
    server = ["--homeserver", "http://127.0.0.1:1", "--server-name", "hs.test"]
    return parser.parse_args(["bots", "run", *where, *server, *extra])


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUBS_ADMIN_TOKEN", "not-a-real-token")


@pytest.mark.parametrize("how", [("--shard", "asia"), ("--clubs", "tbilisi,kz")])
def test_a_shard_runs_on_its_own_accounts_in_its_clubs_rooms(
    tmp_path: Path, how: tuple[str, str]
) -> None:
    config = config_from_args(args(tmp_path, *how))
    assert [(a.name, a.user_id) for a in config.accounts] == [
        ("moderation", "@bot-moderation-asia:hs.test"),
        ("scheduling", "@bot-scheduling-asia:hs.test"),
    ]
    assert config.settings.shard == frozenset({"kz", "tbilisi"})
    assert config.settings.other_shards == frozenset()
    assert config.shard == "asia"
    assert config.data_dir == (tmp_path / "var" / "bots" / "shards" / "asia").resolve()


def test_without_a_shard_the_networks_own_accounts_serve_the_rooms_of_no_shard(
    tmp_path: Path,
) -> None:
    config = config_from_args(args(tmp_path))
    assert [a.user_id for a in config.accounts] == [
        "@bot-moderation:hs.test",
        "@bot-scheduling:hs.test",
    ]
    assert (config.settings.shard, config.settings.other_shards) == (
        None,
        frozenset({"kz", "tbilisi"}),
    )
    assert config.data_dir == (tmp_path / "var" / "bots").resolve()  # as without shards
    rooms = config.settings

    def served(**locator: str) -> bool:
        state = [{"type": LOCATOR, "state_key": "", "content": {"network": "demo", **locator}}]
        info = room_info(RoomId("!r:x"), state, "demo", rooms.shard, rooms.other_shards)
        return info.managed

    assert served(kind="network_space")
    assert served(kind="country_space", country="ge")
    assert served(kind="club_room", country="ge", club="batumi")
    assert not served(kind="club_room", country="ge", club="tbilisi")
    assert not served(kind="country_space", country="kz")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ("--shard", "europe"),
            "--shard europe: {file} declares no such shard (its shards: asia: kz, tbilisi)",
        ),
        (
            ("--clubs", "kz"),
            "--clubs kz: {file} declares shards, and these keys are not one of them; run "
            "--shard NAME (its shards: asia: kz, tbilisi)",
        ),
        (
            ("--shard", "asia", "--clubs", "kz"),
            "--clubs: shard asia of {file} serves kz, tbilisi; leave --clubs out",
        ),
    ],
)
def test_a_shard_the_file_does_not_declare_is_refused(
    tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ClubsError) as err:
        config_from_args(args(tmp_path, *extra))
    assert str(err.value) == message.format(file=tmp_path / "network.yaml")


def test_a_shard_without_shards_declared_is_refused(tmp_path: Path) -> None:
    text = NETWORK.replace("shards:\n  asia: {countries: [kz], clubs: [tbilisi]}\n", "")
    with pytest.raises(ClubsError) as err:
        config_from_args(args(tmp_path, "--shard", "asia", text=text))
    assert (
        str(err.value) == f"--shard asia: {tmp_path / 'network.yaml'} declares no shards (shards:)"
    )
    # Without shards, --clubs is what it was: the network's accounts, these rooms.
    config = config_from_args(args(tmp_path, "--clubs", "kz", text=text))
    assert config.accounts[0].user_id == "@bot-moderation:hs.test"
    assert (config.settings.shard, config.shard) == (frozenset({"kz"}), None)


def test_up_runs_one_bots_process_per_shard_beside_the_networks_own(tmp_path: Path) -> None:
    def specs(shards: dict[str, int | None] | None) -> dict[str, list[str]]:
        found = child_specs(
            tmp_path,
            8008,
            "hs.test",
            service_port=8090,
            service_token="t",
            network_file=tmp_path / "n.yaml",
            with_bots=True,
            bots_port=8091,
            shards=shards,
        )
        return {s.name: s.argv for s in found}

    plain = specs(None)
    assert list(plain) == ["homeserver", "serve", "bots"]
    sharded = specs({"asia": 8092, "europe": None})
    assert list(sharded) == ["homeserver", "serve", "bots", "bots-asia", "bots-europe"]
    assert sharded["bots"] == plain["bots"]  # the network's own accounts, as before
    asia = sharded["bots-asia"]
    assert asia[asia.index("--shard") + 1] == "asia"
    assert asia[asia.index("--http-port") + 1] == "8092"
    assert asia[asia.index("--ready-file") + 1] == str(tmp_path / "run" / "bots-asia.ready")
    assert "--http-port" not in sharded["bots-europe"]


def test_a_shards_moderation_bot_serves_its_own_policy_room(tmp_path: Path) -> None:
    """The policy room (its management room) has no country: made by the bot, not provisioned,
    it is served by the process whose bot is in it, a shard's too."""
    state = [
        {
            "type": LOCATOR,
            "state_key": "",
            "content": {"network": "demo", "kind": "policy_room", "key": "bans"},
        }
    ]
    shard = config_from_args(args(tmp_path, "--shard", "asia")).settings
    info = room_info(RoomId("!p:x"), state, "demo", shard.shard, shard.other_shards)
    assert (info.managed, info.elsewhere) == (True, False)
