"""The long-lived collaborators one app instance wires together (built by create_app)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from sts.clock import Clock
from sts.db.exchange_store import ExchangeStore
from sts.keys.keyring import KeyRing
from sts.settings import Settings
from sts.tokens.dpop_nonce import DpopNonces
from sts.tokens.issuer_keys import IssuerKeyCache
from sts.tokens.verify import OwnKeySet, VerifiedJwt, verify_jwt
from sts.trust import TrustConfig, TrustConfigCache


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    exchange_store: ExchangeStore  # the exchange's hot-path transaction (driver level)
    keyring: KeyRing
    clock: Clock
    trust: TrustConfigCache
    issuer_keys: IssuerKeyCache
    own_keys: OwnKeySet
    dpop_nonces: DpopNonces | None = None  # RFC 9449 §8, when STS_DPOP_NONCE_SECRET is set

    def verify_jwt(
        self, token: str, *, role: str, now: datetime, trust: TrustConfig | None = None
    ) -> VerifiedJwt:
        """:func:`sts.tokens.verify.verify_jwt` with this instance's issuer, keys, trusted
        issuers (``trust``: the request's snapshot, else the current one) and leeway."""
        return verify_jwt(
            token,
            role=role,
            trust=trust or self.trust.current(),
            own_issuer=self.settings.issuer,
            own_keys=self.own_keys.get(self.keyring.jwks()),
            issuer_keys=self.issuer_keys,
            leeway=self.settings.clock_leeway,
            now=now,
        )

    def verify_own_token(self, token: str, *, role: str, now: datetime) -> VerifiedJwt:
        """:meth:`verify_jwt` for a token of this STS only (introspection, revocation):
        another issuer's, a trusted one's too, is refused as untrusted before any of its
        keys are looked up or fetched."""
        own_only = replace(self.trust.current(), issuers_by_url={})
        return self.verify_jwt(token, role=role, now=now, trust=own_only)
