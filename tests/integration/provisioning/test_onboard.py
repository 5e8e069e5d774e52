"""Onboarding: precreated accounts (password once, never re-sent) and registration tokens."""

from __future__ import annotations

import secrets
from pathlib import Path

from clubs.core.admin import login_password, whoami
from clubs.core.errors import MatrixError
from clubs.core.http import MatrixHttp, path
from clubs.core.secrets import Vault
from clubs.provisioning.desired import DesiredPerson
from clubs.provisioning.discover import discover, server_tokens, token_statuses
from clubs.provisioning.onboard import invite_text, issue_token, password_key, revoke_token
from clubs.provisioning.plan import plan
from clubs.provisioning.tokens import TokenStore, token_hash
from tests.harness import SynapseHarness
from tests.integration.provisioning.helpers import new_provisioner
from tests.integration.provisioning.networks import make_network

CS = ("_matrix", "client", "v3")


async def _register_with_token(url: str, token: str) -> str:
    async with MatrixHttp(url) as anon:
        body = {"username": f"new-{secrets.token_hex(4)}", "password": secrets.token_urlsafe(12)}
        try:
            await anon.post(path(*CS, "register"), body, auth=False)
        except MatrixError as e:
            session = e.body["session"]
        else:  # pragma: no cover - the server always asks for the token first
            raise AssertionError("registration without a token succeeded")
        for auth in (
            {"type": "m.login.registration_token", "token": token, "session": session},
            {"type": "m.login.dummy", "session": session},
        ):
            try:
                resp = await anon.post(path(*CS, "register"), {**body, "auth": auth}, auth=False)
            except MatrixError as e:
                if e.status != 401:
                    raise
                continue
            return str(resp["user_id"])
    raise AssertionError("registration did not complete")


async def test_precreated_account_gets_its_password_once(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    prov = await new_provisioner(synapse)
    mxid = f"@pc-{secrets.token_hex(4)}:{synapse.server_name}"
    person = DesiredPerson("pc", mxid, "Пётр", "precreate", ("c0",))
    net = make_network(
        synapse.server_name, n_clubs=1, rooms_per_club=1, members={"c0": {mxid: 0}}, people=[person]
    )
    vault = Vault(tmp_path / "vault")
    first = await prov.apply(net, vault=vault)
    assert [a.user_id for a in first.plan.actions if a.kind == "create_user"] == [mxid]
    password = vault.get(password_key(mxid))
    assert password
    async with MatrixHttp(synapse.url) as anon:
        session = await login_password(anon, mxid, password)
    second = await prov.apply(net, vault=vault)
    assert second.writes == 0
    # The password was not re-sent: the person's device is still logged in.
    async with MatrixHttp(synapse.url, session.access_token) as me:
        assert await whoami(me) == mxid


async def test_token_person_gets_one_token_and_its_use_is_reported(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    prov = await new_provisioner(synapse)
    person = DesiredPerson("tk", None, None, "token", ("c0",))
    net = make_network(synapse.server_name, n_clubs=1, rooms_per_club=1, people=[person])
    store = TokenStore(tmp_path / "tokens.sqlite")
    first = await prov.apply(net, tokens=store)
    (issued,) = first.issued
    assert "IssuedToken(person='tk'" in repr(issued)
    assert issued.token not in repr(issued)
    (record,) = store.list(net.network)
    assert record.token_sha256 == token_hash(issued.token)
    assert issued.token not in (tmp_path / "tokens.sqlite").read_bytes().decode("latin-1")
    assert (await prov.apply(net, tokens=store)).writes == 0

    text = invite_text(synapse.url, issued.token, issued.expiry_ms, network=net.network)
    assert synapse.url in text
    assert issued.token in text
    assert "Приглашение" in text
    assert "Invitation" in invite_text(synapse.url, issued.token, None, network="n", lang="en")

    await _register_with_token(synapse.url, issued.token)
    async with prov.http() as http:
        assert await token_statuses(http, store, net.network) == {"tk": "used"}
    async with prov.http() as http:
        actual = await discover(http, net, prov.user_id, tokens=store)
    p = plan(net, actual)
    assert p.empty
    assert [n.kind for n in p.notes] == ["registered"]

    async with prov.http() as http:
        extra = await issue_token(http, store, net.network, "tk")
        rec = store.list(net.network)[-1]
        assert await revoke_token(http, store, rec)
        assert token_hash(extra.token) not in await server_tokens(http)
        again = store.get(rec.id)
        assert again is not None
        assert again.revoked
    store.close()
