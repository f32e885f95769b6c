"""Virtual keys: which team a request belongs to.

Keys are held only as SHA-256 hashes; the plain key is never stored, logged or traced. A key is
identified in traces and logs by its key id, a short prefix of the hash.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass

from proxy.config import Settings
from proxy.errors import AuthenticationFailed, ConfigError


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    team: str
    default_policy: str | None = None
    default_task: str | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Authenticates `Authorization: Bearer <key>` headers against the configured keys."""

    def __init__(self) -> None:
        self._by_hash: dict[str, KeyInfo] = {}
        self._admin_hashes: set[str] = set()

    def add_admin(self, key: str) -> None:
        self._admin_hashes.add(hash_key(key))

    def authenticate_admin(self, authorization: str | None) -> None:
        """The admin API needs the admin key (`admin_key_env`); in embedded mode the dev key too."""
        if not self._admin_hashes:
            raise AuthenticationFailed("The admin API is disabled: set the admin key's environment variable "
                                       "(admin_key_env, default PARETO_ADMIN_KEY) and restart.")
        _, _, key = (authorization or "").partition(" ")
        if hash_key(key.strip()) not in self._admin_hashes:
            raise AuthenticationFailed("This endpoint needs the admin key: 'Authorization: Bearer <admin key>'.")

    def add(self, key: str, team: str, default_policy: str | None = None, default_task: str | None = None) -> KeyInfo:
        h = hash_key(key)
        info = KeyInfo(key_id=f"k_{h[:12]}", team=team, default_policy=default_policy, default_task=default_task)
        self._by_hash[h] = info
        return info

    def __len__(self) -> int:
        return len(self._by_hash)

    def authenticate(self, authorization: str | None) -> KeyInfo:
        if not authorization:
            raise AuthenticationFailed(
                "Missing API key: send 'Authorization: Bearer <virtual key>' (the openai client's api_key)."
            )
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationFailed("Malformed Authorization header: expected 'Bearer <virtual key>'.")
        info = self._by_hash.get(hash_key(key.strip()))
        if info is None:
            raise AuthenticationFailed("Invalid API key: it is not a key of this proxy.")
        return info

    @classmethod
    def from_settings(cls, settings: Settings) -> tuple["KeyStore", str | None]:
        """The static keys of the config; in embedded mode also a development key (returned)."""
        store = cls()
        for i, k in enumerate(settings.keys):
            value = os.environ.get(k.key_env)
            if not value:
                raise ConfigError(f"keys.{i}.key_env: environment variable {k.key_env} is not set (it must hold the key)")
            store.add(value, k.team, k.default_policy, k.default_task)
        admin = os.environ.get(settings.admin_key_env)
        if admin:
            store.add_admin(admin)
        dev_key = None
        if settings.embedded:
            dev_key = os.environ.get("PARETO_DEV_KEY") or f"sk-pareto-dev-{secrets.token_urlsafe(18)}"
            store.add(dev_key, "dev")
            store.add_admin(dev_key)
        return store, dev_key
