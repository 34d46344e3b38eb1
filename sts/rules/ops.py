"""Operations that rules revisions call: ``ops.put_rule("name", {...})``, ``ops.delete_rule``.

Rules revisions live for years in a deployment's repository, so they must not depend on
the application's models (which change with the schema): the tables are described here
with Core ``sa.table()``, listing only the columns these operations touch. Each function
works on ``alembic.op.get_bind()`` unless given a connection (the CLI reads state with the
same definitions, so a plan compares exactly what a revision writes).

Like :mod:`sts.db.admin`, every change bumps ``rules_state.generation`` (running services
reload within ``STS_RULES_REFRESH_INTERVAL``) and every rule write takes a NEW version from
``rules_state.last_version``: a downgrade re-puts the old definition under a higher version
number, so a version is never reused and a token's ``sts_rule_version`` is unambiguous.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from sts.db.types import UTCDateTime
from sts.policy.rules import compile_rule

_JSON = sa.JSON(none_as_null=True)  # None is SQL NULL, as the models write it

trusted_issuers = sa.table(
    "trusted_issuers",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("issuer", sa.String),
    sa.column("jwks", _JSON),
    sa.column("jwks_uri", sa.String),
    sa.column("algorithms", _JSON),
    sa.column("audiences", _JSON),
    sa.column("created_at", UTCDateTime()),
)
clients = sa.table(
    "clients",
    sa.column("client_id", sa.String),
    sa.column("auth_method", sa.String),
    sa.column("secret_hash", sa.String),
    sa.column("jwks", _JSON),
    sa.column("is_resource_server", sa.Boolean),
    sa.column("disabled", sa.Boolean),
    sa.column("created_at", UTCDateTime()),
    # Schema 0010: written only where it exists (put_client), read only at the head.
    sa.column("dpop_bound_access_tokens", sa.Boolean),
    # Schema 0011: likewise.
    sa.column("introspects", _JSON),
)
DPOP_BOUND = "dpop_bound_access_tokens"
INTROSPECTS = "introspects"
service_credentials = sa.table(
    "service_credentials",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("key_id", sa.String),
    sa.column("secret_hash", sa.String),
    sa.column("owner_subject", sa.String),
    sa.column("disabled", sa.Boolean),
    sa.column("created_at", UTCDateTime()),
    sa.column("disabled_at", UTCDateTime()),
)
rules = sa.table(
    "rules",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("version", sa.Integer),
    sa.column("effect", sa.String),
    sa.column("definition", _JSON),
    sa.column("updated_at", UTCDateTime()),
)
rules_state = sa.table(
    "rules_state",
    sa.column("id", sa.Integer),
    sa.column("generation", sa.BigInteger),
    sa.column("last_version", sa.Integer),
)


def _bind(connection: sa.Connection | None) -> sa.Connection:
    return connection if connection is not None else op.get_bind()


def _now() -> datetime:
    return datetime.now(UTC)


def _columns(connection: sa.Connection, table: str) -> set[str]:
    """The columns the database's ``table`` has now (a fresh inspection: the schema may
    have moved on within this upgrade)."""
    return {found["name"] for found in sa.inspect(connection).get_columns(table)}


def _exists(
    connection: sa.Connection, table: sa.TableClause, key: sa.ColumnClause[Any], value: str
) -> bool:
    return (
        connection.execute(sa.select(key).select_from(table).where(key == value)).first()
        is not None
    )


def _bump_generation(connection: sa.Connection) -> None:
    connection.execute(
        sa.update(rules_state)
        .where(rules_state.c.id == 1)
        .values(generation=rules_state.c.generation + 1)
    )


def _next_rule_version(connection: sa.Connection) -> int:
    connection.execute(
        sa.update(rules_state)
        .where(rules_state.c.id == 1)
        .values(last_version=rules_state.c.last_version + 1)
    )
    version = connection.scalar(sa.select(rules_state.c.last_version).where(rules_state.c.id == 1))
    if version is None:
        raise RuntimeError("rules_state has no row: is the schema migrated?")
    return int(version)


# ---- rules ------------------------------------------------------------------------------

# Where a rule's id has been used: its row, and the tokens and audit records that name it.
_RULE_IDS_IN_USE = sa.text(
    "SELECT max(id) FROM ("
    "SELECT max(id) AS id FROM rules UNION ALL "
    "SELECT max(rule_id) FROM issued_tokens UNION ALL "
    "SELECT max(rule_id) FROM audit_log) AS used"
)


def fresh_rule_id(connection: sa.Connection) -> int | None:
    """The id a new rule gets on SQLite: one never used before, by any rule still named by
    a token or an audit record. SQLite gives a new row the highest id plus one, so the id
    of the rule with the highest id, once deleted, went to the next new rule, and that
    rule's tokens (``sts_rule_id``) were judged by the new rule (introspection, a
    re-exchange, ``sts revoke --rule``). None on PostgreSQL, whose sequence never gives an
    id twice. Reads two tables without an index on ``rule_id``: run per new rule only."""
    if connection.dialect.name != "sqlite":
        return None
    return int(connection.scalar(_RULE_IDS_IN_USE) or 0) + 1


def put_rule(
    name: str, definition: Mapping[str, Any], *, connection: sa.Connection | None = None
) -> int:
    """Create or replace a rule; returns its new version (never a reused one)."""
    compile_rule(0, name, 0, definition)  # a revision never writes an invalid rule
    bind = _bind(connection)
    version = _next_rule_version(bind)
    values = {
        "version": version,
        "effect": str(definition.get("effect", "allow")),
        "definition": dict(definition),
        "updated_at": _now(),
    }
    if _exists(bind, rules, rules.c.name, name):
        bind.execute(sa.update(rules).where(rules.c.name == name).values(**values))
    else:
        new_id = fresh_rule_id(bind)
        fixed = {} if new_id is None else {"id": new_id}
        bind.execute(sa.insert(rules).values(name=name, **fixed, **values))
    _bump_generation(bind)
    return version


def delete_rule(name: str, *, connection: sa.Connection | None = None) -> None:
    bind = _bind(connection)
    bind.execute(sa.delete(rules).where(rules.c.name == name))
    _bump_generation(bind)


# ---- trusted issuers --------------------------------------------------------------------


def put_issuer(
    name: str, fields: Mapping[str, Any], *, connection: sa.Connection | None = None
) -> None:
    """fields: issuer, audiences, algorithms, and jwks_uri or jwks (as in the rules file)."""
    bind = _bind(connection)
    values = {
        "issuer": fields["issuer"],
        "audiences": list(fields["audiences"]),
        "algorithms": list(fields["algorithms"]),
        "jwks_uri": fields.get("jwks_uri"),
        "jwks": fields.get("jwks"),
    }
    if (values["jwks"] is None) == (values["jwks_uri"] is None):
        raise ValueError(f"issuer {name!r} needs exactly one of jwks or jwks_uri")
    if _exists(bind, trusted_issuers, trusted_issuers.c.name, name):
        bind.execute(
            sa.update(trusted_issuers).where(trusted_issuers.c.name == name).values(**values)
        )
    else:
        bind.execute(sa.insert(trusted_issuers).values(name=name, created_at=_now(), **values))
    _bump_generation(bind)


def delete_issuer(name: str, *, connection: sa.Connection | None = None) -> None:
    bind = _bind(connection)
    bind.execute(sa.delete(trusted_issuers).where(trusted_issuers.c.name == name))
    _bump_generation(bind)


# ---- clients ----------------------------------------------------------------------------


def put_client(
    client_id: str, fields: Mapping[str, Any], *, connection: sa.Connection | None = None
) -> None:
    """fields: auth_method, secret_hash (a hash), jwks, resource_server, disabled,
    dpop_bound_access_tokens (RFC 9449 §5.2), introspects (RFC 7662 §2.2)."""
    bind = _bind(connection)
    values = {
        "auth_method": fields["auth_method"],
        "secret_hash": fields.get("secret_hash"),
        "jwks": fields.get("jwks"),
        "is_resource_server": bool(fields.get("resource_server", False)),
        "disabled": bool(fields.get("disabled", False)),
    }
    columns = _columns(bind, "clients")
    dpop_bound = bool(fields.get(DPOP_BOUND, False))
    # A revision written before schema 0010 may run before it (a fresh ``sts db upgrade``
    # runs each rules revision after the schema head of its own time): the column is
    # written only where it exists. Absent, it can only be asked to stay false.
    if DPOP_BOUND in columns:
        values[DPOP_BOUND] = dpop_bound
    elif dpop_bound:
        raise ValueError(
            f"client {client_id!r}: {DPOP_BOUND} needs schema revision 0010_client_dpop_bound"
        )
    introspects = fields.get(INTROSPECTS)
    # Likewise for schema 0011: absent, the column can only be asked to stay NULL.
    if INTROSPECTS in columns:
        values[INTROSPECTS] = list(introspects) if introspects is not None else None
    elif introspects is not None:
        raise ValueError(
            f"client {client_id!r}: {INTROSPECTS} needs schema revision 0011_client_introspects"
        )
    if _exists(bind, clients, clients.c.client_id, client_id):
        bind.execute(sa.update(clients).where(clients.c.client_id == client_id).values(**values))
    else:
        bind.execute(sa.insert(clients).values(client_id=client_id, created_at=_now(), **values))
    _bump_generation(bind)


def delete_client(client_id: str, *, connection: sa.Connection | None = None) -> None:
    bind = _bind(connection)
    bind.execute(sa.delete(clients).where(clients.c.client_id == client_id))
    _bump_generation(bind)


# ---- service credentials ----------------------------------------------------------------


def put_credential(
    name: str, fields: Mapping[str, Any], *, connection: sa.Connection | None = None
) -> None:
    """fields: key_id, secret_hash (a hash; the key itself is never stored), owner_subject."""
    bind = _bind(connection)
    disabled = bool(fields.get("disabled", False))
    values = {
        "key_id": fields["key_id"],
        "secret_hash": fields["secret_hash"],
        "owner_subject": fields["owner_subject"],
        "disabled": disabled,
        "disabled_at": _now() if disabled else None,
    }
    table = service_credentials
    if _exists(bind, table, table.c.name, name):
        bind.execute(sa.update(table).where(table.c.name == name).values(**values))
    else:
        bind.execute(sa.insert(table).values(name=name, created_at=_now(), **values))
    _bump_generation(bind)


def delete_credential(name: str, *, connection: sa.Connection | None = None) -> None:
    bind = _bind(connection)
    table = service_credentials
    bind.execute(sa.delete(table).where(table.c.name == name))
    _bump_generation(bind)


# ---- reading the current state (plan, export, drift check) ------------------------------


def read_state(connection: sa.Connection) -> dict[str, dict[str, dict[str, Any]]]:
    """The trust configuration as the rules file describes it: kind -> name -> fields."""
    state: dict[str, dict[str, dict[str, Any]]] = {
        "issuer": {},
        "client": {},
        "credential": {},
        "rule": {},
    }
    for row in connection.execute(sa.select(trusted_issuers)).mappings():
        fields = {"issuer": row["issuer"], "audiences": row["audiences"]}
        fields["algorithms"] = row["algorithms"]
        if row["jwks_uri"] is not None:
            fields["jwks_uri"] = row["jwks_uri"]
        else:
            fields["jwks"] = row["jwks"]
        state["issuer"][row["name"]] = fields
    for row in connection.execute(sa.select(clients)).mappings():
        fields = {"auth_method": row["auth_method"]}
        if row["secret_hash"] is not None:
            fields["secret_hash"] = row["secret_hash"]
        if row["jwks"] is not None:
            fields["jwks"] = row["jwks"]
        fields["resource_server"] = bool(row["is_resource_server"])
        fields["disabled"] = bool(row["disabled"])
        if row[DPOP_BOUND]:  # left out when false, as a rules file leaves it out
            fields[DPOP_BOUND] = True
        if row[INTROSPECTS] is not None:  # left out when NULL, as a rules file leaves it out
            fields[INTROSPECTS] = list(row[INTROSPECTS])
        state["client"][row["client_id"]] = fields
    for row in connection.execute(sa.select(service_credentials)).mappings():
        state["credential"][row["name"]] = {
            "key_id": row["key_id"],
            "secret_hash": row["secret_hash"],
            "owner_subject": row["owner_subject"],
            "disabled": bool(row["disabled"]),
        }
    for row in connection.execute(sa.select(rules)).mappings():
        state["rule"][row["name"]] = dict(row["definition"])
    return state


def rule_versions(connection: sa.Connection) -> dict[str, int]:
    rows = connection.execute(sa.select(rules.c.name, rules.c.version))
    return {name: int(version) for name, version in rows}
