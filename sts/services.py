"""The long-lived collaborators one app instance wires together (built by create_app)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from sts.clock import Clock
from sts.keys.keyring import KeyRing
from sts.settings import Settings
from sts.tokens.issuer_keys import IssuerKeyCache
from sts.tokens.verify import OwnKeySet
from sts.trust import TrustConfigCache


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    keyring: KeyRing
    clock: Clock
    trust: TrustConfigCache
    issuer_keys: IssuerKeyCache
    own_keys: OwnKeySet
