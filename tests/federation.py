"""Real Synapses federating over TLS from a network CA made for the test, on loopback.

`federated_servers(base, ["a", "b"], outsider=True)` starts one Synapse per name, each with its
own server name (`localhost:<federation port>`: with a port in the name, peers connect straight
to it, no `.well-known` and no SRV), a certificate from one throw-away network CA, and an
allow-list naming only the others. The outsider (`c`) also has a certificate from the CA (so
TLS would succeed) and allows `a`, but nobody allows it: what refuses it is the allow-list alone.
The servers start at once, in threads, to keep the fixture's cost near one start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from clubs.core.ca import NetworkCA, TlsSetting
from clubs.core.homeserver import FederationTls, Homeserver, Settings, find_free_port
from tests.harness import SynapseHarness, bootstrap_admin

LOOPBACK_RANGES = ("127.0.0.1/32", "::1/128")


@dataclass
class Federation:
    ca: NetworkCA
    servers: dict[str, SynapseHarness]
    outsider: SynapseHarness | None
    impostor: SynapseHarness | None = None

    def __getitem__(self, name: str) -> SynapseHarness:
        return self.servers[name]


def federation_settings(
    data_dir: Path, server_name: str, port: int, ca: NetworkCA, allow: Sequence[str]
) -> Settings:
    """A server of the network: its certificate issued by `ca` into its data directory."""
    files = ca.issue(server_name, data_dir / "tls")
    return Settings(
        data_dir=data_dir,
        server_name=server_name,
        port=0,
        federation_allowlist=tuple(allow),
        federation_tls=FederationTls(
            port=port,
            cert=TlsSetting(files.cert, "tls_certificate_path"),
            key=TlsSetting(files.key, "tls_private_key_path"),
            ca=TlsSetting(NetworkCA.cert_path(ca.directory), "federation_custom_ca_list"),
            ip_ranges=LOOPBACK_RANGES,
        ),
    )


@contextlib.asynccontextmanager
async def federated_servers(
    base: Path,
    names: Sequence[str] = ("a", "b"),
    *,
    outsider: bool = False,
    impostor: bool = False,
) -> AsyncIterator[Federation]:
    """The network's servers `names`; with `outsider`, C (see above); with `impostor`, D: its
    certificate is from another CA, and the network's last server lists it (so what refuses it
    is the certificate alone)."""
    ca = NetworkCA.create(base / "ca", secrets.token_bytes(16), network="test")
    extra = [*(["c"] if outsider else []), *(["d"] if impostor else [])]
    ports = {n: find_free_port() for n in [*names, *extra]}
    server_names = {n: f"localhost:{p}" for n, p in ports.items()}
    members = [server_names[n] for n in names]
    allow = {n: [m for m in members if m != server_names[n]] for n in names}
    if impostor:
        allow[names[-1]].append(server_names["d"])
    settings = {
        n: federation_settings(base / n, server_names[n], ports[n], ca, allow[n]) for n in names
    }
    if outsider:
        # It allows the network's first server and trusts the CA: only the network refuses it.
        settings["c"] = federation_settings(
            base / "c", server_names["c"], ports["c"], ca, members[:1]
        )
    if impostor:
        other = NetworkCA.create(base / "other-ca", secrets.token_bytes(16), network="other")
        settings["d"] = federation_settings(
            base / "d", server_names["d"], ports["d"], other, members[-1:]
        )
    homeservers = {n: Homeserver(s) for n, s in settings.items()}
    try:
        await asyncio.gather(*(asyncio.to_thread(hs.start) for hs in homeservers.values()))
        harnesses = {
            n: SynapseHarness(hs, await bootstrap_admin(hs)) for n, hs in homeservers.items()
        }
        network = {n: harnesses[n] for n in names}
        try:
            yield Federation(ca, network, harnesses.get("c"), harnesses.get("d"))
        finally:
            for h in harnesses.values():
                await h.admin.http.close()
                await h.close()
    finally:
        for hs in homeservers.values():
            hs.stop()
