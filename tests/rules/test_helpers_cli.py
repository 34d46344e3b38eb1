"""`sts credentials new` and `sts clients hash-secret` print what goes into the rules file."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from sts.cli import cli
from sts.credentials import MIN_CLIENT_SECRET_LENGTH, hash_secret, parse_api_key
from sts.rules.document import parse_rules_text


def test_credentials_new_prints_the_key_once_and_the_entry() -> None:
    result = CliRunner().invoke(cli, ["credentials", "new", "agent-key", "--owner", "team-alpha"])
    assert result.exit_code == 0, result.output
    key = result.stderr.splitlines()[1]
    entry = yaml.safe_load(result.stdout)
    assert entry == [
        {
            "name": "agent-key",
            "key_id": parse_api_key(key),
            "secret_hash": hash_secret(key),
            "owner_subject": "team-alpha",
        }
    ]
    assert key not in result.stdout  # stdout is the file entry: it never holds the key
    document = parse_rules_text(
        result.stdout.replace("- ", "credentials:\n- ", 1), "f", max_ttl=900
    )
    assert document.problems == []


def test_hash_secret_reads_stdin() -> None:
    secret = "s" * MIN_CLIENT_SECRET_LENGTH
    result = CliRunner().invoke(cli, ["clients", "hash-secret"], input=secret + "\n")
    assert result.exit_code == 0
    assert result.stdout == hash_secret(secret) + "\n"


def test_hash_secret_refuses_a_short_secret() -> None:
    secret = "s" * (MIN_CLIENT_SECRET_LENGTH - 1)
    result = CliRunner().invoke(cli, ["clients", "hash-secret"], input=secret + "\n")
    assert result.exit_code == 1
    assert f"at least {MIN_CLIENT_SECRET_LENGTH} characters" in result.output
    assert secret not in result.output


def test_credentials_new_refuses_an_empty_name_or_owner() -> None:
    for args in (["", "--owner", "team-alpha"], ["agent-key", "--owner", " "]):
        result = CliRunner().invoke(cli, ["credentials", "new", *args])
        assert result.exit_code == 2, result.output
        assert "NAME and --owner take non-empty values" in result.output
        assert "stsk_" not in result.output  # no key printed
