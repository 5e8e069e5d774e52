"""docker-compose.yml, the Dockerfile and the proxy, checked without Docker.

Docker is not on the test machines, so the compose file is parsed as YAML (merge keys
resolved) and held to the stack's rules: every command a service runs is one the CLI has,
every image is pinned, only the proxy publishes ports (and, with the federation override,
Synapse its own TLS listener), every volume, secret and dependency is declared. The
Caddyfile's routes are walked for the paths that matter: Synapse's admin API is
never forwarded, from either site.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from clubs.cli import build_parser, main
from clubs.federation import homeserver_federation

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
FEDERATION = ROOT / "docker-compose.federation.yml"
CADDYFILE = ROOT / "config" / "caddy" / "Caddyfile"


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


@pytest.mark.parametrize("name", [n for n, s in services().items() if "command" in s])
def test_service_command_parses(name: str) -> None:
    command = services()[name]["command"]
    assert isinstance(command, list)
    build_parser().parse_args([str(c) for c in command])


def test_every_image_is_pinned_to_a_version() -> None:
    for name, service in services().items():
        image = service.get("image")
        assert image, f"{name} has no image name"
        _, _, tag = image.rpartition(":")
        assert tag, f"{name}: {image} has no tag"
        assert "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
        assert re.search(r"\d", tag), f"{name}: {image} is not pinned to a version"
    base = re.search(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", base.group(1)), base.group(1)


def test_only_the_proxy_publishes_ports_and_synapse_trusts_it() -> None:
    published = {n for n, s in services().items() if "ports" in s}
    assert published == {"proxy"}
    assert "--behind-proxy" in services()["synapse"]["command"]


def test_volumes_secrets_and_dependencies_are_declared() -> None:
    data = compose()
    named = set(data["volumes"])
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in named, f"{name}: volume {source} is not declared"
            else:
                assert (ROOT / source).resolve().is_relative_to(ROOT), f"{name}: {source}"
        for secret in service.get("secrets", []):
            assert secret in data["secrets"], f"{name}: secret {secret}"
        for dep in service.get("depends_on", []):
            assert dep in data["services"], f"{name} depends on unknown {dep}"
    caddy_file = next(v for v in services()["proxy"]["volumes"] if "Caddyfile" in v)
    assert (ROOT / caddy_file.split(":")[0]).resolve() == CADDYFILE


def test_the_bridge_and_backups_are_opt_in_and_use_the_database() -> None:
    assert services()["bridge"]["profiles"] == ["bridge"]
    assert services()["backup"]["profiles"] == ["backup"]
    env = services()["synapse"]["environment"]
    assert env["CLUBS_DB"] == "postgres"
    assert env["CLUBS_PG_HOST"] == "db"
    assert "--locale=C" in services()["db"]["environment"]["POSTGRES_INITDB_ARGS"]


def test_federation_is_an_override_that_publishes_synapses_own_tls_port(tmp_path: Path) -> None:
    """docker-compose.federation.yml adds to the synapse service only: its TLS listener's port
    (the one port besides the proxy's) and the environment `clubs homeserver run` reads. With
    that environment and a network file of two servers, the listener and the allow-list are what
    federation needs, from the data volume's federation/ files."""
    from tests.unit.test_federation_cli import KZ, NETWORK

    override = yaml.safe_load(FEDERATION.read_text())
    assert set(override) == {"services"}
    assert set(override["services"]) == {"synapse"}
    synapse = override["services"]["synapse"]
    assert synapse["ports"] == ["8448:8448"]
    env = {**services()["synapse"]["environment"], **synapse["environment"]}
    network_file = env["CLUBS_NETWORK_FILE"]
    mounts = [str(v).split(":") for v in services()["synapse"]["volumes"]]
    assert ["./config", "/app/config", "ro"] in mounts
    assert network_file == "/app/config/network.yaml"  # the file provisioning and the bots read
    assert network_file in services()["bots"]["command"]
    # What `clubs homeserver run` in the container makes of it (paths mapped to a temporary
    # copy of the volume and the config mount; compose's `${VAR:-}` left empty).
    (tmp_path / "network.yaml").write_text(NETWORK)
    env = {
        k: "" if str(v).startswith("${") else str(v)
        for k, v in {**env, "CLUBS_NETWORK_FILE": str(tmp_path / "network.yaml")}.items()
    }
    data = tmp_path / "data"
    allowlist, tls = homeserver_federation(data, KZ, env)
    assert allowlist == ("de.clubs.example:8448",)
    assert tls is not None
    assert tls.port == 8448
    assert tls.bind_host == "0.0.0.0"  # noqa: S104 - published by the port mapping
    assert tls.cert.path == (data / "federation" / "tls.crt").resolve()
    assert tls.ca.path == (data / "federation" / "ca.crt").resolve()
    assert tls.ip_ranges == ()
    assert "--behind-proxy" in services()["synapse"]["command"]  # clients still via the proxy


def test_the_image_needs_no_compiler_for_postgres() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "[postgres]" not in dockerfile  # psycopg2 from source: compiler and libpq headers
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"psycopg2-binary' in pyproject


# --- the proxy ---------------------------------------------------------------------------------


def caddy_sites() -> dict[str, list[list[str]]]:
    """Each site's `route { … }` directives in order, as token lists (nested blocks folded)."""
    sites: dict[str, list[list[str]]] = {}
    site: str | None = None
    depth = 0
    in_route = False
    for raw in CADDYFILE.read_text().splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.strip().startswith('"') else raw.strip()
        if not line:
            continue
        tokens = line.split()
        if depth == 0 and line.endswith("{"):
            site = tokens[0] if len(tokens) > 1 else None
            if site is not None:
                sites[site] = []
        elif depth == 1 and tokens[0] == "route":
            in_route = True
        elif depth == 2 and in_route and site is not None and tokens[0] != "}":
            sites[site].append([t for t in tokens if t != "{"])
        depth += line.count("{") - line.count("}")
        if depth <= 1:
            in_route = False
    return sites


def _matches(matcher: str, path: str) -> bool:
    return matcher.startswith("/") and fnmatch.fnmatchcase(path.lower(), matcher.lower())


def route(site: str, path: str) -> str:
    """What the proxy does with `path` on `site`: 'respond 404', 'proxy <upstream>', 'file'."""
    for directive in caddy_sites()[site]:
        name, args = directive[0], directive[1:]
        matcher = args[0] if args and args[0].startswith("/") else None
        if matcher is not None and not _matches(matcher, path):
            continue
        rest = args[1:] if matcher else args
        if name == "respond":
            return f"respond {rest[0]}"
        if name == "reverse_proxy":
            return f"proxy {rest[0]}"
        if name == "file_server":
            return "file"
        if name == "uri" and rest[0] == "strip_prefix":
            path = path.removeprefix(rest[1]) or "/"
            continue
        raise AssertionError(f"{site}: a directive this test does not model: {directive}")
    return "nothing"


MATRIX = "{$CLUBS_MATRIX_HOST}"
ELEMENT = "{$CLUBS_ELEMENT_HOST}"


@pytest.mark.parametrize("site", [MATRIX, ELEMENT])
@pytest.mark.parametrize(
    "path",
    [
        "/_synapse/admin/v1/users/@a:clubs.example",
        "/_synapse/admin/v2/users",
        "/_SYNAPSE/Admin/v1/rooms",
        "/_synapse/admin",
    ],
)
def test_the_admin_api_is_never_forwarded(site: str, path: str) -> None:
    assert route(site, path) == "respond 404"


@pytest.mark.parametrize(
    ("site", "path", "expected"),
    [
        (MATRIX, "/_matrix/client/v3/sync", "proxy synapse:8008"),
        (MATRIX, "/_matrix/federation/v1/version", "proxy synapse:8008"),
        (MATRIX, "/_synapse/client/rendezvous", "proxy synapse:8008"),
        (MATRIX, "/bots/calendar/abc.ics", "proxy bots:8091"),
        (MATRIX, "/bots/metrics", "respond 404"),
        (MATRIX, "/bots/health", "respond 404"),
        (MATRIX, "/", "respond 404"),
        (ELEMENT, "/", "proxy element:80"),
        (ELEMENT, "/config.json", "file"),
    ],
)
def test_routes(site: str, path: str, expected: str) -> None:
    assert route(site, path) == expected


def test_the_element_config_service_writes_what_element_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = services()["element-config"]
    out = tmp_path / "config.json"
    command = [str(c) for c in service["command"]]
    command[command.index("--out") + 1] = str(out)
    monkeypatch.setenv("CLUBS_PUBLIC_BASEURL", "https://matrix.clubs.example/")
    monkeypatch.setenv("CLUBS_SERVER_NAME", "clubs.example")
    assert main(command) == 0
    config = json.loads(out.read_text())
    assert config["default_server_config"]["m.homeserver"] == {
        "base_url": "https://matrix.clubs.example",
        "server_name": "clubs.example",
    }
    assert config["disable_guests"] is True
    assert config["disable_custom_urls"] is True
    assert config["integrations_ui_url"] == ""
    assert config["integrations_rest_url"] == ""
    assert config["integrations_widgets_urls"] == []
    assert config["piwik"] is False
    assert "posthog" not in config
    assert config["setting_defaults"]["urlPreviewsEnabled_e2ee"] is False
    assert out.stat().st_mode & 0o777 == 0o644
