"""`clubs federation`: the network's CA, its servers' certificates, and the homeserver's
federation settings (docs/federation.md).

On the network admin's machine the CA lives in `<var>/federation-ca/` (`ca.crt`; `ca.key`
encrypted with a passphrase kept in the vault, 0600). A server's own files are in
`<var>/federation/`: `tls.key` (0600, made on that server by `request`, or by `issue` when the
CA is on the same machine), `tls.crt` (the chain) and `ca.crt` (the CA certificate every peer
must be signed by).

`clubs homeserver run` reads its federation from the environment: `CLUBS_NETWORK_FILE` (the
network file; its `servers:` other than this one are the allow-list) or
`CLUBS_FEDERATION_ALLOWLIST`, and `CLUBS_FEDERATION_PORT` for the TLS listener. A network of
one server keeps federation off, as before.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path

from clubs.core.ca import NetworkCA, TlsSetting, make_request
from clubs.core.errors import ClubsError
from clubs.core.homeserver import FederationTls
from clubs.core.secrets import Vault, write_private

CA_PASSPHRASE = "federation/ca-passphrase"  # noqa: S105 - a name in the vault, not a secret
"""The vault's name for the CA key's passphrase."""
DEFAULT_PORT = 8448


def ca_dir(var_dir: Path) -> Path:
    return var_dir / "federation-ca"


def server_dir(var_dir: Path) -> Path:
    return var_dir / "federation"


def _passphrase(var_dir: Path) -> bytes:
    vault = Vault(var_dir / "secrets" / "vault")
    return vault.setdefault(CA_PASSPHRASE, secrets.token_urlsafe(32)).encode()


def open_ca(var_dir: Path) -> NetworkCA:
    directory = ca_dir(var_dir)
    if not NetworkCA.cert_path(directory).exists():
        raise ClubsError(
            f"{directory}: no network CA here; create it once with `clubs federation ca` "
            "on the network admin's machine"
        )
    return NetworkCA.load(directory, _passphrase(var_dir))


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    f = sub.add_parser("federation", help="TLS between the network's own servers")
    fs = f.add_subparsers(dest="fed_command", required=True, metavar="ACTION")
    ca = fs.add_parser("ca", help="create the network's CA, once, on the admin's machine")
    ca.add_argument("--network", required=True, help="the network id (named in the CA)")
    issue = fs.add_parser(
        "issue", help="a key and certificate for a server, made here (the CA's own machine)"
    )
    issue.add_argument("server_name")
    issue.add_argument("--out", type=Path, help="directory (default <var>/federation)")
    request = fs.add_parser(
        "request", help="on a new server: its own key and a certificate request for the CA"
    )
    request.add_argument("server_name")
    sign = fs.add_parser("sign", help="on the CA's machine: a certificate for a request")
    sign.add_argument("server_name")
    sign.add_argument("--csr", type=Path, required=True, help="the request the server sent")
    sign.add_argument("--out", type=Path, required=True, help="the certificate chain to write")
    for p in (ca, issue, request, sign):
        p.add_argument(
            "--var-dir",
            type=Path,
            default=Path(os.environ.get("CLUBS_VAR_DIR", "var")),
            help="where state lives (default ./var or $CLUBS_VAR_DIR)",
        )


def run(args: argparse.Namespace) -> int:
    var_dir: Path = args.var_dir.resolve()
    if args.fed_command == "ca":
        ca, created = NetworkCA.ensure(ca_dir(var_dir), _passphrase(var_dir), network=args.network)
        path = NetworkCA.cert_path(ca.directory)
        print(
            f"{'created' if created else 'kept'} the network CA: {path} (give it to every server "
            f"as <var>/federation/ca.crt); its key stays in {ca.directory}, encrypted"
        )
        return 0
    if args.fed_command == "issue":
        ca = open_ca(var_dir)
        out = (args.out or server_dir(var_dir)).resolve()
        files = ca.issue(args.server_name, out)
        shutil.copyfile(NetworkCA.cert_path(ca.directory), out / "ca.crt")
        print(f"{args.server_name}: {files.cert}, {files.key} (0600), {out / 'ca.crt'}")
        return 0
    if args.fed_command == "request":
        out = server_dir(var_dir)
        key, csr = make_request(args.server_name, out)
        (out / "tls.csr").write_bytes(csr)
        print(
            f"{args.server_name}: key {key} (0600, never leaves this machine); send "
            f"{out / 'tls.csr'} to the network admin, and put what comes back in "
            f"{out / 'tls.crt'}, with the network's CA certificate in {out / 'ca.crt'}"
        )
        return 0
    if args.fed_command == "sign":
        ca = open_ca(var_dir)
        try:
            csr = args.csr.read_bytes()
        except OSError as e:
            raise ClubsError(f"{args.csr}: cannot read the request ({e.strerror})") from None
        try:
            chain = ca.sign_request(csr, args.server_name)
        except ClubsError as e:
            raise ClubsError(f"{args.csr}: {e}") from None
        write_private(args.out, chain)
        args.out.chmod(0o644)
        print(
            f"{args.server_name}: {args.out}; send it back with {NetworkCA.cert_path(ca.directory)}"
        )
        return 0
    raise ClubsError(f"unknown action {args.fed_command}")  # pragma: no cover


def homeserver_federation(
    var_dir: Path, server_name: str, env: Mapping[str, str] = os.environ
) -> tuple[tuple[str, ...], FederationTls | None]:
    """(allow-list, TLS listener) for `clubs homeserver run` on `server_name`.

    The allow-list is the network file's other servers (`CLUBS_NETWORK_FILE`), else
    `CLUBS_FEDERATION_ALLOWLIST`; empty, federation stays off. The TLS listener is on
    `CLUBS_FEDERATION_PORT` (8448 when a network file names several servers), with this server's
    certificate and key and the network's CA from `<var>/federation/` unless `CLUBS_TLS_CERT`,
    `CLUBS_TLS_KEY` or `CLUBS_FEDERATION_CA` name other files; `CLUBS_FEDERATION_IP_RANGES`
    (comma-separated) lists the private ranges peers are on. The files are checked before
    anything starts (`Homeserver.prepare`)."""
    network_file = env.get("CLUBS_NETWORK_FILE")
    port_text = env.get("CLUBS_FEDERATION_PORT")
    if network_file:
        from clubs.provisioning.source import check

        network = check(Path(network_file)).network
        if network.servers and network.server_named(server_name) is None:
            names = ", ".join(s.server_name for s in network.servers)
            raise ClubsError(
                f"{network_file}: servers: this homeserver's name, {server_name}, is not one of "
                f"the network's servers ({names})"
            )
        allowlist = network.allowlist(server_name)
        if allowlist and not port_text:
            port_text = str(DEFAULT_PORT)
    else:
        allowlist = tuple(
            d for d in env.get("CLUBS_FEDERATION_ALLOWLIST", "").split(",") if d.strip()
        )
    if not allowlist or not port_text:
        return allowlist, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ClubsError(f"CLUBS_FEDERATION_PORT: expected a port number; got {port_text!r}")
    files = server_dir(var_dir)

    def setting(variable: str, default: Path, synapse_key: str) -> TlsSetting:
        given = env.get(variable)
        path = Path(given) if given else default
        return TlsSetting(path.resolve(), f"{variable} ({synapse_key})")

    return allowlist, FederationTls(
        port=int(port_text),
        cert=setting("CLUBS_TLS_CERT", files / "tls.crt", "tls_certificate_path"),
        key=setting("CLUBS_TLS_KEY", files / "tls.key", "tls_private_key_path"),
        ca=setting("CLUBS_FEDERATION_CA", files / "ca.crt", "federation_custom_ca_list"),
        bind_host=env.get("CLUBS_FEDERATION_BIND", "0.0.0.0"),  # noqa: S104 - peers come from outside
        ip_ranges=tuple(
            r.strip() for r in env.get("CLUBS_FEDERATION_IP_RANGES", "").split(",") if r.strip()
        ),
    )
