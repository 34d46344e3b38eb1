"""The key ring: which key signs, and which keys are published (JWKS).

State lives in the database (``signing_keys``); private keys in a keystore. Each process
keeps a loaded copy and re-reads the database at most every ``refresh_interval`` seconds,
so every replica converges on the key the database says is active.

With a ``schedule``, the refresh also drives rotation: it plans on the rows it has just
read (no extra query) and, only when a step is due, applies it under the rotation lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from sts.clock import Clock
from sts.db import queries
from sts.db.models import SigningKey
from sts.errors import StartupError, TemporarilyUnavailable
from sts.keys.keystore import KeyStore
from sts.keys.lifecycle import create_signing_key, ensure_active_key, key_views, rotate
from sts.keys.material import JoseKey, key_matches_alg, thumbprint, to_jose_key
from sts.keys.rotation import Schedule, plan_rotation

__all__ = ["ActiveKey", "KeyRing", "KeySnapshot", "create_signing_key", "ensure_active_key"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActiveKey:
    kid: str
    alg: str
    key: JoseKey


@dataclass(frozen=True)
class KeySnapshot:
    active: ActiveKey | None
    jwks: dict[str, Any]
    loaded_at: datetime


def rotation_due(rows: Sequence[SigningKey], schedule: Schedule, now: datetime) -> bool:
    """The cheap check: plan on the rows just read; the lock is taken only when due."""
    return bool(plan_rotation(key_views(rows), schedule, now))


class KeyRing:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        keystore: KeyStore,
        clock: Clock,
        refresh_interval: float = 5.0,
        schedule: Schedule | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._keystore = keystore
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._schedule = schedule  # None: this process never rotates by itself
        self._lock = threading.Lock()
        self._private_keys: dict[str, JoseKey] = {}
        self._snapshot: KeySnapshot | None = None
        self._expired = False

    def load(self) -> KeySnapshot:
        """Read key state from the database (running a due rotation step first); load the
        active private key (once per kid)."""
        rows = self._read_keys()
        schedule = self._schedule
        if schedule is not None and rotation_due(rows, schedule, self._clock()):
            rotate(self._session_factory, self._keystore, schedule, self._clock)
            rows = self._read_keys()
        active: ActiveKey | None = None
        keys = []
        for row in rows:
            keys.append(dict(row.public_jwk))
            if row.state == "active":
                active = ActiveKey(row.kid, row.alg, self._private_key(row.kid, row.alg, row))
        self._forget_unpublished({row.kid for row in rows})
        snapshot = KeySnapshot(active=active, jwks={"keys": keys}, loaded_at=self._clock())
        self._snapshot = snapshot
        self._expired = False
        return snapshot

    def _read_keys(self) -> Sequence[SigningKey]:
        with self._session_factory() as session:
            return queries.published_signing_keys(session)

    def _forget_unpublished(self, published: set[str]) -> None:
        # A removed or compromised key's private half should not linger in memory.
        for kid in set(self._private_keys) - published:
            del self._private_keys[kid]

    def _private_key(self, kid: str, alg: str, row: Any) -> JoseKey:
        cached = self._private_keys.get(kid)
        if cached is not None:
            return cached
        private_key = self._keystore.load(kid, row.encrypted_private_key)
        if thumbprint(private_key) != kid or not key_matches_alg(private_key, alg):
            raise StartupError(f"signing key {kid} in the keystore does not match its kid/alg")
        key = to_jose_key(private_key)
        self._private_keys[kid] = key
        return key

    def expire(self) -> None:
        """Re-read the key state on the next use, whatever its age (a key was found
        compromised); the current snapshot still serves if that read fails."""
        self._expired = True

    def snapshot(self) -> KeySnapshot:
        """The current state, refreshed from the database when older than the interval.

        If the refresh fails (database down) the previous snapshot keeps serving JWKS;
        signing is refused by :meth:`signing_key` only when no active key is known.
        """
        now = self._clock()
        current = self._snapshot
        if (
            current is not None
            and not self._expired
            and (now - current.loaded_at).total_seconds() < self._refresh_interval
        ):
            return current
        if not self._lock.acquire(blocking=current is None):
            return current  # type: ignore[return-value]  # another thread is refreshing
        try:
            return self.load()
        except Exception:
            if current is None:
                raise
            log.warning("key ring refresh failed; keeping keys loaded at %s", current.loaded_at)
            return current
        finally:
            self._lock.release()

    def signing_key(self) -> ActiveKey:
        active = self.snapshot().active
        if active is None:
            raise TemporarilyUnavailable(
                "No signing key is available.", reason="keys.no_active_key"
            )
        return active

    def jwks(self) -> dict[str, Any]:
        return self.snapshot().jwks
