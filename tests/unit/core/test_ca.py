"""The network CA: created once with its key encrypted, server certificates for a server name,
and a located error for every file that does not parse or does not fit."""

from __future__ import annotations

import datetime
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from clubs.core.ca import (
    CertificateError,
    NetworkCA,
    TlsSetting,
    check_server_tls,
    make_request,
    server_host,
)
from clubs.core.errors import HomeserverError
from clubs.core.homeserver import FederationTls, Homeserver, Settings, render_config

PASS = b"correct horse battery"
NAME = "kz.clubs.example:8448"


@pytest.fixture
def ca(tmp_path: Path) -> NetworkCA:
    return NetworkCA.create(tmp_path / "ca", PASS, network="commclubs")


def settings_for(files_cert: Path, files_key: Path, ca_file: Path) -> tuple[TlsSetting, ...]:
    return (
        TlsSetting(files_cert, "tls_certificate_path"),
        TlsSetting(files_key, "tls_private_key_path"),
        TlsSetting(ca_file, "federation_custom_ca_list"),
    )


def check(files_cert: Path, files_key: Path, ca_file: Path, name: str = NAME, **kw: Any) -> None:
    cert, key, ca_setting = settings_for(files_cert, files_key, ca_file)
    check_server_tls(name, cert, key, [ca_setting], **kw)


def test_server_host_drops_the_port() -> None:
    assert server_host("localhost:8448") == "localhost"
    assert server_host("kz.clubs.example") == "kz.clubs.example"
    assert server_host("[::1]:8448") == "::1"
    assert server_host("127.0.0.1:28448") == "127.0.0.1"


def test_ca_key_is_encrypted_and_private(ca: NetworkCA) -> None:
    key_file = NetworkCA.key_path(ca.directory)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in key_file.read_bytes()
    assert NetworkCA.load(ca.directory, PASS).cert == ca.cert


def test_wrong_passphrase_is_a_located_error(ca: NetworkCA) -> None:
    with pytest.raises(CertificateError, match=r"ca\.key: network CA key: .*passphrase is wrong"):
        NetworkCA.load(ca.directory, b"wrong")


def test_a_second_ca_is_refused_and_ensure_keeps_the_first(ca: NetworkCA) -> None:
    with pytest.raises(CertificateError, match="already exists"):
        NetworkCA.create(ca.directory, PASS, network="commclubs")
    again, created = NetworkCA.ensure(ca.directory, PASS, network="commclubs")
    assert not created
    assert again.cert == ca.cert


def test_issued_certificate_names_the_host_and_passes_the_checks(
    ca: NetworkCA, tmp_path: Path
) -> None:
    files = ca.issue(NAME, tmp_path / "tls")
    chain = x509.load_pem_x509_certificates(files.cert.read_bytes())
    assert chain[1] == ca.cert  # the full chain, as Synapse wants it
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["kz.clubs.example"]
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    check(files.cert, files.key, NetworkCA.cert_path(ca.directory))


def test_a_ca_file_that_does_not_parse_names_the_file_and_the_setting(
    ca: NetworkCA, tmp_path: Path
) -> None:
    files = ca.issue(NAME, tmp_path / "tls")
    bad = tmp_path / "ca.pem"
    bad.write_text("this is not a certificate\n")
    with pytest.raises(CertificateError) as e:
        check(files.cert, files.key, bad)
    assert str(e.value).startswith(f"{bad}: federation_custom_ca_list: not a PEM certificate")
    with pytest.raises(CertificateError, match=r"missing\.pem: federation_custom_ca_list: no such"):
        check(files.cert, files.key, tmp_path / "missing.pem")


def test_expired_wrong_host_wrong_ca_and_wrong_key_are_refused(
    ca: NetworkCA, tmp_path: Path
) -> None:
    ca_file = NetworkCA.cert_path(ca.directory)
    files = ca.issue(NAME, tmp_path / "tls")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=400)
    with pytest.raises(CertificateError, match=r"tls\.crt: tls_certificate_path: expired on"):
        check(files.cert, files.key, ca_file, now=lambda: later)
    with pytest.raises(CertificateError, match=r"made for kz\.clubs\.example, not for .*de\.clubs"):
        check(files.cert, files.key, ca_file, name="de.clubs.example:8448")
    other = NetworkCA.create(tmp_path / "other", PASS, network="other")
    with pytest.raises(CertificateError, match="not issued by the network CA"):
        check(files.cert, files.key, NetworkCA.cert_path(other.directory))
    second = ca.issue(NAME, tmp_path / "second")
    with pytest.raises(CertificateError, match=r"tls_private_key_path: this key is not the key"):
        check(files.cert, second.key, ca_file)


def test_a_request_is_signed_for_our_name_and_the_key_stays_with_the_server(
    ca: NetworkCA, tmp_path: Path
) -> None:
    key, request = make_request(NAME, tmp_path / "new")
    chain = ca.sign_request(request, NAME)
    cert = tmp_path / "new" / "tls.crt"
    cert.write_bytes(chain)
    check(cert, key, NetworkCA.cert_path(ca.directory))
    with pytest.raises(CertificateError, match="not a PEM request"):
        ca.sign_request(b"garbage", NAME)


def test_federation_tls_renders_its_own_listener_and_trusts_only_the_ca(tmp_path: Path) -> None:
    tls = FederationTls(
        port=8448,
        cert=TlsSetting(tmp_path / "tls.crt", "tls_certificate_path"),
        key=TlsSetting(tmp_path / "tls.key", "tls_private_key_path"),
        ca=TlsSetting(tmp_path / "ca.crt", "federation_custom_ca_list"),
        ip_ranges=("10.8.0.0/24",),
    )
    settings = Settings(
        data_dir=tmp_path / "hs",
        server_name=NAME,
        federation_allowlist=("de.clubs.example:8448",),
        federation_tls=tls,
    )
    config = yaml.safe_load(render_config(settings, 8008))
    client, federation = config["listeners"]
    assert client["resources"][0]["names"] == ["client"]
    assert federation["port"] == 8448
    assert federation["tls"] is True
    assert federation["resources"][0]["names"] == ["federation"]
    assert config["federation_domain_whitelist"] == ["de.clubs.example:8448"]
    assert config["federation_custom_ca_list"] == [str(tmp_path / "ca.crt")]
    assert config["federation_verify_certificates"] is True
    assert config["tls_certificate_path"] == str(tmp_path / "tls.crt")
    assert config["ip_range_whitelist"] == ["10.8.0.0/24"]
    assert config["federation"]["destination_min_retry_interval"] == "30s"


def test_a_bad_ca_file_stops_the_homeserver_before_anything_is_written(
    ca: NetworkCA, tmp_path: Path
) -> None:
    files = ca.issue(NAME, tmp_path / "tls")
    bad = tmp_path / "ca.pem"
    bad.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    cert, key, ca_setting = settings_for(files.cert, files.key, bad)
    data_dir = tmp_path / "hs"
    hs = Homeserver(
        Settings(
            data_dir=data_dir,
            server_name=NAME,
            federation_tls=FederationTls(8448, cert, key, ca_setting),
        )
    )
    with pytest.raises(CertificateError, match=f"{bad}: federation_custom_ca_list: not a PEM"):
        hs.start()
    assert not data_dir.exists()
    assert hs.process is None


def test_a_taken_federation_port_is_named_as_such(ca: NetworkCA, tmp_path: Path) -> None:
    files = ca.issue("localhost:1", tmp_path / "tls")
    cert, key, ca_setting = settings_for(files.cert, files.key, NetworkCA.cert_path(ca.directory))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        hs = Homeserver(
            Settings(
                data_dir=tmp_path / "hs",
                server_name=f"localhost:{port}",
                port=0,
                federation_tls=FederationTls(port, cert, key, ca_setting),
            )
        )
        with pytest.raises(HomeserverError, match=r"already in use .*CLUBS_FEDERATION_PORT"):
            hs.start()
    assert hs.process is None
