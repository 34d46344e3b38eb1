"""The trust configuration: rules, trusted issuers and clients, cached per generation.

Operators change these rarely (through migrations); exchanges read them constantly. Each
process keeps a compiled snapshot and checks the ``rules_state.generation`` counter at
most once per ``rules_refresh_interval``: that interval bounds how long a change takes to
reach a running service, and no exchange pays a query just to check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from joserfc.jwk import KeySet
from sqlalchemy.orm import Session, sessionmaker

from sts.db import queries
from sts.db.models import Client, Rule, TrustedIssuer
from sts.policy.rules import CompiledRule, RuleError, compile_rule, deny_everything

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssuerConfig:
    id: int
    name: str
    issuer: str
    jwks: Mapping[str, Any] | None
    jwks_uri: str | None
    algorithms: tuple[str, ...]
    audiences: tuple[str, ...]


@dataclass(frozen=True)
class ClientConfig:
    client_id: str
    auth_method: str
    secret_hash: str | None
    jwks: KeySet | None
    is_resource_server: bool
    disabled: bool
    # RFC 9449 §5.2: every token request of this client must carry a DPoP proof.
    dpop_bound_access_tokens: bool = False
    # RFC 7662 §2.2: a resource server registered with the audiences it serves may
    # introspect only tokens for one of them. None: every token (registered without).
    introspects: frozenset[str] | None = None
    # Its registered jwks did not import (jwks is None then): it cannot authenticate.
    keys_invalid: bool = False


@dataclass(frozen=True)
class TrustConfig:
    generation: int
    rules: tuple[CompiledRule, ...]
    issuers_by_url: Mapping[str, IssuerConfig]
    clients: Mapping[str, ClientConfig]
    # Stored rules that do not compile: an allow rule is left out, a deny rule stands in
    # for itself as one that denies everything (sts.policy.rules.deny_everything).
    invalid_rules: tuple[str, ...] = field(default=())
    # "client NAME" / "issuer NAME" whose registered jwks does not import (no keys then).
    invalid_key_sets: tuple[str, ...] = field(default=())
    # One line per invalid rule or key set: what it is, why, and what sts does instead.
    problems: tuple[str, ...] = field(default=())

    def client_requires_dpop(self, client_id: str | None) -> bool:
        """RFC 9449 §5.2: is ``client_id`` registered with ``dpop_bound_access_tokens``
        (every token request it makes must carry a DPoP proof)?"""
        registered = self.clients.get(client_id) if client_id else None
        return registered is not None and registered.dpop_bound_access_tokens


class KeySetError(ValueError):
    """A registered JWK set (RFC 7517 §5) that does not import. The message says why."""


def import_client_key_set(jwks: Mapping[str, Any]) -> KeySet:
    """A client's keys, every one as registered (RFC 7523 §2.2: they verify its
    assertions)."""
    return KeySet.import_key_set(jwks)  # type: ignore[arg-type]


def import_key_set(
    jwks: Mapping[str, Any],
    importer: Callable[[Mapping[str, Any]], KeySet] = import_client_key_set,
) -> KeySet:
    """``jwks`` imported by ``importer`` (a client's set as it is; an issuer's through
    ``sts.tokens.issuer_keys.import_public_key_set``), or :class:`KeySetError`."""
    try:
        return importer(jwks)
    except Exception as exc:
        # Key data an operator registered, read by joserfc and cryptography, which raise
        # what they meet first: JoseError, ValueError (a point off its curve, bad base64),
        # KeyError (an unknown curve), TypeError (a member of the wrong type), ... Any of
        # them means this one key set is unusable, never that the configuration is.
        raise KeySetError(f"{type(exc).__name__}: {exc}") from None


def load_trust_config(session: Session) -> TrustConfig:
    """The stored configuration, compiled. What does not load fails closed for its own
    part only (a rule, a client, an issuer): logged, named in the result, and never a
    reason for every exchange to fail."""
    generation = queries.rules_generation(session)
    invalid = _Invalid()
    rules = _load_rules(queries.all_rules(session), invalid)
    issuers = {
        row.issuer: _load_issuer(row, invalid) for row in queries.all_trusted_issuers(session)
    }
    clients = {row.client_id: _load_client(row, invalid) for row in queries.all_clients(session)}
    return TrustConfig(
        generation,
        rules,
        issuers,
        clients,
        invalid_rules=tuple(invalid.rules),
        invalid_key_sets=tuple(invalid.key_sets),
        problems=tuple(invalid.problems),
    )


@dataclass
class _Invalid:
    """What did not load, by name, and why (logged, and kept for ``sts check``)."""

    rules: list[str] = field(default_factory=list)
    key_sets: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def rule(self, name: str, problem: str) -> None:
        self.rules.append(name)
        self._note(problem)

    def key_set(self, name: str, problem: str) -> None:
        self.key_sets.append(name)
        self._note(problem)

    def _note(self, problem: str) -> None:
        log.error("%s", problem)
        self.problems.append(problem)


def _load_rules(rows: Sequence[Rule], invalid: _Invalid) -> tuple[CompiledRule, ...]:
    """The compiled rules. A stored rule may no longer compile (a definition stored by an
    older release, or written around the validation); it fails closed either way: an
    allow rule that does not compile grants nothing (it is left out); a deny rule denies
    every exchange until it is fixed (left out, it would fail open: what it denied, the
    allow rules would grant again)."""
    rules: list[CompiledRule] = []
    invalid_denies: list[tuple[Rule, str]] = []
    for row in rows:
        try:
            rules.append(compile_rule(row.id, row.name, row.version, row.definition))
        except RuleError as exc:
            where = f"rule {row.name} (version {row.version})"
            if _is_deny(row):
                invalid_denies.append((row, str(exc)))
                invalid.rule(
                    row.name, f"{where}: {exc}; a deny rule: it denies every exchange until fixed"
                )
            else:
                invalid.rule(row.name, f"{where}: {exc}; it grants nothing")
    compiled = tuple(rules)
    for row, why in invalid_denies:
        rules.extend(deny_everything(row.id, row.name, row.version, why, compiled))
    return tuple(rules)


def _is_deny(row: Rule) -> bool:
    """The ``effect`` column says so, or the definition does: either is enough, since
    mistaking a deny rule for an allow rule is what fails open."""
    definition = row.definition
    declared = definition.get("effect") if isinstance(definition, Mapping) else None
    return "deny" in (row.effect, declared)


def _load_issuer(row: TrustedIssuer, invalid: _Invalid) -> IssuerConfig:
    jwks = row.jwks
    if jwks is not None:
        # issuer_keys imports this module; its importers are the ones the exchange uses.
        from sts.tokens.issuer_keys import import_every_public_key, import_public_key_set

        try:
            import_key_set(jwks, import_every_public_key)
        except KeySetError as exc:
            # RFC 7517 §5: the exchange skips a key it cannot use and verifies with the
            # rest. With none left, fail closed for this issuer only: its tokens are
            # refused ("The issuer has no keys configured."); the others keep working.
            if not import_public_key_set(jwks, f"issuer {row.name} (inline)").keys:
                jwks = None
            outcome = "its tokens are refused" if jwks is None else "that key is skipped"
            invalid.key_set(f"issuer {row.name}", f"issuer {row.name}: jwks: {exc}; {outcome}")
    return IssuerConfig(
        id=row.id,
        name=row.name,
        issuer=row.issuer,
        jwks=jwks,
        jwks_uri=row.jwks_uri,
        algorithms=tuple(row.algorithms),
        audiences=tuple(row.audiences),
    )


def _load_client(row: Client, invalid: _Invalid) -> ClientConfig:
    keys: KeySet | None = None
    keys_invalid = False
    if row.jwks:
        try:
            keys = import_key_set(row.jwks)
        except KeySetError as exc:
            # Fail closed for this client only: with no keys, its private_key_jwt
            # authentication is invalid_client; every other client keeps working.
            invalid.key_set(
                f"client {row.client_id}",
                f"client {row.client_id}: jwks does not import: {exc}; it cannot authenticate",
            )
            keys_invalid = True
    return ClientConfig(
        client_id=row.client_id,
        auth_method=row.auth_method,
        secret_hash=row.secret_hash,
        jwks=keys,
        is_resource_server=row.is_resource_server,
        disabled=row.disabled,
        dpop_bound_access_tokens=row.dpop_bound_access_tokens,
        introspects=frozenset(row.introspects) if row.introspects is not None else None,
        keys_invalid=keys_invalid,
    )


class TrustConfigCache:
    def __init__(self, session_factory: sessionmaker[Session], refresh_interval: float) -> None:
        self._session_factory = session_factory
        self._refresh_interval = refresh_interval
        self._lock = threading.Lock()
        self._config: TrustConfig | None = None
        self._checked_at = 0.0

    def current(self) -> TrustConfig:
        """The compiled configuration; re-checks the generation at most once an interval.

        Uses a monotonic clock on purpose: this bounds staleness in real time, and tests
        that move the injected clock must not make the cache skip a reload.
        """
        config = self._config
        if config is not None and time.monotonic() - self._checked_at < self._refresh_interval:
            return config
        with self._lock:
            if self._config is not None and (
                time.monotonic() - self._checked_at < self._refresh_interval
            ):
                return self._config
            with self._session_factory() as session:
                generation = queries.rules_generation(session)
                if self._config is None or self._config.generation != generation:
                    self._config = load_trust_config(session)
            self._checked_at = time.monotonic()
            return self._config

    def invalidate(self) -> None:
        self._checked_at = 0.0
