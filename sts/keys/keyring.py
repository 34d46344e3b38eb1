"""The key ring: which key signs, and which keys are published (JWKS).

State lives in the database (``signing_keys``); private keys in a keystore. Each process
keeps a loaded copy and re-reads the database at most every ``refresh_interval`` seconds,
so every replica converges on the key the database says is active.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from sts.clock import Clock
from sts.db import queries
from sts.db.locks import begin_exclusive
from sts.errors import StartupError, TemporarilyUnavailable
from sts.keys.keystore import KeyStore
from sts.keys.material import (
    JoseKey,
    generate_private_key,
    key_matches_alg,
    public_jwk,
    thumbprint,
    to_jose_key,
)

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


def create_signing_key(
    session: Session, keystore: KeyStore, alg: str, state: str, now: datetime
) -> str:
    """Generate a key, put its private half in the keystore and its metadata in the DB."""
    private_key = generate_private_key(alg)
    kid = thumbprint(private_key)
    blob = keystore.store(kid, private_key)
    queries.add_signing_key(
        session,
        kid=kid,
        alg=alg,
        state=state,
        public_jwk=public_jwk(private_key, alg),
        encrypted_private_key=blob,
        now=now,
    )
    return kid


def ensure_active_key(
    session_factory: sessionmaker[Session], keystore: KeyStore, alg: str, clock: Clock
) -> None:
    """On first start (no active key), generate one. Safe when several processes start at
    once: the check and the insert run under one exclusive lock."""
    with session_factory() as session:
        if queries.active_signing_key(session) is not None:
            return
    with session_factory() as session:
        begin_exclusive(session, "signing-keys")
        if queries.active_signing_key(session) is None:
            kid = create_signing_key(session, keystore, alg, "active", clock())
            log.info("generated the first signing key kid=%s alg=%s", kid, alg)
        session.commit()


class KeyRing:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        keystore: KeyStore,
        clock: Clock,
        refresh_interval: float = 5.0,
    ) -> None:
        self._session_factory = session_factory
        self._keystore = keystore
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._lock = threading.Lock()
        self._private_keys: dict[str, JoseKey] = {}
        self._snapshot: KeySnapshot | None = None

    def load(self) -> KeySnapshot:
        """Read key state from the database; load the active private key (once per kid)."""
        with self._session_factory() as session:
            rows = queries.published_signing_keys(session)
        active: ActiveKey | None = None
        keys = []
        for row in rows:
            keys.append(dict(row.public_jwk))
            if row.state == "active":
                active = ActiveKey(row.kid, row.alg, self._private_key(row.kid, row.alg, row))
        snapshot = KeySnapshot(active=active, jwks={"keys": keys}, loaded_at=self._clock())
        self._snapshot = snapshot
        return snapshot

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

    def snapshot(self) -> KeySnapshot:
        """The current state, refreshed from the database when older than the interval.

        If the refresh fails (database down) the previous snapshot keeps serving JWKS;
        signing is refused by :meth:`signing_key` only when no active key is known.
        """
        now = self._clock()
        current = self._snapshot
        if current is not None and (now - current.loaded_at).total_seconds() < (
            self._refresh_interval
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
