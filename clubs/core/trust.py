"""Which devices a bot shares room keys with: only devices cross-signed by their owner.

This is the policy Element applies with "exclude insecure devices" (spec v1.18: clients SHOULD
NOT send room keys to devices their owner has not cross-signed; MSC4153). A user's master key is
trusted on first use (TOFU) and pinned; if it later changes, none of that user's devices is
trusted until an operator accepts the new identity — a seized homeserver could otherwise add a
device *and* a new master key that signs it.

`evaluate_user` is the pure decision over one `/keys/query` answer; `MasterKeyPins` keeps the
pins on disk (user id → master key: public keys, no secrets; the file is still private).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clubs.core.crosssign import MASTER, device_ed25519, single_ed25519_key, verify_cross_signed
from clubs.core.errors import ClubsError
from clubs.core.secrets import write_private

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceKeys:
    """The two public keys of a device that its owner's self-signing key vouches for."""

    ed25519: str
    curve25519: str


@dataclass(frozen=True)
class UserVerdict:
    """The decision for one user's devices."""

    user_id: str
    master_key: str | None
    """The master key the server lists now (None: the user has no cross-signing)."""
    identity_changed: bool
    """The master key differs from the pinned one: nothing of this user is trusted."""
    trusted: Mapping[str, DeviceKeys] = field(default_factory=dict)
    """Devices cross-signed by the (pinned) master key, by device id."""

    def trusts(self, device_id: str, ed25519: str, curve25519: str) -> bool:
        """Whether this exact device (id and both keys) may receive room keys."""
        keys = self.trusted.get(device_id)
        return keys is not None and keys == DeviceKeys(ed25519, curve25519)


def evaluate_user(query: Mapping[str, Any], user_id: str, pinned_master: str | None) -> UserVerdict:
    """Decide which of `user_id`'s devices in a `/keys/query` answer are cross-signed by the
    master key we trust: the pinned one, or the listed one if nothing is pinned yet (TOFU)."""
    master_obj = _get(query, "master_keys", user_id)
    ssk_obj = _get(query, "self_signing_keys", user_id)
    master = single_ed25519_key(master_obj, user_id, MASTER)
    if master is None:
        return UserVerdict(user_id, None, False)
    if pinned_master is not None and master != pinned_master:
        return UserVerdict(user_id, master, True)
    devices = _get(query, "device_keys", user_id)
    trusted: dict[str, DeviceKeys] = {}
    if isinstance(devices, Mapping):
        for device_id, device in devices.items():
            ids = device_ed25519(device, user_id)
            if ids is None or ids[0] != device_id:
                continue
            if verify_cross_signed(device, master_obj, ssk_obj, user_id):
                trusted[device_id] = DeviceKeys(ids[1], ids[2])
    return UserVerdict(user_id, master, False, trusted)


def _get(query: Mapping[str, Any], section: str, user_id: str) -> Any:
    part = query.get(section)
    return part.get(user_id) if isinstance(part, Mapping) else None


class TrustStoreError(ClubsError):
    """The pinned master keys cannot be read."""


class MasterKeyPins:
    """user id → the master key first seen for that user, in a private JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pins: dict[str, str] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise TrustStoreError(f"{path}: cannot read the pinned master keys: {e}") from None
            if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in data.items()
            ):
                raise TrustStoreError(f"{path}: the pinned master keys are damaged")
            self._pins = data

    def get(self, user_id: str) -> str | None:
        return self._pins.get(user_id)

    def pin(self, user_id: str, master_key: str) -> bool:
        """Pin `master_key` for `user_id` unless something is pinned already. Returns whether it
        pinned."""
        if user_id in self._pins:
            return False
        self._set(user_id, master_key)
        return True

    def replace(self, user_id: str, master_key: str) -> None:
        """Accept a changed identity (an operator's decision, after checking with the person)."""
        if user_id in self._pins:
            log.warning("replacing the pinned master key of %s", user_id)
        self._set(user_id, master_key)

    def _set(self, user_id: str, master_key: str) -> None:
        self._pins[user_id] = master_key
        write_private(self.path, json.dumps(self._pins, sort_keys=True).encode())
