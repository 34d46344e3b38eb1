"""One typed, frozen settings object, read once from ``STS_*`` environment variables.

Nothing else in sts reads ``os.environ``: the settings are built at the edge (CLI, WSGI
entry point) and passed down explicitly.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from sts.errors import ConfigurationError

Environment = Literal["development", "production"]
SIGNING_ALGORITHMS = ("ES256", "EdDSA", "RS256", "PS256")


def _redacted(value: str | None) -> str:
    return "<unset>" if value is None else "<set>"


@dataclass(frozen=True)
class Settings:
    """Everything sts can be configured with. Build it with :meth:`from_env`."""

    issuer: str = "http://127.0.0.1:8080"
    env: Environment = "development"
    instance_dir: Path = Path("instance")
    # None: the embedded SQLite file under instance_dir. Not in repr: it may hold a password.
    database_url: str | None = field(default=None, repr=False)
    keys_dir: Path = Path("keys")
    key_passphrase: str | None = field(default=None, repr=False)
    signing_alg: str = "ES256"
    max_token_ttl: int = 900  # global cap on any issued token's lifetime, seconds
    clock_leeway: int = 30  # seconds of skew tolerated on exp/nbf/iat of inbound tokens
    jwks_max_age: int = 300  # Cache-Control max-age of the JWKS document, seconds
    auto_migrate: bool | None = None  # None: only for the embedded default database
    # Trusted issuers' JWKS fetched from jwks_uri: timeout, cache lifetime, and the minimum
    # interval between re-fetches triggered by an unknown kid (a DoS guard).
    issuer_jwks_timeout: float = 3.0
    issuer_jwks_cache_ttl: int = 300
    issuer_jwks_min_refresh: int = 30
    # How often a process checks the rules generation counter (the bound on how long a
    # rules change takes to reach a running service).
    rules_refresh_interval: float = 1.0
    # Token Status List: seconds a served status list token may be cached (its ``ttl``
    # claim and Cache-Control max-age, and how long a process reuses the one it signed),
    # and how many one-bit entries a list holds before a new list is started.
    status_list_ttl: int = 60
    status_list_size: int = 131072
    # ``sts gc``: keep lineage (issued_tokens) this long after a token expired, and audit
    # records this long after they were written.
    lineage_retention: int = 7 * 86400
    audit_retention: int = 90 * 86400
    log_level: str = "INFO"

    # ---- derived values -------------------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.instance_dir / 'sts.db').resolve()}"

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def should_auto_migrate(self) -> bool:
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.uses_embedded_database

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def describe(self) -> dict[str, str]:
        """What ``sts check`` prints: every setting, secrets shown only as set/unset."""
        return {
            "STS_ENV": self.env,
            "STS_ISSUER": self.issuer,
            "STS_DATABASE_URL": _redact_url(self.effective_database_url),
            "STS_INSTANCE_DIR": str(self.instance_dir),
            "STS_KEYS_DIR": str(self.keys_dir),
            "STS_KEY_PASSPHRASE": _redacted(self.key_passphrase),
            "STS_SIGNING_ALG": self.signing_alg,
            "STS_MAX_TOKEN_TTL": str(self.max_token_ttl),
            "STS_CLOCK_LEEWAY": str(self.clock_leeway),
            "STS_JWKS_MAX_AGE": str(self.jwks_max_age),
            "STS_AUTO_MIGRATE": str(self.should_auto_migrate).lower(),
            "STS_ISSUER_JWKS_TIMEOUT": str(self.issuer_jwks_timeout),
            "STS_ISSUER_JWKS_CACHE_TTL": str(self.issuer_jwks_cache_ttl),
            "STS_ISSUER_JWKS_MIN_REFRESH": str(self.issuer_jwks_min_refresh),
            "STS_RULES_REFRESH_INTERVAL": str(self.rules_refresh_interval),
            "STS_STATUS_LIST_TTL": str(self.status_list_ttl),
            "STS_STATUS_LIST_SIZE": str(self.status_list_size),
            "STS_LINEAGE_RETENTION": str(self.lineage_retention),
            "STS_AUDIT_RETENTION": str(self.audit_retention),
            "STS_LOG_LEVEL": self.log_level,
        }

    def replace(self, **changes: object) -> Settings:
        return validate(dataclasses.replace(self, **changes))  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``STS_*`` variables; raise :class:`ConfigurationError` naming the bad one."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        readers: dict[str, tuple[str, object]] = {
            "STS_ISSUER": ("issuer", str),
            "STS_ENV": ("env", _parse_env),
            "STS_INSTANCE_DIR": ("instance_dir", Path),
            "STS_DATABASE_URL": ("database_url", str),
            "STS_KEYS_DIR": ("keys_dir", Path),
            "STS_KEY_PASSPHRASE": ("key_passphrase", str),
            "STS_SIGNING_ALG": ("signing_alg", str),
            "STS_MAX_TOKEN_TTL": ("max_token_ttl", _parse_positive_int),
            "STS_CLOCK_LEEWAY": ("clock_leeway", _parse_non_negative_int),
            "STS_JWKS_MAX_AGE": ("jwks_max_age", _parse_non_negative_int),
            "STS_AUTO_MIGRATE": ("auto_migrate", _parse_bool),
            "STS_ISSUER_JWKS_TIMEOUT": ("issuer_jwks_timeout", _parse_seconds),
            "STS_ISSUER_JWKS_CACHE_TTL": ("issuer_jwks_cache_ttl", _parse_positive_int),
            "STS_ISSUER_JWKS_MIN_REFRESH": ("issuer_jwks_min_refresh", _parse_non_negative_int),
            "STS_RULES_REFRESH_INTERVAL": ("rules_refresh_interval", _parse_seconds),
            "STS_STATUS_LIST_TTL": ("status_list_ttl", _parse_positive_int),
            "STS_STATUS_LIST_SIZE": ("status_list_size", _parse_positive_int),
            "STS_LINEAGE_RETENTION": ("lineage_retention", _parse_non_negative_int),
            "STS_AUDIT_RETENTION": ("audit_retention", _parse_non_negative_int),
            "STS_LOG_LEVEL": ("log_level", _parse_log_level),
        }
        for variable, (attribute, parse) in readers.items():
            raw = env.get(variable)
            if raw is None or raw == "":
                continue
            try:
                kwargs[attribute] = parse(raw)  # type: ignore[operator]
            except ValueError as exc:
                raise ConfigurationError(variable, str(exc)) from None
        return validate(cls(**kwargs))  # type: ignore[arg-type]


def validate(settings: Settings) -> Settings:
    """Cross-field checks. Each failure names the variable an operator has to fix."""
    _check_issuer(settings)
    if settings.signing_alg not in SIGNING_ALGORITHMS:
        raise ConfigurationError(
            "STS_SIGNING_ALG", f"must be one of {', '.join(SIGNING_ALGORITHMS)}"
        )
    if settings.database_url is not None and not settings.database_url.startswith(
        ("sqlite", "postgresql")
    ):
        raise ConfigurationError(
            "STS_DATABASE_URL", "must be a sqlite:/// or postgresql+psycopg:// URL"
        )
    if settings.is_production and not settings.key_passphrase:
        raise ConfigurationError(
            "STS_KEY_PASSPHRASE",
            "is required in production: private signing keys are encrypted at rest with it",
        )
    if settings.status_list_size % 8 or not 8 <= settings.status_list_size <= 1 << 24:
        raise ConfigurationError(
            "STS_STATUS_LIST_SIZE", "must be a multiple of 8 between 8 and 16777216"
        )
    if settings.key_passphrase is not None and len(settings.key_passphrase) < 12:
        raise ConfigurationError("STS_KEY_PASSPHRASE", "must be at least 12 characters long")
    return settings


def _check_issuer(settings: Settings) -> None:
    # RFC 8414 §2: the issuer is an https URL with no query or fragment. Plain http is
    # tolerated for loopback development only.
    parts = urlsplit(settings.issuer)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError("STS_ISSUER", "must be an absolute https:// URL")
    if parts.query or parts.fragment:
        raise ConfigurationError("STS_ISSUER", "must not contain a query or fragment (RFC 8414)")
    if settings.issuer.endswith("/"):
        raise ConfigurationError("STS_ISSUER", "must not end with a slash")
    if parts.scheme == "http" and settings.is_production and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            "STS_ISSUER", "must use https in production (http is allowed only for loopback)"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def _parse_env(raw: str) -> Environment:
    if raw not in ("development", "production"):
        raise ValueError("must be 'development' or 'production'")
    return raw  # type: ignore[return-value]


def _parse_positive_int(raw: str) -> int:
    value = _parse_non_negative_int(raw)
    if value == 0:
        raise ValueError("must be a positive whole number of seconds")
    return value


def _parse_non_negative_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"must be a whole number, got {raw!r}") from None
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _parse_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"must be a number of seconds, got {raw!r}") from None
    if not 0 < value <= 3600:
        raise ValueError("must be between 0 and 3600 seconds")
    return value


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _parse_log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return level
