"""The network's own certificate authority: TLS between the network's homeservers only.

Servers of the network federate over TLS with certificates from one CA of the network's own
(never a public CA: a server outside the network cannot get one, and Synapse trusts nothing else
for federation once `federation_custom_ca_list` names our CA). The CA is created once, on the
machine of the network's admin:

- `ca.crt`, the CA certificate, goes to every server (it is public);
- `ca.key`, its private key, stays in the CA directory, encrypted (PKCS#8 with a passphrase the
  caller keeps in the vault) and 0600.

A server's certificate names the server's host (its `server_name` without the port) as its only
subject alternative name, is valid for `SERVER_DAYS`, and is written with the CA certificate
after it (Synapse wants the full chain). `check_server_tls` runs before Synapse starts: a file
that does not parse, a key that is not the certificate's, an expired certificate, a certificate
for another host or from another CA is one located error (`<file>: <setting>: …`), and nothing
starts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clubs.core.errors import ClubsError
from clubs.core.ids import is_server_name
from clubs.core.secrets import write_private

CA_DAYS = 3650
SERVER_DAYS = 397
"""A year and a month: renew yearly (`clubs federation issue` again), as public CAs do."""
MAX_PEM_BYTES = 1 << 20

Now = Callable[[], datetime.datetime]


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CertificateError(ClubsError):
    """A CA, certificate or key file is missing, does not parse, or does not fit."""


def server_host(server_name: str) -> str:
    """The host a peer connects to and checks the certificate against: `server_name` without
    its port (`localhost:8448` → `localhost`, `[::1]:8448` → `::1`)."""
    if server_name.startswith("["):
        return server_name[1 : server_name.index("]")]
    host, _, port = server_name.rpartition(":")
    return host if host and port.isdigit() else server_name


def _san_for(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _read(path: Path, setting: str, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_PEM_BYTES:
            raise CertificateError(f"{path}: {setting}: {size} bytes is too large for {what}")
        return path.read_bytes()
    except FileNotFoundError:
        raise CertificateError(f"{path}: {setting}: no such file (expected {what})") from None
    except OSError as e:
        raise CertificateError(f"{path}: {setting}: cannot read it ({e.strerror})") from None


def load_certificates(path: Path, setting: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file; a located error if there is none or one is damaged."""
    data = _read(path, setting, "PEM certificates")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise CertificateError(
            f"{path}: {setting}: not a PEM certificate (expected '-----BEGIN CERTIFICATE-----' "
            "blocks); give the file `clubs federation` wrote, not a key or a request"
        )
    return certs


def load_private_key(
    path: Path, setting: str, passphrase: bytes | None = None
) -> ec.EllipticCurvePrivateKey:
    data = _read(path, setting, "a PEM private key")
    try:
        key = load_pem_private_key(data, passphrase)
    except TypeError:
        raise CertificateError(
            f"{path}: {setting}: the key is encrypted and no passphrase was given"
            if passphrase is None
            else f"{path}: {setting}: the key is not encrypted, but should be"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(
            f"{path}: {setting}: not a PEM private key, or the passphrase is wrong"
            + (" (the CA key's passphrase is in the vault)" if passphrase is not None else "")
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{path}: {setting}: expected an EC key, got another kind")
    return key


@dataclass(frozen=True)
class ServerFiles:
    """A server's TLS files as `issue` wrote them."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class NetworkCA:
    """The CA certificate and its private key, loaded in memory."""

    directory: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @staticmethod
    def cert_path(directory: Path) -> Path:
        return directory / "ca.crt"

    @staticmethod
    def key_path(directory: Path) -> Path:
        return directory / "ca.key"

    @classmethod
    def create(
        cls,
        directory: Path,
        passphrase: bytes,
        *,
        network: str,
        days: int = CA_DAYS,
        now: Now = _utcnow,
    ) -> NetworkCA:
        """A new CA in `directory`; refused if one is there (a new CA orphans every server's
        certificate)."""
        cert_path, key_path = cls.cert_path(directory), cls.key_path(directory)
        for p in (cert_path, key_path):
            if p.exists():
                raise CertificateError(
                    f"{p}: a network CA already exists here; a new one would orphan every "
                    "server's certificate (move the directory aside if that is what you want)"
                )
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{network} network CA")])
        start = now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - datetime.timedelta(minutes=5))
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_private(
            key_path,
            key.private_bytes(
                Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(passphrase)
            ),
        )
        _write_public(cert_path, cert.public_bytes(Encoding.PEM))
        return cls(directory, cert, key)

    @classmethod
    def load(cls, directory: Path, passphrase: bytes) -> NetworkCA:
        cert = load_certificates(cls.cert_path(directory), "network CA certificate")[0]
        key = load_private_key(cls.key_path(directory), "network CA key", passphrase)
        if key.public_key() != cert.public_key():
            raise CertificateError(
                f"{cls.key_path(directory)}: network CA key: it is not the key of "
                f"{cls.cert_path(directory)}"
            )
        return cls(directory, cert, key)

    @classmethod
    def ensure(cls, directory: Path, passphrase: bytes, *, network: str) -> tuple[NetworkCA, bool]:
        """The CA in `directory`, created first if there is none. Returns (CA, created)."""
        if cls.cert_path(directory).exists() or cls.key_path(directory).exists():
            return cls.load(directory, passphrase), False
        return cls.create(directory, passphrase, network=network), True

    def issue(
        self,
        server_name: str,
        directory: Path,
        *,
        days: int = SERVER_DAYS,
        now: Now = _utcnow,
    ) -> ServerFiles:
        """A fresh key and certificate for `server_name`, written to `directory` (`tls.key`
        0600, `tls.crt` with the chain)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(key.public_key(), server_name, days, now)
        files = ServerFiles(directory / "tls.crt", directory / "tls.key")
        write_private(
            files.key, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        )
        _write_public(files.cert, self._chain(cert))
        return files

    def sign_request(
        self, csr_pem: bytes, server_name: str, *, days: int = SERVER_DAYS, now: Now = _utcnow
    ) -> bytes:
        """The certificate chain (PEM) for a request a new server made with its own key: the
        key never leaves that server. Only the request's key is used; the name is ours."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise CertificateError(
                "the certificate request is not a PEM request "
                "('-----BEGIN CERTIFICATE REQUEST-----')"
            ) from None
        if not csr.is_signature_valid:
            raise CertificateError("the certificate request's signature does not verify")
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise CertificateError("the certificate request's key is not an EC key")
        return self._chain(self._sign(public, server_name, days, now))

    def _chain(self, cert: x509.Certificate) -> bytes:
        return cert.public_bytes(Encoding.PEM) + self.cert.public_bytes(Encoding.PEM)

    def _sign(
        self, public: ec.EllipticCurvePublicKey, server_name: str, days: int, now: Now
    ) -> x509.Certificate:
        if not is_server_name(server_name):
            raise CertificateError(f"{server_name!r} is not a Matrix server name")
        host = server_host(server_name)
        start = now()
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - datetime.timedelta(minutes=5))
            .not_valid_after(
                min(start + datetime.timedelta(days=days), self.cert.not_valid_after_utc)
            )
            .add_extension(x509.SubjectAlternativeName([_san_for(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )


def make_request(server_name: str, directory: Path) -> tuple[Path, bytes]:
    """On a new server: its own key (`tls.key`, 0600) and a certificate request for the CA's
    admin. Returns (key path, request PEM)."""
    if not is_server_name(server_name):
        raise CertificateError(f"{server_name!r} is not a Matrix server name")
    key = ec.generate_private_key(ec.SECP256R1())
    host = server_host(server_name)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .add_extension(x509.SubjectAlternativeName([_san_for(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path = directory / "tls.key"
    write_private(key_path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return key_path, csr.public_bytes(Encoding.PEM)


def _write_public(path: Path, data: bytes) -> None:
    write_private(path, data)
    os.chmod(path, 0o644)  # certificates are public; Synapse and peers read them


@dataclass(frozen=True)
class TlsSetting:
    """A file and the setting that named it, for the error text."""

    path: Path
    setting: str


def check_server_tls(
    server_name: str,
    cert: TlsSetting,
    key: TlsSetting,
    cas: Sequence[TlsSetting],
    *,
    now: Now = _utcnow,
) -> None:
    """Everything Synapse and its peers will check, checked now, each failure one located
    line: the files parse, the key is the certificate's, the certificate is valid today, names
    `server_name`'s host, and was issued by one of the CAs."""
    chain = load_certificates(cert.path, cert.setting)
    leaf = chain[0]
    private = load_private_key(key.path, key.setting)
    if private.public_key() != leaf.public_key():
        raise CertificateError(
            f"{key.path}: {key.setting}: this key is not the key of the certificate {cert.path}"
        )
    anchors = [c for ca in cas for c in load_certificates(ca.path, ca.setting)]
    moment = now()
    if moment < leaf.not_valid_before_utc:
        raise CertificateError(
            f"{cert.path}: {cert.setting}: not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check the clock)"
        )
    if moment > leaf.not_valid_after_utc:
        raise CertificateError(
            f"{cert.path}: {cert.setting}: expired on {leaf.not_valid_after_utc:%Y-%m-%d} UTC; "
            "issue a new one with `clubs federation issue`"
        )
    host = server_host(server_name)
    if not _names(leaf, host):
        raise CertificateError(
            f"{cert.path}: {cert.setting}: made for {', '.join(_san_list(leaf)) or 'no name'}, "
            f"not for this server's host {host!r} (server_name {server_name})"
        )
    for anchor in anchors:
        if moment > anchor.not_valid_after_utc:
            continue
        try:
            leaf.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return
    shown = ", ".join(str(ca.path) for ca in cas)
    raise CertificateError(
        f"{cert.path}: {cert.setting}: not issued by the network CA ({shown}), or that CA "
        "has expired; peers would refuse this server"
    )


def _san_list(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    ]


def _names(cert: x509.Certificate, host: str) -> bool:
    return host.lower() in (n.lower() for n in _san_list(cert))
