"""The app factory: settings → database (schema checked) → keys → Flask app."""

from __future__ import annotations

import logging

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from sts.clock import Clock, system_clock
from sts.db.engine import make_engine, make_session_factory
from sts.db.exchange_store import ExchangeStore
from sts.db.migrate import alembic_config_for, ensure_schema_at_head
from sts.keys.keyring import KeyRing, ensure_active_key
from sts.keys.keystore import make_keystore
from sts.keys.rotation import Schedule
from sts.services import Services
from sts.settings import Settings, validate
from sts.tokens.dpop_nonce import DpopNonces
from sts.tokens.issuer_keys import IssuerKeyCache
from sts.tokens.verify import OwnKeySet
from sts.trust import TrustConfigCache


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def build_services(settings: Settings, clock: Clock = system_clock) -> Services:
    """Connect, check the schema, load keys. Raises StartupError with an operator message."""
    validate(settings)  # also when built by hand: never start with an unsafe key schedule
    engine = make_engine(settings.effective_database_url)
    try:
        ensure_schema_at_head(
            engine, alembic_config_for(settings, engine), auto_migrate=settings.should_auto_migrate
        )
        session_factory = make_session_factory(engine)
        keystore = make_keystore(settings)
        ensure_active_key(session_factory, keystore, settings.signing_alg, clock)
        schedule = Schedule.from_settings(settings) if settings.key_auto_rotate else None
        keyring = KeyRing(session_factory, keystore, clock, settings.key_refresh_interval, schedule)
        keyring.load()
    except BaseException:
        engine.dispose()
        raise
    return Services(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        exchange_store=ExchangeStore(
            engine,
            checkpoint_interval=settings.sqlite_checkpoint_interval,
            status_block=settings.status_index_block,
        ),
        keyring=keyring,
        clock=clock,
        trust=TrustConfigCache(session_factory, settings.rules_refresh_interval),
        issuer_keys=IssuerKeyCache(
            timeout=settings.issuer_jwks_timeout,
            cache_ttl=settings.issuer_jwks_cache_ttl,
            min_refresh=settings.issuer_jwks_min_refresh,
            max_stale=settings.issuer_jwks_max_stale,
        ),
        own_keys=OwnKeySet(),
        dpop_nonces=(
            DpopNonces(
                settings.dpop_nonce_secret,
                settings.dpop_nonce_lifetime,
                settings.dpop_nonce_previous_secret,
            )
            if settings.dpop_nonce_secret is not None
            else None
        ),
    )


def create_app(settings: Settings | None = None, *, clock: Clock = system_clock) -> Flask:
    from sts.web import MAX_BODY_BYTES, register_web  # the only package using flask.request

    settings = settings or Settings.from_env()
    configure_logging(settings)
    services = build_services(settings, clock)
    app = Flask("sts", instance_path=str(settings.instance_dir.resolve()))
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["sts"] = services
    register_web(app, services)
    if settings.trusted_proxies:
        # Outermost, so that every path (the /token fast path included) sees the client's
        # address: werkzeug's ProxyFix takes it from the last ``trusted_proxies`` entries
        # of X-Forwarded-For, which only those proxies could have written.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    return app
