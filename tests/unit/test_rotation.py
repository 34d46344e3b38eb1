"""plan_rotation: the schedule as a table. Times are minutes after T0."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sts.keys.rotation import (
    ActivateKey,
    KeyView,
    PublishKey,
    RemoveKey,
    Schedule,
    Step,
    next_due,
    plan_rotation,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# active 60 min, lead 10 min, retention 20 min, replicas 1 min late at most.
SCHEDULE = Schedule(
    alg="ES256",
    active_period=timedelta(minutes=60),
    lead_time=timedelta(minutes=10),
    retention=timedelta(minutes=20),
    replica_lag=timedelta(minutes=1),
)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def active(kid: str, since: float, alg: str = "ES256") -> KeyView:
    return KeyView(kid, alg, "active", at(since - 30), at(since))


def pending(kid: str, created: float, alg: str = "ES256") -> KeyView:
    return KeyView(kid, alg, "pending", at(created))


def retired(kid: str, retired_at: float) -> KeyView:
    created, activated = at(retired_at - 90), at(retired_at - 60)
    return KeyView(kid, "ES256", "retired", created, activated, at(retired_at))


CASES: list[tuple[str, list[KeyView], float, list[Step]]] = [
    ("fresh active key: nothing due", [active("A", 0)], 10, []),
    ("not yet time to publish", [active("A", 0)], 48.9, []),
    # publish at period - lead - lag = 49 min, so the successor is ready at 60
    ("publish the successor", [active("A", 0)], 49, [PublishKey("ES256")]),
    ("pending exists: no second one", [active("A", 0), pending("B", 49)], 55, []),
    ("pending not ready although period over", [active("A", 0), pending("B", 55)], 60, []),
    (
        "pending ready and period over: switch",
        [active("A", 0), pending("B", 49)],
        60,
        [ActivateKey("B", retires="A")],
    ),
    ("ready pending waits for the period", [active("A", 0), pending("B", 20)], 59, []),
    (
        "late run: switch, and nothing more",
        [active("A", 0), pending("B", 49)],
        75,
        [ActivateKey("B", retires="A")],
    ),
    (
        "oldest ready pending wins",
        [active("A", 0), pending("C", 40), pending("B", 30)],
        60,
        [ActivateKey("B", retires="A")],
    ),
    ("retired key kept for retention + lag", [active("A", 0), retired("R", 0)], 20.9, []),
    ("retired key removed", [active("A", 0), retired("R", 0)], 21, [RemoveKey("R")]),
    (
        "everything at once",
        [active("A", 0), pending("B", 40), retired("R", 0)],
        61,
        [RemoveKey("R"), ActivateKey("B", retires="A")],
    ),
    ("no key at all: publish", [], 0, [PublishKey("ES256")]),
    ("no active key, pending not ready", [pending("B", 0)], 5, []),
    ("no active key, pending ready", [pending("B", 0)], 11, [ActivateKey("B", retires=None)]),
    (
        "algorithm changed: publish one of the new algorithm",
        [active("A", 0, alg="RS256")],
        1,
        [PublishKey("ES256")],
    ),
    (
        "algorithm changed: switch when ready, before the period ends",
        [active("A", 0, alg="RS256"), pending("B", 1)],
        12,
        [ActivateKey("B", retires="A")],
    ),
]


@pytest.mark.parametrize(
    ("keys", "minute", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_plan_rotation(keys: list[KeyView], minute: float, expected: list[Step]) -> None:
    assert plan_rotation(keys, SCHEDULE, at(minute)) == expected


def test_applying_the_plan_leaves_nothing_due() -> None:
    """Idempotence: after the steps, the same moment plans nothing."""
    keys = [active("A", 0), pending("B", 49)]
    assert plan_rotation(keys, SCHEDULE, at(60)) == [ActivateKey("B", retires="A")]
    after = [
        KeyView("A", "ES256", "retired", at(-30), at(0), at(60)),
        KeyView("B", "ES256", "active", at(49), at(60)),
    ]
    assert plan_rotation(after, SCHEDULE, at(60)) == []


def test_next_due_names_the_next_moment() -> None:
    keys = [active("A", 0), retired("R", 0)]
    assert next_due(keys, SCHEDULE, at(5)) == at(21)
    assert next_due(keys[:1], SCHEDULE, at(5)) == at(49)
