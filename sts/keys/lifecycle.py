"""Key lifecycle changes, applied under one exclusive lock: first key, scheduled rotation,
manual retirement, compromise, and re-encryption at rest (rewrap).

Every change takes the governance lock (``begin_exclusive``) and re-reads the keys
inside it, so when several replicas decide at once that a step is due, the first applies
it and the others find nothing left to do (compare dex ``server/signer/rotation.go``).
Private key material of removed or compromised keys is destroyed after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from sts.clock import Clock
from sts.db import queries
from sts.db.locks import GOVERNANCE_LOCK, begin_exclusive
from sts.db.models import SigningKey
from sts.errors import ConfigurationError, StartupError
from sts.keys.keystore import (
    DatabaseKeyStore,
    FileKeyStore,
    KeyStore,
    file_keystore,
    resolve_key_passphrase,
)
from sts.keys.material import (
    PrivateKey,
    generate_private_key,
    key_matches_alg,
    public_jwk,
    thumbprint,
)
from sts.keys.rotation import (
    ActivateKey,
    KeyView,
    PublishKey,
    RemoveKey,
    Schedule,
    Step,
    plan_rotation,
    ready_to_sign,
)
from sts.settings import Settings, decode_key_encryption_key

log = logging.getLogger(__name__)

LOCK_NAME = GOVERNANCE_LOCK
MIN_PASSPHRASE_LENGTH = 12


class KeyLifecycleError(StartupError):
    """A key command cannot do what was asked. The message says what to do instead."""


@dataclass(frozen=True)
class Compromise:
    kid: str
    new_kid: str | None  # the emergency signing key, when the compromised key was signing
    tokens_revoked: int


@dataclass(frozen=True)
class Rewrap:
    rewrapped: list[str]
    already_done: list[str]


def create_signing_key(
    session: Session,
    keystore: KeyStore,
    alg: str,
    state: str,
    now: datetime,
    private_key: PrivateKey | None = None,
) -> str:
    """Generate a key (or take ``private_key``), put its private half in the keystore and
    its metadata in the DB. Refuses a kid that already exists: one kid, one key."""
    private_key = private_key or generate_private_key(alg)
    if not key_matches_alg(private_key, alg):
        raise KeyLifecycleError(f"the key does not fit algorithm {alg}")
    kid = thumbprint(private_key)
    if queries.signing_key(session, kid) is not None:
        raise KeyLifecycleError(f"duplicate kid {kid}: a signing key with this kid exists")
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
    once: the check and the insert run under one exclusive lock. Nobody can hold a cached
    JWKS of an installation that never served one, so the lead time does not apply."""
    with session_factory() as session:
        if queries.active_signing_key(session) is not None:
            return
    with session_factory() as session:
        begin_exclusive(session, LOCK_NAME)
        if queries.active_signing_key(session) is None:
            kid = create_signing_key(session, keystore, alg, "active", clock())
            log.info("generated the first signing key kid=%s alg=%s", kid, alg)
        session.commit()


def key_views(rows: Iterable[SigningKey]) -> list[KeyView]:
    return [
        KeyView(row.kid, row.alg, row.state, row.created_at, row.activated_at, row.retired_at)
        for row in rows
    ]


def rotate(
    session_factory: sessionmaker[Session], keystore: KeyStore, schedule: Schedule, clock: Clock
) -> list[str]:
    """Apply every step of the schedule due now; return what was done (empty: nothing due).

    The plan is made again inside the lock: another replica may have rotated first.
    """
    with session_factory() as session:
        begin_exclusive(session, LOCK_NAME)
        now = clock()
        rows = {row.kid: row for row in queries.published_signing_keys(session)}
        steps = plan_rotation(key_views(rows.values()), schedule, now)
        done = [apply_step(session, keystore, rows, step, now) for step in steps]
        session.commit()
    destroy_material(keystore, [step.kid for step in steps if isinstance(step, RemoveKey)])
    for line in done:
        log.info("key rotation: %s", line)
    return done


def apply_step(
    session: Session, keystore: KeyStore, rows: dict[str, SigningKey], step: Step, now: datetime
) -> str:
    if isinstance(step, PublishKey):
        kid = create_signing_key(session, keystore, step.alg, "pending", now)
        return f"published {kid} ({step.alg}) as pending"
    if isinstance(step, ActivateKey):
        activate(rows[step.kid], rows[step.retires] if step.retires else None, now)
        retired = f"; retired {step.retires}" if step.retires else ""
        return f"activated {step.kid}{retired}"
    remove(rows[step.kid], now)
    return f"removed {step.kid}"


def activate(successor: SigningKey, predecessor: SigningKey | None, now: datetime) -> None:
    successor.state = "active"
    successor.activated_at = now
    if predecessor is not None:
        predecessor.state = "retired"
        predecessor.retired_at = now


def remove(row: SigningKey, now: datetime) -> None:
    row.state = "removed"
    row.removed_at = now
    row.encrypted_private_key = None  # nothing left to sign with


def destroy_material(keystore: KeyStore, kids: Sequence[str]) -> None:
    """After the commit: a failed transaction must not lose a key that is still in use."""
    for kid in kids:
        keystore.destroy(kid)


def retire(
    session_factory: sessionmaker[Session],
    keystore: KeyStore,
    schedule: Schedule,
    kid: str,
    clock: Clock,
) -> str:
    """Stop ``kid`` from signing ahead of schedule; it stays published for the retention.

    The active key hands over only to a pending key published for the lead time (else a
    verifier could meet an unknown kid); without one, a pending key is published now and
    the operator is told when to come back. A leaked key is `compromised`, not retired.
    """
    with session_factory() as session:
        begin_exclusive(session, LOCK_NAME)
        now = clock()
        row = queries.signing_key(session, kid)
        if row is None:
            raise KeyLifecycleError(f"no signing key {kid}")
        if row.state == "pending":
            row.state = "retired"
            row.retired_at = now
            session.commit()
            return f"retired pending key {kid}"
        if row.state != "active":
            raise KeyLifecycleError(
                f"signing key {kid} is {row.state}; only pending or active keys can be retired"
            )
        rows = {r.kid: r for r in queries.published_signing_keys(session)}
        views = key_views(rows.values())
        pending = sorted((v for v in views if v.state == "pending"), key=lambda v: v.created_at)
        ready = [v for v in pending if ready_to_sign(v, schedule, now)]
        if ready:
            activate(rows[ready[0].kid], row, now)
            session.commit()
            return f"retired {kid}; {ready[0].kid} signs from now on"
        if pending:
            successor = pending[0].kid
            ready_at = pending[0].created_at + schedule.lead_time + schedule.replica_lag
        else:
            successor = create_signing_key(session, keystore, schedule.alg, "pending", now)
            ready_at = now + schedule.lead_time + schedule.replica_lag
        session.commit()
    raise KeyLifecycleError(
        f"cannot retire the active key {kid} yet: its successor {successor} is published "
        f"but not for STS_KEY_PUBLISH_LEAD_TIME; run this again after "
        f"{ready_at:%Y-%m-%dT%H:%M:%SZ} (or `sts keys compromised {kid}` if it leaked)"
    )


def compromise(
    session_factory: sessionmaker[Session], keystore: KeyStore, alg: str, kid: str, clock: Clock
) -> Compromise:
    """Emergency response to a leaked key, in one transaction:

    - the key leaves the JWKS at once (state ``compromised``; replicas follow within the
      refresh interval) and its private half is destroyed;
    - if it was signing, a fresh key is activated immediately, skipping the lead time:
      verifiers with a cached JWKS re-fetch it on the unknown kid;
    - every token it signed is revoked (``issued_tokens.revoked_at``), with every live
      token derived from them, plus one ``revocations`` row of kind ``key`` that covers
      tokens not recorded there (and refuses, in the exchange, a presented token it
      signed, until the process's key ring no longer verifies it);
    - one audit record (``key_compromised``, decision ``info``).
    """
    with session_factory() as session:
        begin_exclusive(session, LOCK_NAME)
        now = clock()
        row = queries.signing_key(session, kid)
        if row is None:
            raise KeyLifecycleError(f"no signing key {kid}")
        if row.state == "compromised":
            raise KeyLifecycleError(f"signing key {kid} is already marked compromised")
        previous_state = row.state
        row.state = "compromised"
        row.compromised_at = now
        row.encrypted_private_key = None
        new_kid = None
        if queries.active_signing_key(session) is None:
            new_kid = create_signing_key(session, keystore, alg, "active", now)
        revoked = queries.revoke_tokens_signed_by(session, kid, now)
        # And every live token derived from them, whatever key signed it: revoking a token
        # revokes its lineage (sts.revocation), and the exchange checks only the presented
        # token's own row. The governance lock is held exclusively: one UPDATE.
        revoked += queries.revoke_lineage(session, queries.tokens_named("key", kid), now)
        queries.add_revocation(
            session, kind="key", value=kid, reason="signing key compromised", now=now
        )
        queries.add_audit_record(
            session,
            event="key_compromised",
            decision="info",
            reason="key.compromised",
            detail=(
                f"kid={kid} previous_state={previous_state} new_kid={new_kid or '-'} "
                f"tokens_revoked={revoked}"
            ),
            now=now,
        )
        session.commit()
    destroy_material(keystore, [kid])
    log.warning(
        "signing key %s marked compromised; new signing key %s; %d tokens revoked",
        kid,
        new_kid or "unchanged",
        revoked,
    )
    return Compromise(kid, new_kid, revoked)


def make_target_keystore(settings: Settings, target: str, new_secret: str) -> KeyStore:
    """The keystore ``rewrap`` writes to, under the new secret (checked like a setting)."""
    if target == "database":
        try:
            kek = decode_key_encryption_key(new_secret)
        except ValueError as exc:
            raise ConfigurationError("STS_NEW_KEY_ENCRYPTION_KEY", str(exc)) from None
        return DatabaseKeyStore(kek)
    if len(new_secret) < MIN_PASSPHRASE_LENGTH:
        raise ConfigurationError(
            "STS_NEW_KEY_PASSPHRASE", f"must be at least {MIN_PASSPHRASE_LENGTH} characters long"
        )
    return file_keystore(settings, new_secret)


def rewrap(
    settings: Settings, session_factory: sessionmaker[Session], target: str, new_secret: str
) -> Rewrap:
    """Re-encrypt every kept private key under ``new_secret`` in the ``target`` keystore
    (``file`` or ``database``), reading each from where it rests now with the current
    secrets. Resumable: keys the new secret already opens are left alone, so running it
    again after an interruption, or after a replica rotated meanwhile, finishes the job.
    Key files in the old format (PKCS#8, PBKDF2) are rewritten even when the new secret
    opens them: with the current passphrase as the new one, this converts them."""
    new_store = make_target_keystore(settings, target, new_secret)
    rewrapped: list[str] = []
    already_done: list[str] = []
    moved_from_files: list[str] = []
    with session_factory() as session:
        begin_exclusive(session, LOCK_NAME)  # no rotation creates a key halfway through
        for row in queries.published_signing_keys(session):
            if opens_at_target(row, new_store, target):
                already_done.append(row.kid)
                continue
            private_key = load_current(settings, row)
            blob = new_store.store(row.kid, private_key, overwrite=True)
            if row.encrypted_private_key is None and target == "database":
                moved_from_files.append(row.kid)
            row.encrypted_private_key = blob
            rewrapped.append(row.kid)
        session.commit()
    if moved_from_files:
        destroy_material(FileKeyStore(settings.keys_dir, ""), moved_from_files)
    return Rewrap(rewrapped, already_done)


def opens_at_target(row: SigningKey, store: KeyStore, target: str) -> bool:
    in_database = row.encrypted_private_key is not None
    if in_database != (target == "database"):
        return False
    if isinstance(store, FileKeyStore) and (
        not store.holds(row.kid) or store.in_legacy_format(row.kid)
    ):
        return False
    try:
        store.load(row.kid, row.encrypted_private_key)
    except StartupError:
        return False
    return True


def load_current(settings: Settings, row: SigningKey) -> PrivateKey:
    """The private key from where it rests now, with the secrets configured now."""
    if row.encrypted_private_key is not None:
        kek = settings.key_encryption_key_bytes
        if kek is None:
            raise ConfigurationError(
                "STS_KEY_ENCRYPTION_KEY",
                f"is needed to read signing key {row.kid}, which is in the database keystore",
            )
        return DatabaseKeyStore(kek).load(row.kid, row.encrypted_private_key)
    return file_keystore(settings, resolve_key_passphrase(settings)).load(row.kid, None)
