"""The worker file's checks (exact located errors), the settings each process reads, and the
front's routing table — all without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clubs.core.errors import HomeserverError
from clubs.core.front import Refused, forwarded_headers, route
from clubs.core.homeserver import Settings
from clubs.core.postgres import choose_database
from clubs.core.workers import (
    QUIET_PORTS_FROM,
    Layout,
    MainProcess,
    Ports,
    Shape,
    build_shape,
    database_env,
    load_shape,
    quiet_port,
    worker_settings,
    workers_enabled,
)
from clubs.core.yamlconf import ConfigError, parse_yaml


def shape_of(text: str) -> Shape:
    return build_shape(parse_yaml(text, "workers.yaml"))


def errors_of(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        shape_of(text)
    return str(err.value)


def test_the_shipped_shape_is_main_persister_client_and_federation_sender() -> None:
    shape = load_shape()
    assert [(w.name, w.kind) for w in shape.workers] == [
        ("persister1", "stream_writer"),
        ("worker1", "client"),
        ("fedsender1", "federation_sender"),
    ]
    assert shape.stream_writers == {"events": ("persister1",)}
    assert shape.instances == ["main", "persister1"]


def test_a_stream_writer_not_in_instance_map_is_named_with_file_line_and_key() -> None:
    text = (
        "version: 1\n"
        "workers:\n"
        "  persister1: {kind: stream_writer}\n"
        "  worker1: {kind: client}\n"
        "stream_writers:\n"
        "  events: [persister1, worker1, persister2]\n"
    )
    assert errors_of(text) == (
        'workers.yaml:6:24: stream_writers.events[1]: "worker1" (a client worker) is not an '
        "instance: instance_map has main, persister1\n"
        'workers.yaml:6:33: stream_writers.events[2]: "persister2" is not an instance: '
        "instance_map has main, persister1"
    )


def test_unknown_kinds_streams_and_idle_writers_are_refused_together() -> None:
    text = (
        "version: 1\n"
        "workers:\n"
        "  main: {kind: client}\n"
        "  w2: {kind: clients}\n"
        "  idle: {kind: stream_writer}\n"
        "  c2: {kind: client}\n"
        "stream_writers:\n"
        "  typing: [idle]\n"
    )
    assert errors_of(text) == "\n".join(
        [
            "workers.yaml:3:3: workers.main: a worker's name is a-z, 0-9 and _ (up to 32, not "
            'main); got "main"',
            "workers.yaml:4:14: workers.w2.kind: expected one of client, stream_writer, "
            'federation_sender; got "clients"',
            "workers.yaml:5:3: workers.idle: a stream_writer that no stream names under "
            "stream_writers would do nothing",
            "workers.yaml:6:3: workers.c2: one client worker at most: the front sends a room's "
            "/messages and a user's /sync to one process",
            "workers.yaml:8:3: stream_writers.typing: only events can have its own writer here; "
            "the other streams stay on main",
        ]
    )


def test_workers_switch_and_database_are_checked() -> None:
    assert workers_enabled({}) is False
    assert workers_enabled({"CLUBS_WORKERS": "1"}) is True
    with pytest.raises(HomeserverError, match=r"\$CLUBS_WORKERS: expected 0 or 1; got 'yes'"):
        workers_enabled({"CLUBS_WORKERS": "yes"})
    assert database_env({})["CLUBS_DB"] == "postgres"
    # `clubs backup` and `restore` find the same database as `clubs homeserver run` does.
    assert choose_database(Path("/nonexistent"), {"CLUBS_WORKERS": "1"}).embedded is not None
    with pytest.raises(HomeserverError) as err:
        database_env({"CLUBS_DB": "sqlite"})
    assert str(err.value) == (
        "$CLUBS_WORKERS=1: Synapse workers need PostgreSQL; set CLUBS_DB=postgres "
        "(or leave it unset)"
    )


def test_main_config_carries_replication_redis_socket_and_writers(tmp_path: Path) -> None:
    shape = load_shape()
    ports = Ports(9001, 9002, {"persister1": 9003, "worker1": 9004, "fedsender1": 9005})
    pg = {"host": "/run/pg", "port": "5432", "user": "synapse", "dbname": "synapse"}
    main = MainProcess(Settings(tmp_path, port=8008, postgres=pg), 8008, shape, ports)
    config = yaml.safe_load(main.render())
    assert main.url == "http://127.0.0.1:8008"  # the front
    assert config["public_baseurl"] == "http://127.0.0.1:8008/"
    client, replication = config["listeners"]
    assert (client["port"], client["x_forwarded"]) == (9001, True)
    assert client["bind_addresses"] == ["127.0.0.1"]
    assert replication == {
        "port": 9002,
        "bind_addresses": ["127.0.0.1"],
        "type": "http",
        "resources": [{"names": ["replication"]}],
    }
    assert config["redis"] == {"enabled": True, "path": str(tmp_path / "redis" / "valkey.sock")}
    assert config["instance_map"] == {
        "main": {"host": "127.0.0.1", "port": 9002},
        "persister1": {"host": "127.0.0.1", "port": 9003},
    }
    assert config["stream_writers"] == {"events": ["persister1"]}
    assert config["federation_sender_instances"] == ["fedsender1"]
    assert config["worker_replication_secret_path"].endswith("/secrets/worker_replication_secret")
    assert "worker_replication_secret" not in config


def test_main_stays_on_loopback_when_the_front_binds_everywhere(tmp_path: Path) -> None:
    ports = Ports(9001, 9002, {"persister1": 9003, "worker1": 9004, "fedsender1": 9005})
    pg = {"host": "/run/pg", "port": "5432", "user": "synapse", "dbname": "synapse"}
    settings = Settings(tmp_path, port=8008, bind_host="0.0.0.0", postgres=pg)  # noqa: S104
    main = MainProcess(settings, 8008, load_shape(), ports)
    config = yaml.safe_load(main.render())
    assert [ln["bind_addresses"] for ln in config["listeners"]] == [["127.0.0.1"]] * 2
    assert main.front_host == "0.0.0.0"  # noqa: S104 - the front is what a proxy reaches


def test_each_worker_listens_on_loopback_for_its_part_only(tmp_path: Path) -> None:
    by_name = {w.name: w for w in load_shape().workers}
    log = tmp_path / "w.log.yaml"
    sender = worker_settings(by_name["fedsender1"], 9005, log)
    assert sender["worker_listeners"] == [
        {"type": "http", "port": 9005, "bind_addresses": ["127.0.0.1"], "x_forwarded": False,
         "resources": []}
    ]  # fmt: skip
    persister = worker_settings(by_name["persister1"], 9003, log)["worker_listeners"][0]
    assert persister["resources"] == [{"names": ["replication"]}]
    client = worker_settings(by_name["worker1"], 9004, log)
    assert client["worker_app"] == "synapse.app.generic_worker"
    assert client["worker_listeners"][0]["resources"] == [{"names": ["client"]}]


def test_internal_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = Ports.free(load_shape())
    chosen = [ports.main_client, ports.main_replication, *ports.workers.values()]
    assert len(set(chosen)) == 5
    assert all(QUIET_PORTS_FROM <= p < low for p in chosen)
    assert QUIET_PORTS_FROM <= quiet_port(set(chosen)) < low


def test_a_socket_path_too_long_for_unix_is_refused_before_anything(tmp_path: Path) -> None:
    layout = Layout(tmp_path / ("x" * 120))
    with pytest.raises(HomeserverError, match="the Redis socket path is longer than 100 bytes"):
        layout.check()


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/_matrix/client/v3/sync", "client"),
        ("/_matrix/client/r0/sync", "client"),
        ("/_matrix/client/v3/rooms/!a:x/send/m.room.encrypted/t1", "client"),
        ("/_matrix/client/v3/rooms/!a:x/messages", "client"),
        ("/_matrix/client/v3/rooms/!a:x/state/m.room.name/", "client"),
        ("/_matrix/client/v3/rooms/!a:x/invite", "client"),
        ("/_matrix/client/v3/join/!a:x", "client"),
        ("/_matrix/client/v3/createRoom", "client"),
        ("/_matrix/client/v3/keys/query", "client"),
        ("/_matrix/client/v3/keys/upload", "main"),
        ("/_matrix/client/v3/sendToDevice/m.room_key_request/t", "main"),
        ("/_matrix/client/v3/rooms/!a:x/receipt/m.read/$e", "main"),
        ("/_matrix/client/v3/rooms/!a:x/typing/@u:x", "main"),
        ("/_matrix/client/v3/login", "main"),
        ("/_matrix/client/versions", "main"),
        ("/_matrix/client/v1/media/download/x/y", "main"),
        ("/_matrix/client/v3/sync/extra", "main"),
        ("/_synapse/admin/v1/register", "main"),
    ],
)
def test_routing_follows_the_worker_table(path: str, target: str) -> None:
    assert route(path, "127.0.0.1", has_client_worker=True) == target


def test_without_a_client_worker_everything_goes_to_main() -> None:
    assert route("/_matrix/client/v3/sync", "127.0.0.1", has_client_worker=False) == "main"


@pytest.mark.parametrize("peer", ["192.0.2.1", "10.0.0.5", "::ffff:192.0.2.1", None, "garbage"])
def test_the_admin_api_is_refused_to_peers_off_the_machine(peer: str | None) -> None:
    for admin in ("/_synapse/admin/v2/users/@a:x", "//_synapse//admin/v1/x", "/_synapse/admin"):
        refused = route(admin, peer, has_client_worker=True)
        assert refused == Refused(
            403, "M_FORBIDDEN", "the admin API is served on the machine itself only"
        )
    assert route("/_synapse/administrator", peer, has_client_worker=True) == "main"
    assert route("/_synapse/admin/v2/users/@a:x", "::1", has_client_worker=True) == "main"


def test_forwarded_for_is_the_peer_unless_our_own_proxy_set_it() -> None:
    claimed = {"x-forwarded-for": "203.0.113.9", "Connection": "keep-alive", "Accept": "*/*"}
    own = forwarded_headers(claimed, "198.51.100.4", "http", behind_proxy=False)
    assert own == {"Accept": "*/*", "X-Forwarded-For": "198.51.100.4", "X-Forwarded-Proto": "http"}
    proxied = {**claimed, "X-Forwarded-Proto": "https"}
    kept = forwarded_headers(proxied, "127.0.0.1", "http", behind_proxy=True)
    assert kept == {
        "Accept": "*/*",
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Proto": "https",
    }
