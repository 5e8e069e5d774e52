"""`clubs federation` (CA once, a new server's request signed, its key never moved) and the
federation settings `clubs homeserver run` takes from the network file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from clubs.cli import main
from clubs.core.errors import ClubsError
from clubs.core.secrets import Vault
from clubs.federation import CA_PASSPHRASE, homeserver_federation

NETWORK = """\
version: 1
network: demo
name: "Сеть"
servers:
  kz: {server_name: "kz.clubs.example:8448"}
  de: {server_name: "de.clubs.example:8448"}
countries:
  - {key: kz, name: "Казахстан", server: kz}
  - {key: de, name: "Германия", server: de}
"""
KZ = "kz.clubs.example:8448"


@pytest.fixture
def network_file(tmp_path: Path) -> Path:
    file = tmp_path / "network.yaml"
    file.write_text(NETWORK)
    return file


def enrol(admin: Path, server: Path, server_name: str = KZ) -> None:
    """The steps of docs/federation.md: CA, request on the server, signature, files in place."""
    assert main(["federation", "ca", "--network", "demo", "--var-dir", str(admin)]) == 0
    assert main(["federation", "request", server_name, "--var-dir", str(server)]) == 0
    files = server / "federation"
    assert (
        main(
            [
                "federation",
                "sign",
                server_name,
                "--csr",
                str(files / "tls.csr"),
                "--out",
                str(files / "tls.crt"),
                "--var-dir",
                str(admin),
            ]
        )
        == 0
    )
    (files / "ca.crt").write_bytes((admin / "federation-ca" / "ca.crt").read_bytes())


def test_a_new_server_is_enrolled_without_its_key_leaving_it(
    tmp_path: Path, network_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin, server = tmp_path / "admin", tmp_path / "kz"
    enrol(admin, server)
    key = server / "federation" / "tls.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not (admin / "federation").exists()  # nothing of the server's was made on the CA side
    assert Vault(admin / "secrets" / "vault").get(CA_PASSPHRASE)
    assert b"ENCRYPTED" in (admin / "federation-ca" / "ca.key").read_bytes()

    env = {"CLUBS_NETWORK_FILE": str(network_file)}
    allowlist, tls = homeserver_federation(server, KZ, env)
    assert allowlist == ("de.clubs.example:8448",)
    assert tls is not None
    assert tls.port == 8448
    assert tls.key.path == key.resolve()
    capsys.readouterr()
    # The rendered config has the TLS listener and trusts the network's CA only.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLUBS_NETWORK_FILE", str(network_file))
        assert main(["homeserver", "config", "--server-name", KZ, "--var-dir", str(server)]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["federation_domain_whitelist"] == ["de.clubs.example:8448"]
    assert config["federation_custom_ca_list"] == [str((server / "federation/ca.crt").resolve())]
    assert [listener["port"] for listener in config["listeners"]][-1] == 8448


def test_one_server_keeps_federation_off(tmp_path: Path) -> None:
    single = tmp_path / "one.yaml"
    single.write_text(
        NETWORK.replace('  de: {server_name: "de.clubs.example:8448"}\n', "").replace(
            '  - {key: de, name: "Германия", server: de}\n', ""
        )
    )
    assert homeserver_federation(tmp_path, KZ, {"CLUBS_NETWORK_FILE": str(single)}) == ((), None)
    assert homeserver_federation(tmp_path, KZ, {}) == ((), None)


def test_a_server_not_in_the_network_file_is_refused(tmp_path: Path, network_file: Path) -> None:
    with pytest.raises(ClubsError, match=r"servers: this homeserver's name, fr\.example, is not"):
        homeserver_federation(tmp_path, "fr.example", {"CLUBS_NETWORK_FILE": str(network_file)})


def test_a_ca_file_that_does_not_parse_stops_the_homeserver_before_it_starts(
    tmp_path: Path,
    network_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin, server = tmp_path / "admin", tmp_path / "kz"
    enrol(admin, server)
    ca = server / "federation" / "ca.crt"
    ca.write_text("not a certificate\n")
    monkeypatch.setenv("CLUBS_NETWORK_FILE", str(network_file))
    monkeypatch.setenv("CLUBS_FEDERATION_PORT", "28448")
    capsys.readouterr()
    code = main(["homeserver", "run", "--server-name", KZ, "--var-dir", str(server), "--port", "0"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"clubs: error: {ca.resolve()}: CLUBS_FEDERATION_CA (federation_custom_ca_list): "
        "not a PEM certificate"
    )
    assert not (server / "synapse").exists()  # nothing was written, nothing started


def test_make_up_gives_the_homeserver_the_network_file_it_federates_by(
    tmp_path: Path, network_file: Path
) -> None:
    """`clubs up` starts `clubs homeserver run` with the network file it runs the bots and the
    provisioning with: a city whose file names several servers federates under `make up` too."""
    from clubs.up import child_specs

    [homeserver, *_] = child_specs(
        tmp_path,
        8008,
        KZ,
        service_port=8090,
        service_token="t",
        network_file=network_file,
        with_bots=False,
    )
    assert homeserver.name == "homeserver"
    env = dict(homeserver.env)
    assert env["CLUBS_NETWORK_FILE"] == str(network_file)
    allowlist, tls = homeserver_federation(tmp_path, KZ, env)
    assert allowlist == ("de.clubs.example:8448",)
    assert tls is not None
    assert tls.port == 8448
