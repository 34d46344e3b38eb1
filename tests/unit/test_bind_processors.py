"""The exchange's one-step binding of UTC datetimes on SQLite stores exactly what
SQLAlchemy's own chain stores (SQLite compares these columns as text)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects import postgresql, sqlite

from sts.db import queries
from sts.db.exchange_store import Prepared
from sts.db.types import UTCDateTime, fast_bind_processor

SQLITE = sqlite.dialect()


def generic(dialect: object) -> object:
    return UTCDateTime().dialect_impl(dialect).bind_processor(dialect)  # type: ignore[arg-type]


def sample_datetimes(count: int) -> list[datetime]:
    rng = random.Random(7)
    values = [
        datetime(2026, 1, 1, tzinfo=UTC),  # zero microseconds: still written with six digits
        datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    for _ in range(count):
        offset = timezone(timedelta(minutes=rng.randrange(-14 * 60, 14 * 60 + 1)))
        stamp = rng.uniform(0, 4_000_000_000)
        values.append(datetime.fromtimestamp(stamp, UTC).astimezone(offset))
    return values


def test_the_fast_processor_writes_what_sqlalchemy_writes() -> None:
    fast = fast_bind_processor(UTCDateTime(), SQLITE)
    slow = generic(SQLITE)
    assert fast is not None and callable(slow)
    for value in [*sample_datetimes(2000), None]:
        assert fast(value) == slow(value), value


def test_a_naive_datetime_is_refused_by_both() -> None:
    fast = fast_bind_processor(UTCDateTime(), SQLITE)
    slow = generic(SQLITE)
    assert fast is not None and callable(slow)
    for processor in (fast, slow):
        with pytest.raises(ValueError, match="naive datetime"):
            processor(datetime(2026, 1, 1))


def test_no_fast_processor_when_the_storage_format_differs() -> None:
    class SlashedUTCDateTime(UTCDateTime):
        impl = sqlite.DATETIME(
            storage_format="%(year)04d/%(month)02d/%(day)02d %(hour)02d:%(minute)02d:"
            "%(second)02d.%(microsecond)06d"
        )

    assert fast_bind_processor(SlashedUTCDateTime(), SQLITE) is None
    assert fast_bind_processor(UTCDateTime(), SQLITE) is not None


def test_no_fast_processor_elsewhere() -> None:
    assert fast_bind_processor(UTCDateTime(), postgresql.dialect()) is None


def test_the_lineage_insert_binds_as_sqlalchemy_does() -> None:
    """The whole statement: the positional values ``Prepared`` hands SQLite equal those
    SQLAlchemy's own compiled statement would bind."""
    dialect = create_engine("sqlite://").dialect
    prepared = Prepared(queries.INSERT_ISSUED_TOKEN, dialect)
    now = datetime.now(UTC)
    values = {
        "jti": "0193abcdef0123456789abcdef012345",
        "parent_jti": None,
        "credential_id": None,
        "subject": "repo:acme/app:environment:prod",
        "subject_issuer": "https://token.actions.githubusercontent.com",
        "subject_token_id": "sha256:" + "a" * 64,
        "actor": None,
        "actor_parent_jti": None,
        "actor_credential_id": None,
        "actor_issuer": None,
        "actor_token_id": None,
        "client_id": "ci-runner",
        "rule_id": 3,
        "rule_version": 1,
        "audience": ["https://deploy.example"],
        "scope": "deploy",
        "kid": "k" * 43,
        "issued_at": now,
        "expires_at": now.astimezone(timezone(timedelta(hours=2))) + timedelta(minutes=5),
        "status_list_id": 1,
        "status_idx": 12345,
        "dpop_jkt": "j" * 43,
    }
    compiled = queries.INSERT_ISSUED_TOKEN.compile(dialect=dialect)
    processors = compiled._bind_processors
    expected = tuple(
        processors[name](values[name]) if name in processors else values[name]
        for name in compiled.positiontup or ()
    )
    assert prepared.params(values) == expected
