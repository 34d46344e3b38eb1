from __future__ import annotations

import base64
from pathlib import Path

import pytest

from sts.errors import ConfigurationError
from sts.settings import Settings

VALID = {"STS_KEY_PASSPHRASE": "a-long-enough-passphrase"}

REFUSALS = [
    ("bad-int", {"STS_MAX_TOKEN_TTL": "ten"}, "STS_MAX_TOKEN_TTL must be a whole number"),
    ("zero-ttl", {"STS_MAX_TOKEN_TTL": "0"}, "STS_MAX_TOKEN_TTL must be a positive"),
    ("negative-leeway", {"STS_CLOCK_LEEWAY": "-1"}, "STS_CLOCK_LEEWAY must not be negative"),
    ("bad-env", {"STS_ENV": "prod"}, "STS_ENV must be 'development' or 'production'"),
    ("bad-bool", {"STS_AUTO_MIGRATE": "maybe"}, "STS_AUTO_MIGRATE must be true or false"),
    ("bad-log", {"STS_LOG_LEVEL": "LOUD"}, "STS_LOG_LEVEL must be one of"),
    ("issuer-relative", {"STS_ISSUER": "sts.example.com"}, "STS_ISSUER must be an absolute"),
    ("issuer-query", {"STS_ISSUER": "https://sts.example.com?x=1"}, "STS_ISSUER must not contain"),
    ("issuer-slash", {"STS_ISSUER": "https://sts.example.com/"}, "STS_ISSUER must not end"),
    ("bad-alg", {"STS_SIGNING_ALG": "HS256"}, "STS_SIGNING_ALG must be one of"),
    ("bad-db", {"STS_DATABASE_URL": "mysql://x/y"}, "STS_DATABASE_URL must be a sqlite"),
    ("short-pass", {"STS_KEY_PASSPHRASE": "short"}, "STS_KEY_PASSPHRASE must be at least 12"),
    (
        "short-previous-nonce-secret",
        {"STS_DPOP_NONCE_SECRET": "x" * 32, "STS_DPOP_NONCE_PREVIOUS_SECRET": "y" * 31},
        "STS_DPOP_NONCE_PREVIOUS_SECRET must be at least 32 random characters",
    ),
    (
        "previous-nonce-secret-alone",
        {"STS_DPOP_NONCE_PREVIOUS_SECRET": "y" * 32},
        "STS_DPOP_NONCE_PREVIOUS_SECRET goes with STS_DPOP_NONCE_SECRET",
    ),
    (
        "jwks-stale-below-ttl",
        {"STS_ISSUER_JWKS_CACHE_TTL": "600", "STS_ISSUER_JWKS_MAX_STALE": "300"},
        "STS_ISSUER_JWKS_MAX_STALE must be at least STS_ISSUER_JWKS_CACHE_TTL",
    ),
    *(
        (
            f"scrypt-{value}",
            {"STS_KEY_FILE_SCRYPT_LOG2_N": value},
            "STS_KEY_FILE_SCRYPT_LOG2_N must be between 15 (32 MiB) and 20 (1 GiB)",
        )
        for value in ("14", "21")
    ),
    (
        "short-nonce-secret",
        {"STS_DPOP_NONCE_SECRET": "x" * 31},
        "STS_DPOP_NONCE_SECRET must be at least 32 random characters",
    ),
    (
        "zero-nonce-lifetime",
        {"STS_DPOP_NONCE_LIFETIME": "0"},
        "STS_DPOP_NONCE_LIFETIME must be a positive",
    ),
    ("status-ttl-zero", {"STS_STATUS_LIST_TTL": "0"}, "STS_STATUS_LIST_TTL must be a positive"),
    ("status-size-odd", {"STS_STATUS_LIST_SIZE": "12"}, "STS_STATUS_LIST_SIZE must be a multiple"),
    ("status-size-huge", {"STS_STATUS_LIST_SIZE": "33554432"}, "STS_STATUS_LIST_SIZE must be"),
    ("retention", {"STS_AUDIT_RETENTION": "-1"}, "STS_AUDIT_RETENTION must not be negative"),
    ("status-block-zero", {"STS_STATUS_INDEX_BLOCK": "0"}, "STS_STATUS_INDEX_BLOCK must be a"),
    (
        "status-block-over-size",
        {"STS_STATUS_LIST_SIZE": "64", "STS_STATUS_INDEX_BLOCK": "72"},
        "STS_STATUS_INDEX_BLOCK must be between 1 and 4096, and at most STS_STATUS_LIST_SIZE",
    ),
    (
        "status-block-huge",
        {"STS_STATUS_INDEX_BLOCK": "4097"},
        "STS_STATUS_INDEX_BLOCK must be between 1 and 4096",
    ),
    (
        "checkpoint-interval-zero",
        {"STS_SQLITE_CHECKPOINT_INTERVAL": "0"},
        "STS_SQLITE_CHECKPOINT_INTERVAL must be between 0 and 3600 seconds",
    ),
    (
        "prod-http-issuer",
        {"STS_ENV": "production", "STS_ISSUER": "http://sts.example.com", **VALID},
        "STS_ISSUER must use https in production",
    ),
    (
        "prod-no-passphrase",
        {"STS_ENV": "production", "STS_ISSUER": "https://sts.example.com"},
        "STS_KEY_PASSPHRASE is required in production",
    ),
    # Unsafe rotation schedules.
    (
        "lead-shorter-than-max-age",
        {"STS_JWKS_MAX_AGE": "600", "STS_KEY_PUBLISH_LEAD_TIME": "300"},
        "STS_KEY_PUBLISH_LEAD_TIME (300s) must be at least the JWKS Cache-Control max-age "
        "(600s, STS_JWKS_MAX_AGE)",
    ),
    (
        "retention-shorter-than-token-lifetime",
        {"STS_KEY_RETENTION": "600"},
        "STS_KEY_RETENTION (600s) must be at least STS_MAX_TOKEN_TTL + STS_CLOCK_LEEWAY "
        "(930s): tokens would outlive their key in the JWKS",
    ),
    (
        "retention-counts-the-leeway",
        {"STS_KEY_RETENTION": "1000", "STS_MAX_TOKEN_TTL": "900", "STS_CLOCK_LEEWAY": "120"},
        "STS_KEY_RETENTION (1000s) must be at least STS_MAX_TOKEN_TTL + STS_CLOCK_LEEWAY (1020s)",
    ),
    (
        "retention-covers-status-list-tokens",
        {"STS_KEY_RETENTION": "3600", "STS_STATUS_LIST_TTL": "86400"},
        "STS_KEY_RETENTION (3600s) must be at least STS_STATUS_LIST_TTL + STS_CLOCK_LEEWAY "
        "(86430s): status list tokens would outlive their key in the JWKS",
    ),
    (
        "period-not-longer-than-lead",
        {"STS_KEY_ACTIVE_PERIOD": "3600", "STS_KEY_PUBLISH_LEAD_TIME": "3600"},
        "STS_KEY_ACTIVE_PERIOD (3600s) must be longer than STS_KEY_PUBLISH_LEAD_TIME (3600s)",
    ),
    (
        "refresh-too-slow-for-lead",
        {"STS_KEY_PUBLISH_LEAD_TIME": "600", "STS_KEY_REFRESH_INTERVAL": "400"},
        "STS_KEY_REFRESH_INTERVAL (400s) must be at most half of STS_KEY_PUBLISH_LEAD_TIME",
    ),
    ("bad-keystore", {"STS_KEYSTORE": "vault"}, "STS_KEYSTORE must be one of file, database"),
    (
        "database-keystore-needs-kek",
        {"STS_KEYSTORE": "database"},
        "STS_KEY_ENCRYPTION_KEY is required with STS_KEYSTORE=database",
    ),
    (
        "kek-not-base64",
        {"STS_KEY_ENCRYPTION_KEY": "not base64 at all!"},
        "STS_KEY_ENCRYPTION_KEY must be base64",
    ),
    (
        "kek-wrong-length",
        {"STS_KEY_ENCRYPTION_KEY": "c2l4dGVlbiBieXRlcyBsb25n"},
        "STS_KEY_ENCRYPTION_KEY must decode to exactly 32 bytes, got 18",
    ),
]


@pytest.mark.parametrize(
    ("environ", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_invalid_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(environ)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "issuer",
    [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
        "https://sts.example.com",
    ],
)
def test_production_accepts_https_and_loopback_http(issuer: str) -> None:
    settings = Settings.from_env({"STS_ENV": "production", "STS_ISSUER": issuer, **VALID})
    assert settings.is_production
    assert settings.issuer == issuer


def test_production_with_the_database_keystore_needs_no_passphrase() -> None:
    """With STS_KEYSTORE=database the private keys are encrypted under
    STS_KEY_ENCRYPTION_KEY; no key is encrypted with a passphrase, so production must not
    demand one (README: moving to the database keystore)."""
    kek = base64.b64encode(b"k" * 32).decode()
    settings = Settings.from_env(
        {
            "STS_ENV": "production",
            "STS_ISSUER": "https://sts.example.com",
            "STS_KEYSTORE": "database",
            "STS_KEY_ENCRYPTION_KEY": kek,
        }
    )
    assert settings.is_production
    assert settings.key_passphrase is None


def test_defaults_use_embedded_sqlite_and_auto_migrate() -> None:
    settings = Settings.from_env({})
    assert settings.uses_embedded_database
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_database_url.endswith("instance/sts.db")
    assert settings.should_auto_migrate
    assert settings.signing_alg == "ES256"


def test_external_database_is_not_auto_migrated_unless_asked() -> None:
    settings = Settings.from_env({"STS_DATABASE_URL": "postgresql+psycopg://u@h/db"})
    assert not settings.should_auto_migrate
    settings = Settings.from_env(
        {"STS_DATABASE_URL": "postgresql+psycopg://u@h/db", "STS_AUTO_MIGRATE": "true"}
    )
    assert settings.should_auto_migrate


def test_revocation_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            "STS_STATUS_LIST_TTL": "30",
            "STS_STATUS_LIST_SIZE": "1024",
            "STS_STATUS_INDEX_BLOCK": "16",
            "STS_LINEAGE_RETENTION": "3600",
            "STS_AUDIT_RETENTION": "86400",
        }
    )
    assert (settings.status_list_ttl, settings.status_list_size) == (30, 1024)
    assert settings.status_index_block == 16 and Settings().status_index_block == 64
    assert settings.describe()["STS_STATUS_INDEX_BLOCK"] == "16"
    assert (settings.lineage_retention, settings.audit_retention) == (3600, 86400)
    assert settings.describe()["STS_STATUS_LIST_TTL"] == "30"


def test_sqlite_checkpoint_interval_is_read() -> None:
    settings = Settings.from_env({"STS_SQLITE_CHECKPOINT_INTERVAL": "0.5"})
    assert settings.sqlite_checkpoint_interval == 0.5
    assert settings.describe()["STS_SQLITE_CHECKPOINT_INTERVAL"] == "0.5"
    assert Settings().sqlite_checkpoint_interval == 0.25


def test_describe_never_shows_secrets() -> None:
    settings = Settings.from_env(
        {
            "STS_KEY_PASSPHRASE": "super-secret-passphrase",
            "STS_DATABASE_URL": "postgresql+psycopg://app:dbpassword@db/sts",
        }
    )
    shown = repr(settings.describe()) + repr(settings)
    assert "super-secret-passphrase" not in shown
    assert "dbpassword" not in shown
    assert settings.describe()["STS_KEY_PASSPHRASE"] == "<set>"


def test_the_exposure_budget_and_where_it_is_counted() -> None:
    assert Settings().exposure_global_limit == 30 and Settings().redis_url is None
    assert Settings().describe()["STS_REDIS_URL"] == "<unset>"
    settings = Settings.from_env(
        {"STS_EXPOSURE_GLOBAL_LIMIT": "5", "STS_REDIS_URL": "redis://:redispw@cache:6379/2"}
    )
    assert settings.exposure_global_limit == 5
    shown = repr(settings.describe()) + repr(settings)
    assert "redispw" not in shown
    assert settings.describe()["STS_REDIS_URL"] == "redis://:***@cache:6379/2"
    with pytest.raises(ConfigurationError, match="STS_REDIS_URL"):
        Settings.from_env({"STS_REDIS_URL": "http://cache:6379"})
    with pytest.raises(ConfigurationError, match="STS_EXPOSURE_GLOBAL_LIMIT"):
        Settings.from_env({"STS_EXPOSURE_GLOBAL_LIMIT": "0"})


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://sts@db/sts?password=dbpassword",
        "postgresql+psycopg://sts:dbpassword@db/sts?sslmode=require&sslpassword=dbpassword",
    ],
)
def test_a_password_in_the_urls_query_is_never_shown(url: str) -> None:
    settings = Settings.from_env({"STS_DATABASE_URL": url})
    shown = repr(settings.describe()) + repr(settings)
    assert "dbpassword" not in shown
    assert "db/sts?" in settings.describe()["STS_DATABASE_URL"]  # the rest is kept


def test_jwks_max_age_is_derived_from_the_lead_time() -> None:
    assert Settings.from_env({}).jwks_cache_max_age == 3600  # lead 1 day: capped at an hour
    short = Settings.from_env({"STS_KEY_PUBLISH_LEAD_TIME": "600"})
    assert short.jwks_cache_max_age == 300  # half the lead time
    explicit = Settings.from_env({"STS_JWKS_MAX_AGE": "120", "STS_KEY_PUBLISH_LEAD_TIME": "600"})
    assert explicit.jwks_cache_max_age == 120
    assert explicit.describe()["STS_JWKS_MAX_AGE"] == "120"


def test_key_encryption_key_is_never_shown() -> None:
    kek = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="
    settings = Settings.from_env({"STS_KEYSTORE": "database", "STS_KEY_ENCRYPTION_KEY": kek})
    assert settings.key_encryption_key_bytes == b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"
    assert kek not in repr(settings) + repr(settings.describe())
    assert settings.describe()["STS_KEY_ENCRYPTION_KEY"] == "<set>"
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"STS_KEY_ENCRYPTION_KEY": kek[:-8] + "!!!!!!!="})
    assert kek[:20] not in str(caught.value)


def test_rules_migrations_dir_is_configurable() -> None:
    assert Settings().rules_migrations_dir == Path("migrations/versions/rules")
    settings = Settings.from_env({"STS_RULES_MIGRATIONS_DIR": "/srv/acme-sts/rules"})
    assert settings.rules_migrations_dir == Path("/srv/acme-sts/rules")
    assert settings.describe()["STS_RULES_MIGRATIONS_DIR"] == "/srv/acme-sts/rules"


def test_key_files_are_written_at_scrypts_recommended_cost_unless_told() -> None:
    """OWASP's scrypt minimum, N = 2**17 (128 MiB), for key files under the passphrase."""
    assert Settings().key_file_scrypt_log2_n == 17
    told = Settings.from_env({**VALID, "STS_KEY_FILE_SCRYPT_LOG2_N": "15"})
    assert told.key_file_scrypt_log2_n == 15
    assert told.describe()["STS_KEY_FILE_SCRYPT_LOG2_N"] == "15"
