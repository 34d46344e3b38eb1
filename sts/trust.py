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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc.jwk import KeySet
from sqlalchemy.orm import Session, sessionmaker

from sts.db import queries
from sts.policy.rules import CompiledRule, RuleError, compile_rule

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


@dataclass(frozen=True)
class TrustConfig:
    generation: int
    rules: tuple[CompiledRule, ...]
    issuers_by_url: Mapping[str, IssuerConfig]
    clients: Mapping[str, ClientConfig]
    invalid_rules: tuple[str, ...] = field(default=())

    def client_requires_dpop(self, client_id: str | None) -> bool:
        """RFC 9449 §5.2: is ``client_id`` registered with ``dpop_bound_access_tokens``
        (every token request it makes must carry a DPoP proof)?"""
        registered = self.clients.get(client_id) if client_id else None
        return registered is not None and registered.dpop_bound_access_tokens


def load_trust_config(session: Session) -> TrustConfig:
    generation = queries.rules_generation(session)
    rules: list[CompiledRule] = []
    invalid: list[str] = []
    for row in queries.all_rules(session):
        try:
            rules.append(compile_rule(row.id, row.name, row.version, row.definition))
        except RuleError as exc:
            # Fail closed: a rule that does not compile grants nothing.
            log.error("rule %s (version %s) is invalid and ignored: %s", row.name, row.version, exc)
            invalid.append(row.name)
    issuers = {
        row.issuer: IssuerConfig(
            id=row.id,
            name=row.name,
            issuer=row.issuer,
            jwks=row.jwks,
            jwks_uri=row.jwks_uri,
            algorithms=tuple(row.algorithms),
            audiences=tuple(row.audiences),
        )
        for row in queries.all_trusted_issuers(session)
    }
    clients = {
        row.client_id: ClientConfig(
            client_id=row.client_id,
            auth_method=row.auth_method,
            secret_hash=row.secret_hash,
            jwks=KeySet.import_key_set(row.jwks) if row.jwks else None,  # type: ignore[arg-type]
            is_resource_server=row.is_resource_server,
            disabled=row.disabled,
            dpop_bound_access_tokens=row.dpop_bound_access_tokens,
        )
        for row in queries.all_clients(session)
    }
    return TrustConfig(generation, tuple(rules), issuers, clients, tuple(invalid))


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
