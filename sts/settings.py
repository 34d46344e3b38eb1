"""One typed, frozen settings object, read once from ``STS_*`` environment variables.

Nothing else in sts reads ``os.environ``: the settings are built at the edge (CLI, WSGI
entry point) and passed down explicitly.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sts.errors import ConfigurationError

Environment = Literal["development", "production"]
SIGNING_ALGORITHMS = ("ES256", "EdDSA", "RS256", "PS256")
KEYSTORES = ("file", "database")
KEK_BYTES = 32  # AES-256-GCM
# The derived JWKS max-age never exceeds this, so a compromised key leaves verifiers'
# caches within an hour even with a long lead time.
JWKS_MAX_AGE_CAP = 3600
DAY = 86400
# STS_KEY_FILE_SCRYPT_LOG2_N's range: what a key file may ask for (sts.keys.keystore).
MIN_SCRYPT_LOG2_N = 15
MAX_SCRYPT_LOG2_N = 20
MIN_NONCE_SECRET_CHARS = 32  # STS_DPOP_NONCE_SECRET: an HMAC key (sts.tokens.dpop_nonce)


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
    # scrypt's cost for key files written under STS_KEY_PASSPHRASE (RFC 7914: N = 2**this,
    # r = 8, p = 1; 128 MiB and ~0.3 s per key file loaded at 17). Files record their own.
    key_file_scrypt_log2_n: int = 17
    signing_alg: str = "ES256"
    max_token_ttl: int = 900  # global cap on any issued token's lifetime, seconds
    clock_leeway: int = 30  # seconds of skew tolerated on exp/nbf/iat of inbound tokens
    # RFC 9449 §4.3 check 11 (§11.1): a DPoP proof is accepted this many seconds after its
    # ``iat`` (plus the clock leeway); its ``jti`` is kept that long to refuse a replay.
    dpop_proof_max_age: int = 60
    # RFC 9449 §8: when set, a proof must carry a nonce this service handed out (HMAC under
    # this secret, shared by every instance: sts.tokens.dpop_nonce), accepted for one to
    # two lifetimes. Not in repr: it is a secret.
    dpop_nonce_secret: str | None = field(default=None, repr=False)
    # While a new secret rolls out: nonces of the previous one are still accepted.
    dpop_nonce_previous_secret: str | None = field(default=None, repr=False)
    dpop_nonce_lifetime: int = 120
    # Cache-Control max-age of the JWKS document, seconds. None: derived from the lead
    # time (see jwks_cache_max_age); when set, it must not exceed the lead time.
    jwks_max_age: int | None = None
    auto_migrate: bool | None = None  # None: only for the embedded default database
    # Trusted issuers' JWKS fetched from jwks_uri: total deadline of a fetch, cache lifetime,
    # and the minimum interval between fetch attempts of one URL, failed ones included (a
    # DoS guard).
    issuer_jwks_timeout: float = 3.0
    issuer_jwks_cache_ttl: int = 300
    # How long the last good keys of a jwks_uri serve while refreshing them fails.
    issuer_jwks_max_stale: int = 86400
    issuer_jwks_min_refresh: int = 30
    # How often a process checks the rules generation counter (the bound on how long a
    # rules change takes to reach a running service).
    rules_refresh_interval: float = 1.0
    # SQLite only: how often each process's background thread checkpoints the WAL into the
    # database file (sts.db.checkpoint); commits never do it on the request path.
    sqlite_checkpoint_interval: float = 0.25
    # Where `sts rules migration` writes rules revisions and `sts db upgrade` finds them
    # (relative to the working directory): a deployment keeps them in its own repository.
    rules_migrations_dir: Path = Path("migrations/versions/rules")
    # Token Status List: seconds a served status list token may be cached (its ``ttl``
    # claim and Cache-Control max-age, and how long a process reuses the one it signed),
    # and how many one-bit entries a list holds before a new list is started.
    status_list_ttl: int = 60
    # Exposure reports accepted per source address per minute, per process.
    exposure_rate_limit: int = 10
    # Exposure reports that take the governance lock (every exchange waits meanwhile),
    # per minute across every caller: across every replica with redis_url, per process
    # without it or while Redis is unavailable (sts.ratelimit.GlobalBudget).
    exposure_global_limit: int = 30
    # Where service-wide limits are counted (redis://, rediss://, unix://). None: each
    # process counts its own. Not in repr: it may carry a password.
    redis_url: str | None = field(default=None, repr=False)
    # Reverse proxies in front of sts whose X-Forwarded-For is trusted (werkzeug's
    # ProxyFix ``x_for``): the source address of a request is then the client's, as the
    # nearest proxy saw it, not the proxy's. 0: the TCP peer is the source.
    trusted_proxies: int = 0
    status_list_size: int = 131072
    # Status-list indexes a process claims at once (sts.db.status_indexes): exchanges take
    # theirs from the block instead of all queueing on the list's counter row. At most
    # this many entries go unused per process start or minute without exchanges.
    status_index_block: int = 64
    # ``sts gc``: keep lineage (issued_tokens) this long after a token expired, and audit
    # records this long after they were written.
    lineage_retention: int = 7 * 86400
    audit_retention: int = 90 * 86400
    log_level: str = "INFO"
    # Where private signing keys rest: "file" (keys_dir, PKCS#8 + passphrase) or
    # "database" (signing_keys.encrypted_private_key, AES-256-GCM under this KEK).
    keystore: str = "file"
    key_encryption_key: str | None = field(default=None, repr=False)  # base64, 32 bytes
    # Rotation schedule, seconds: how long a key signs, how long it is published before it
    # signs, and how long it stays published after it stops signing.
    key_active_period: int = 30 * DAY
    key_publish_lead_time: int = DAY
    key_retention: int = DAY
    # How often a process re-reads key state (and runs a due rotation step): the bound on
    # how long a rotation takes to reach every replica.
    key_refresh_interval: float = 5.0
    key_auto_rotate: bool = True  # False: only `sts keys rotate` (cron) rotates

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

    @property
    def jwks_cache_max_age(self) -> int:
        """``Cache-Control: max-age`` of the JWKS: STS_JWKS_MAX_AGE, or half the lead time
        (at most an hour). Validation guarantees it never exceeds the lead time, so every
        verifier's cached JWKS holds a key before that key signs."""
        if self.jwks_max_age is not None:
            return self.jwks_max_age
        return min(self.key_publish_lead_time // 2, JWKS_MAX_AGE_CAP)

    @property
    def key_encryption_key_bytes(self) -> bytes | None:
        if self.key_encryption_key is None:
            return None
        return decode_key_encryption_key(self.key_encryption_key)

    def describe(self) -> dict[str, str]:
        """What ``sts check`` prints: every setting, secrets shown only as set/unset."""
        return {
            "STS_ENV": self.env,
            "STS_ISSUER": self.issuer,
            "STS_DATABASE_URL": _redact_url(self.effective_database_url),
            "STS_INSTANCE_DIR": str(self.instance_dir),
            "STS_KEYS_DIR": str(self.keys_dir),
            "STS_KEY_PASSPHRASE": _redacted(self.key_passphrase),
            "STS_KEY_FILE_SCRYPT_LOG2_N": str(self.key_file_scrypt_log2_n),
            "STS_SIGNING_ALG": self.signing_alg,
            "STS_MAX_TOKEN_TTL": str(self.max_token_ttl),
            "STS_CLOCK_LEEWAY": str(self.clock_leeway),
            "STS_DPOP_PROOF_MAX_AGE": str(self.dpop_proof_max_age),
            "STS_DPOP_NONCE_SECRET": _redacted(self.dpop_nonce_secret),
            "STS_DPOP_NONCE_PREVIOUS_SECRET": _redacted(self.dpop_nonce_previous_secret),
            "STS_DPOP_NONCE_LIFETIME": str(self.dpop_nonce_lifetime),
            "STS_JWKS_MAX_AGE": str(self.jwks_cache_max_age),
            "STS_AUTO_MIGRATE": str(self.should_auto_migrate).lower(),
            "STS_ISSUER_JWKS_TIMEOUT": str(self.issuer_jwks_timeout),
            "STS_ISSUER_JWKS_CACHE_TTL": str(self.issuer_jwks_cache_ttl),
            "STS_ISSUER_JWKS_MAX_STALE": str(self.issuer_jwks_max_stale),
            "STS_ISSUER_JWKS_MIN_REFRESH": str(self.issuer_jwks_min_refresh),
            "STS_RULES_REFRESH_INTERVAL": str(self.rules_refresh_interval),
            "STS_SQLITE_CHECKPOINT_INTERVAL": str(self.sqlite_checkpoint_interval),
            "STS_RULES_MIGRATIONS_DIR": str(self.rules_migrations_dir),
            "STS_STATUS_LIST_TTL": str(self.status_list_ttl),
            "STS_EXPOSURE_RATE_LIMIT": str(self.exposure_rate_limit),
            "STS_EXPOSURE_GLOBAL_LIMIT": str(self.exposure_global_limit),
            "STS_REDIS_URL": _redact_url(self.redis_url) if self.redis_url else "<unset>",
            "STS_TRUSTED_PROXIES": str(self.trusted_proxies),
            "STS_STATUS_LIST_SIZE": str(self.status_list_size),
            "STS_STATUS_INDEX_BLOCK": str(self.status_index_block),
            "STS_LINEAGE_RETENTION": str(self.lineage_retention),
            "STS_AUDIT_RETENTION": str(self.audit_retention),
            "STS_LOG_LEVEL": self.log_level,
            "STS_KEYSTORE": self.keystore,
            "STS_KEY_ENCRYPTION_KEY": _redacted(self.key_encryption_key),
            "STS_KEY_ACTIVE_PERIOD": str(self.key_active_period),
            "STS_KEY_PUBLISH_LEAD_TIME": str(self.key_publish_lead_time),
            "STS_KEY_RETENTION": str(self.key_retention),
            "STS_KEY_REFRESH_INTERVAL": str(self.key_refresh_interval),
            "STS_KEY_AUTO_ROTATE": str(self.key_auto_rotate).lower(),
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
            "STS_KEY_FILE_SCRYPT_LOG2_N": ("key_file_scrypt_log2_n", _parse_positive_int),
            "STS_SIGNING_ALG": ("signing_alg", str),
            "STS_MAX_TOKEN_TTL": ("max_token_ttl", _parse_positive_int),
            "STS_CLOCK_LEEWAY": ("clock_leeway", _parse_non_negative_int),
            "STS_DPOP_PROOF_MAX_AGE": ("dpop_proof_max_age", _parse_positive_int),
            "STS_DPOP_NONCE_SECRET": ("dpop_nonce_secret", str),
            "STS_DPOP_NONCE_PREVIOUS_SECRET": ("dpop_nonce_previous_secret", str),
            "STS_DPOP_NONCE_LIFETIME": ("dpop_nonce_lifetime", _parse_positive_int),
            "STS_JWKS_MAX_AGE": ("jwks_max_age", _parse_non_negative_int),
            "STS_AUTO_MIGRATE": ("auto_migrate", _parse_bool),
            "STS_ISSUER_JWKS_TIMEOUT": ("issuer_jwks_timeout", _parse_seconds),
            "STS_ISSUER_JWKS_CACHE_TTL": ("issuer_jwks_cache_ttl", _parse_positive_int),
            "STS_ISSUER_JWKS_MAX_STALE": ("issuer_jwks_max_stale", _parse_positive_int),
            "STS_ISSUER_JWKS_MIN_REFRESH": ("issuer_jwks_min_refresh", _parse_non_negative_int),
            "STS_RULES_REFRESH_INTERVAL": ("rules_refresh_interval", _parse_seconds),
            "STS_SQLITE_CHECKPOINT_INTERVAL": ("sqlite_checkpoint_interval", _parse_seconds),
            "STS_RULES_MIGRATIONS_DIR": ("rules_migrations_dir", Path),
            "STS_STATUS_LIST_TTL": ("status_list_ttl", _parse_positive_int),
            "STS_EXPOSURE_RATE_LIMIT": ("exposure_rate_limit", _parse_positive_count),
            "STS_EXPOSURE_GLOBAL_LIMIT": ("exposure_global_limit", _parse_positive_count),
            "STS_REDIS_URL": ("redis_url", str),
            "STS_TRUSTED_PROXIES": ("trusted_proxies", _parse_non_negative_int),
            "STS_STATUS_LIST_SIZE": ("status_list_size", _parse_positive_count),
            "STS_STATUS_INDEX_BLOCK": ("status_index_block", _parse_positive_count),
            "STS_LINEAGE_RETENTION": ("lineage_retention", _parse_non_negative_int),
            "STS_AUDIT_RETENTION": ("audit_retention", _parse_non_negative_int),
            "STS_LOG_LEVEL": ("log_level", _parse_log_level),
            "STS_KEYSTORE": ("keystore", str),
            "STS_KEY_ENCRYPTION_KEY": ("key_encryption_key", str),
            "STS_KEY_ACTIVE_PERIOD": ("key_active_period", _parse_positive_int),
            "STS_KEY_PUBLISH_LEAD_TIME": ("key_publish_lead_time", _parse_positive_int),
            "STS_KEY_RETENTION": ("key_retention", _parse_positive_int),
            "STS_KEY_REFRESH_INTERVAL": ("key_refresh_interval", _parse_seconds),
            "STS_KEY_AUTO_ROTATE": ("key_auto_rotate", _parse_bool),
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
    if settings.redis_url is not None and not settings.redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ConfigurationError("STS_REDIS_URL", "must be a redis://, rediss:// or unix:// URL")
    if settings.is_production and settings.keystore == "file" and not settings.key_passphrase:
        raise ConfigurationError(
            "STS_KEY_PASSPHRASE",
            "is required in production: private signing keys are encrypted at rest with it",
        )
    if settings.status_list_size % 8 or not 8 <= settings.status_list_size <= 1 << 24:
        raise ConfigurationError(
            "STS_STATUS_LIST_SIZE", "must be a multiple of 8 between 8 and 16777216"
        )
    if not 1 <= settings.status_index_block <= min(settings.status_list_size, 4096):
        raise ConfigurationError(
            "STS_STATUS_INDEX_BLOCK", "must be between 1 and 4096, and at most STS_STATUS_LIST_SIZE"
        )
    if settings.key_passphrase is not None and len(settings.key_passphrase) < 12:
        raise ConfigurationError("STS_KEY_PASSPHRASE", "must be at least 12 characters long")
    if not MIN_SCRYPT_LOG2_N <= settings.key_file_scrypt_log2_n <= MAX_SCRYPT_LOG2_N:
        raise ConfigurationError(
            "STS_KEY_FILE_SCRYPT_LOG2_N",
            f"must be between {MIN_SCRYPT_LOG2_N} (32 MiB) and {MAX_SCRYPT_LOG2_N} (1 GiB)",
        )
    for name, secret in (
        ("STS_DPOP_NONCE_SECRET", settings.dpop_nonce_secret),
        ("STS_DPOP_NONCE_PREVIOUS_SECRET", settings.dpop_nonce_previous_secret),
    ):
        if secret is not None and len(secret) < MIN_NONCE_SECRET_CHARS:
            raise ConfigurationError(
                name,
                f"must be at least {MIN_NONCE_SECRET_CHARS} random characters, the same on "
                "every replica",
            )
    if settings.dpop_nonce_previous_secret is not None and settings.dpop_nonce_secret is None:
        raise ConfigurationError(
            "STS_DPOP_NONCE_PREVIOUS_SECRET", "goes with STS_DPOP_NONCE_SECRET (its successor)"
        )
    _check_keystore(settings)
    if settings.issuer_jwks_max_stale < settings.issuer_jwks_cache_ttl:
        raise ConfigurationError(
            "STS_ISSUER_JWKS_MAX_STALE", "must be at least STS_ISSUER_JWKS_CACHE_TTL"
        )
    _check_rotation_schedule(settings)
    return settings


def _check_keystore(settings: Settings) -> None:
    if settings.keystore not in KEYSTORES:
        raise ConfigurationError("STS_KEYSTORE", f"must be one of {', '.join(KEYSTORES)}")
    if settings.key_encryption_key is not None:
        try:
            decode_key_encryption_key(settings.key_encryption_key)
        except ValueError as exc:
            raise ConfigurationError("STS_KEY_ENCRYPTION_KEY", str(exc)) from None
    elif settings.keystore == "database":
        raise ConfigurationError(
            "STS_KEY_ENCRYPTION_KEY",
            "is required with STS_KEYSTORE=database: private signing keys are encrypted "
            "with it (base64 of 32 random bytes, e.g. `openssl rand -base64 32`)",
        )


def _check_rotation_schedule(settings: Settings) -> None:
    """Refuse a schedule under which a verifier could meet an unknown or removed kid."""
    lead = settings.key_publish_lead_time
    max_age = settings.jwks_cache_max_age
    # RFC 7517 key sets are cached by verifiers for max-age: a key published for less than
    # that before it signs may be missing from a cached JWKS when its tokens arrive.
    if lead < max_age:
        raise ConfigurationError(
            "STS_KEY_PUBLISH_LEAD_TIME",
            f"({lead}s) must be at least the JWKS Cache-Control max-age ({max_age}s, "
            "STS_JWKS_MAX_AGE): verifiers would not know a new key when it starts signing",
        )
    # A retired key stays published until the last token it signed has expired: access
    # tokens, and status list tokens (their ``exp`` is iat + max(STS_STATUS_LIST_TTL,
    # STS_MAX_TOKEN_TTL), sts.status_list; relying parties cache them as signed JWTs).
    for name, lifetime, what in (
        ("STS_MAX_TOKEN_TTL", settings.max_token_ttl, "tokens"),
        ("STS_STATUS_LIST_TTL", settings.status_list_ttl, "status list tokens"),
    ):
        needed = lifetime + settings.clock_leeway
        if settings.key_retention < needed:
            raise ConfigurationError(
                "STS_KEY_RETENTION",
                f"({settings.key_retention}s) must be at least {name} + STS_CLOCK_LEEWAY "
                f"({needed}s): {what} would outlive their key in the JWKS",
            )
    if settings.key_active_period <= lead:
        raise ConfigurationError(
            "STS_KEY_ACTIVE_PERIOD",
            f"({settings.key_active_period}s) must be longer than "
            f"STS_KEY_PUBLISH_LEAD_TIME ({lead}s)",
        )
    if settings.key_refresh_interval > lead / 2:
        # The refresh interval is how late a replica sees a new state; keep it well inside
        # the lead time so that the schedule stays dominated by the settings above.
        raise ConfigurationError(
            "STS_KEY_REFRESH_INTERVAL",
            f"({settings.key_refresh_interval:g}s) must be at most half of "
            f"STS_KEY_PUBLISH_LEAD_TIME ({lead}s)",
        )


def decode_key_encryption_key(raw: str) -> bytes:
    """Base64 (standard or URL-safe) of exactly 32 bytes. Never echoes the value."""
    try:
        value = base64.b64decode(raw.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 (e.g. `openssl rand -base64 32`)") from None
    if len(value) != KEK_BYTES:
        raise ValueError(f"must decode to exactly {KEK_BYTES} bytes, got {len(value)}")
    return value


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


# libpq connection parameters that are secrets when given in the URL's query string.
SECRET_URL_PARAMETERS = frozenset({"password", "sslpassword"})


def _redact_url(url: str) -> str:
    """The URL with its password masked, in the user part or in the query string."""
    parts = urlsplit(url)
    if parts.password:
        url = url.replace(f":{parts.password}@", ":***@")
        parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name in SECRET_URL_PARAMETERS for name, _ in query):
        return url
    masked = [(n, "***" if n in SECRET_URL_PARAMETERS else v) for n, v in query]
    return urlunsplit(parts._replace(query=urlencode(masked, safe="*")))


def _parse_env(raw: str) -> Environment:
    if raw not in ("development", "production"):
        raise ValueError("must be 'development' or 'production'")
    return raw  # type: ignore[return-value]


def _parse_positive_int(raw: str) -> int:
    value = _parse_non_negative_int(raw)
    if value == 0:
        raise ValueError("must be a positive whole number of seconds")
    return value


def _parse_positive_count(raw: str) -> int:
    value = _parse_non_negative_int(raw)
    if value == 0:
        raise ValueError("must be a positive whole number")
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
