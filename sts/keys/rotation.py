"""Rotation planning: a pure function from key states and the time to the steps now due.

A key moves ``pending`` (published in the JWKS, not signing) → ``active`` (the only
signing key) → ``retired`` (published, verifies only) → ``removed``. The planner never
touches the database, the clock or the keystore, so the schedule is tested as a table;
``sts.keys.lifecycle`` applies the steps under the rotation lock.

Replicas see a new state up to ``replica_lag`` (the key ring refresh interval) late, so
the planner waits that much longer before activating and before removing:

- a pending key activates once every replica has published it for the lead time
  (``created_at + lead_time + replica_lag``), so every JWKS served during the lead time
  before its first token lists it (RFC 7517 key sets are cached for ``max-age`` ≤ lead);
- a retired key is removed ``retention + replica_lag`` after retirement, since a replica
  that has not yet noticed the retirement may still sign with it for ``replica_lag``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sts.settings import Settings


@dataclass(frozen=True)
class KeyView:
    """What the planner needs to know about one key."""

    kid: str
    alg: str
    state: str  # pending | active | retired (other states are not planned)
    created_at: datetime
    activated_at: datetime | None = None
    retired_at: datetime | None = None


@dataclass(frozen=True)
class Schedule:
    alg: str  # algorithm of the keys the planner publishes
    active_period: timedelta
    lead_time: timedelta
    retention: timedelta
    replica_lag: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Schedule:
        return cls(
            alg=settings.signing_alg,
            active_period=timedelta(seconds=settings.key_active_period),
            lead_time=timedelta(seconds=settings.key_publish_lead_time),
            retention=timedelta(seconds=settings.key_retention),
            replica_lag=timedelta(seconds=settings.key_refresh_interval),
        )


@dataclass(frozen=True)
class PublishKey:
    """Generate a key and publish it as ``pending``."""

    alg: str


@dataclass(frozen=True)
class ActivateKey:
    """Make a pending key the signing key; the previously active key (if any) retires."""

    kid: str
    retires: str | None


@dataclass(frozen=True)
class RemoveKey:
    """Take a retired key out of the JWKS and destroy its private half."""

    kid: str


Step = PublishKey | ActivateKey | RemoveKey


def plan_rotation(keys: Iterable[KeyView], schedule: Schedule, now: datetime) -> list[Step]:
    """Every step due at ``now``, in the order they are to be applied. Empty: nothing due.

    Applying the returned steps and planning again at the same ``now`` returns ``[]``.
    """
    keys = list(keys)
    steps: list[Step] = [RemoveKey(key.kid) for key in keys if removal_due(key, schedule, now)]
    active = current_active(keys)
    pending = sorted(
        (key for key in keys if key.state == "pending"), key=lambda k: (k.created_at, k.kid)
    )
    ready = [key for key in pending if ready_to_sign(key, schedule, now)]
    if ready and (active is None or replacement_due(active, schedule, now)):
        successor = ready[0]
        steps.append(ActivateKey(successor.kid, active.kid if active else None))
        pending.remove(successor)
        active = KeyView(successor.kid, successor.alg, "active", successor.created_at, now)
    if not pending and (active is None or publication_due(active, schedule, now)):
        steps.append(PublishKey(schedule.alg))
    return steps


def current_active(keys: Sequence[KeyView]) -> KeyView | None:
    """The newest active key (there is one; should a bug leave two, the newest wins)."""
    active = [key for key in keys if key.state == "active"]
    return max(active, key=lambda k: (k.activated_at or k.created_at, k.kid), default=None)


def ready_to_sign(key: KeyView, schedule: Schedule, now: datetime) -> bool:
    return key.created_at + schedule.lead_time + schedule.replica_lag <= now


def replacement_due(active: KeyView, schedule: Schedule, now: datetime) -> bool:
    """The active period is over, or the configured algorithm changed."""
    started = active.activated_at or active.created_at
    return started + schedule.active_period <= now or active.alg != schedule.alg


def publication_due(active: KeyView, schedule: Schedule, now: datetime) -> bool:
    """Publish the successor early enough that it is ready when the period ends."""
    started = active.activated_at or active.created_at
    publish_at = started + schedule.active_period - schedule.lead_time - schedule.replica_lag
    return publish_at <= now or active.alg != schedule.alg


def removal_due(key: KeyView, schedule: Schedule, now: datetime) -> bool:
    if key.state != "retired" or key.retired_at is None:
        return False
    return key.retired_at + schedule.retention + schedule.replica_lag <= now


def next_due(keys: Iterable[KeyView], schedule: Schedule, now: datetime) -> datetime | None:
    """The next moment after ``now`` at which a step may fall due (for cron operators)."""
    keys = list(keys)
    moments: list[datetime] = []
    for key in keys:
        if key.state == "retired" and key.retired_at is not None:
            moments.append(key.retired_at + schedule.retention + schedule.replica_lag)
        if key.state == "pending":
            moments.append(key.created_at + schedule.lead_time + schedule.replica_lag)
    active = current_active(keys)
    if active is not None:
        started = active.activated_at or active.created_at
        moments.append(started + schedule.active_period)
        moments.append(started + schedule.active_period - schedule.lead_time - schedule.replica_lag)
    return min((moment for moment in moments if moment > now), default=None)
