"""Virtual keys: which team a request belongs to, its defaults and its rate limits.

Keys are held only as SHA-256 hashes; the plain key is never stored, logged or traced. A key is
identified in traces and logs by its key id, a short prefix of the hash.

Two sources: static keys from the config (their values live in environment variables) and
ledger-backed keys made by `pareto-proxy keys create` or `POST /admin/keys`. The ledger-backed
ones are cached in memory and refreshed whenever the ledger's key version changes (`refresh`,
polled by the app twice a second), so authentication stays a dict lookup while a revocation
reaches every worker and replica within a second.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from proxy.config import Settings
from proxy.errors import AuthenticationFailed, ConfigError

#: what a generated key starts with (so secret scanners and people recognise it)
KEY_PREFIX = "sk-pareto-"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    team: str
    default_policy: str | None = None
    default_task: str | None = None
    rpm: int | None = None
    tpm: int | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key_hash: str) -> str:
    return f"k_{key_hash[:12]}"


def new_key() -> tuple[str, str]:
    """A fresh random key and its hash."""
    key = KEY_PREFIX + secrets.token_urlsafe(24)
    return key, hash_key(key)


class KeyStore:
    """Authenticates `Authorization: Bearer <key>` headers against the static and ledger keys."""

    def __init__(self) -> None:
        self._static: dict[str, KeyInfo] = {}
        self._ledger: dict[str, KeyInfo] = {}
        self._admin_hashes: set[str] = set()
        #: the ledger key version the cache reflects (-1: never loaded)
        self.version = -1

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

    def add(self, key: str, team: str, default_policy: str | None = None, default_task: str | None = None,
            rpm: int | None = None, tpm: int | None = None) -> KeyInfo:
        """A static key (from the config, or the embedded dev key)."""
        h = hash_key(key)
        info = KeyInfo(key_id_of(h), team, default_policy, default_task, rpm, tpm)
        self._static[h] = info
        return info

    def refresh(self, records: Iterable, version: int) -> None:
        """Replace the ledger-backed keys with `records` (`KeyRecord`s; revoked ones are dropped)."""
        self._ledger = {r.key_hash: KeyInfo(r.key_id, r.team, r.default_policy, r.default_task, r.rpm, r.tpm)
                        for r in records if not r.revoked}
        self.version = version

    def static_ids(self) -> set[str]:
        return {info.key_id for info in self._static.values()}

    def __len__(self) -> int:
        return len(self._static) + len(self._ledger)

    def authenticate(self, authorization: str | None) -> KeyInfo:
        if not authorization:
            raise AuthenticationFailed(
                "Missing API key: send 'Authorization: Bearer <virtual key>' (the openai client's api_key)."
            )
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationFailed("Malformed Authorization header: expected 'Bearer <virtual key>'.")
        h = hash_key(key.strip())
        info = self._static.get(h) or self._ledger.get(h)
        if info is None:
            raise AuthenticationFailed("Invalid API key: it is not a key of this proxy, or it was revoked.")
        return info

    @classmethod
    def from_settings(cls, settings: Settings) -> tuple["KeyStore", str | None]:
        """The static keys of the config; in embedded mode also a development key (returned).

        Outside embedded mode an admin key is required: without one nobody could manage keys or
        budgets over the API, and a deployment that forgot it should fail loudly at start."""
        store = cls()
        for i, k in enumerate(settings.keys):
            value = os.environ.get(k.key_env)
            if not value:
                raise ConfigError(f"keys.{i}.key_env: environment variable {k.key_env} is not set (it must hold the key)")
            store.add(value, k.team, k.default_policy, k.default_task, k.rpm, k.tpm)
        admin = os.environ.get(settings.admin_key_env)
        if admin:
            store.add_admin(admin)
        elif not settings.embedded:
            raise ConfigError(f"admin_key_env: environment variable {settings.admin_key_env} is not set. Outside "
                              f"embedded mode the proxy needs an admin key for /admin/*: export "
                              f"{settings.admin_key_env}=<a long random secret> (or name another variable "
                              f"with admin_key_env).")
        dev_key = None
        if settings.embedded:
            dev_key = os.environ.get("PARETO_DEV_KEY") or f"sk-pareto-dev-{secrets.token_urlsafe(18)}"
            store.add(dev_key, "dev")
            store.add_admin(dev_key)
        return store, dev_key
