"""The key ring: which key signs, and which keys are published (JWKS).

State lives in the database (``signing_keys``); private keys in a keystore. Each process
keeps a loaded copy and re-reads the database at most every ``refresh_interval`` seconds,
so every replica converges on the key the database says is active.

With a ``schedule``, the refresh also drives rotation: it plans on the rows it has just
read (no extra query) and, only when a step is due, applies it under the rotation lock.

Fail closed: only a database outage keeps the previous snapshot (the database is the
source of truth and cannot be asked). When the database answers, the snapshot is what it
says, whatever else fails: an active key whose private half cannot be loaded leaves the
snapshot with no signing key (exchanges and readiness get 503) while the JWKS still lists
every published key; a failed rotation step leaves the keys as they are in the database.
Each problem is logged once when it starts (and once when it is over), never with secrets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
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
    active: ActiveKey | None  # None: nothing may sign (no active key, or it cannot be loaded)
    jwks: dict[str, Any]
    loaded_at: datetime


def describe(exc: BaseException) -> str:
    """A loggable cause: operator messages (StartupError: kids and paths) and OS errors
    (a path) in full; anything else by type only, since its text may quote a statement's
    parameters (an encrypted key blob) or key material."""
    if isinstance(exc, StartupError | OSError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


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
        self._problems: dict[str, str] = {}  # topic -> the problem last logged

    def load(self) -> KeySnapshot:
        """Read key state from the database (running a due rotation step first); load the
        active private key (once per kid). At start-up: any failure stops the start."""
        return self._load(strict=True)

    def _load(self, *, strict: bool) -> KeySnapshot:
        """``strict=False`` (the periodic refresh): a failed rotation step or an active key
        that cannot be loaded does not raise; the snapshot follows the database anyway.
        A database error always raises (the caller decides what to keep)."""
        rows = self._read_keys()
        schedule = self._schedule
        rotation_problem = None
        if schedule is not None and rotation_due(rows, schedule, self._clock()):
            try:
                rotate(self._session_factory, self._keystore, schedule, self._clock)
            except Exception as exc:
                if strict:
                    raise
                rotation_problem = f"key rotation step failed ({describe(exc)}); retrying"
            rows = self._read_keys()  # also after a failure: it may have committed
        self._report("rotation", rotation_problem)
        active: ActiveKey | None = None
        keys = []
        for row in rows:
            keys.append(dict(row.public_jwk))
            if row.state == "active":
                active = self._active_key(row, strict=strict)
        self._forget_unpublished({row.kid for row in rows})
        snapshot = KeySnapshot(active=active, jwks={"keys": keys}, loaded_at=self._clock())
        self._snapshot = snapshot
        self._expired = False
        return snapshot

    def _active_key(self, row: SigningKey, *, strict: bool) -> ActiveKey | None:
        """The active row's key, or None (fail closed) when its private half cannot be
        loaded: a wrong or another replica's passphrase or KEK, a damaged or missing file."""
        try:
            key = self._private_key(row.kid, row.alg, row)
        except Exception as exc:
            if strict:
                raise
            self._report(
                "active_key",
                f"signing key {row.kid}, active in the database, cannot be loaded "
                f"({describe(exc)}); exchanges are refused (503) until it loads, "
                f"retried every {self._refresh_interval:g}s",
            )
            return None
        self._report("active_key", None)
        return ActiveKey(row.kid, row.alg, key)

    def _report(self, topic: str, problem: str | None) -> None:
        """Log a problem when it starts or changes, and when it is over; not on each
        refresh (a refresh runs at most every interval, but on any request)."""
        previous = self._problems.get(topic)
        if problem == previous:
            return
        if problem is None:
            del self._problems[topic]
            log.info("key ring: resolved: %s", previous)
        else:
            self._problems[topic] = problem
            log.warning("key ring: %s", problem)

    def _read_keys(self) -> Sequence[SigningKey]:
        with self._session_factory() as session:
            return queries.published_signing_keys(session)

    def _forget_unpublished(self, published: set[str]) -> None:
        # A removed or compromised key's private half should not linger in memory.
        for kid in set(self._private_keys) - published:
            del self._private_keys[kid]

    def _private_key(self, kid: str, alg: str, row: SigningKey) -> JoseKey:
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
        compromised); the current snapshot still serves if the database cannot be read."""
        self._expired = True

    def snapshot(self) -> KeySnapshot:
        """The current state, refreshed from the database when older than the interval.

        Only a database error keeps the previous snapshot (the database is down: the last
        known keys serve until it answers again). Otherwise the snapshot is what the
        database says; its ``active`` is None when the active key cannot be loaded, and
        :meth:`signing_key` refuses.
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
            snapshot = self._load(strict=False)
        except SQLAlchemyError as exc:
            if current is None:
                raise
            self._report(
                "database",
                f"key refresh failed: database unavailable ({type(exc).__name__}); "
                f"keeping the keys loaded at {current.loaded_at:%Y-%m-%dT%H:%M:%SZ}",
            )
            return current
        else:
            self._report("database", None)
            return snapshot
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
