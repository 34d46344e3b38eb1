"""Lint flags over-broad rules, each finding with its code, line and message."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sts.cli import cli
from sts.rules.lint import lint_rules
from tests.rules.base import CLIENT_HASH, edited, parse

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
GITHUB = "    issuer: https://token.actions.githubusercontent.com"

CASES: list[tuple[str, dict[int, str | None], str]] = [
    (
        "wildcard-audience",
        {24: '      audiences: ["https://*.acme.internal"]'},
        "rules.yaml:24: rule 'deploy': [wildcard-audience] audience 'https://*.acme.internal' "
        "is a wildcard: name each service the token is for",
    ),
    (
        "missing-audience",
        {24: "      audiences: []"},
        "rules.yaml:23: rule 'deploy': [missing-audience] no audience: the token would be "
        "accepted anywhere",
    ),
    (
        "write-scope-glob-subject",
        {20: '      subject: {glob: "repo:acme/payments:*"}'},
        "rules.yaml:18: rule 'deploy': [write-scope-open-subject] write-like scope(s) "
        "deploy:write granted to a wildcard subject {'glob': 'repo:acme/payments:*'}: "
        "pin the subject exactly",
    ),
    (
        "admin-scope-no-subject",
        {20: None, 25: '      scopes: ["admin"]'},
        "rules.yaml:18: rule 'deploy': [write-scope-open-subject] write-like scope(s) admin "
        "granted to any subject (no subject condition): pin the subject exactly",
    ),
    (
        "ci-issuer-without-repository",
        {3: GITHUB, 20: '      subject: "repo:*:ref:refs/heads/main"', 21: None},
        "rules.yaml:18: rule 'deploy': [ci-without-repository] issuer 'ci' is a CI platform "
        "(token.actions.githubusercontent.com) and the rule has no repository/project "
        "condition: any repository on the platform could use it",
    ),
    (
        "github-enterprise-server-issuer-without-repository",
        {
            3: "    issuer: https://github.acme.example/_services/token",
            20: '      subject: "repo:*:ref:refs/heads/main"',
            21: None,
        },
        "rules.yaml:18: rule 'deploy': [ci-without-repository] issuer 'ci' is a CI platform "
        "(github.acme.example) and the rule has no repository/project condition",
    ),
    (
        "ci-issuer-with-wildcard-repository",
        {3: GITHUB, 20: None, 21: "      claims: {repository: {glob: '*'}, ref: refs/heads/main}"},
        "rules.yaml:18: rule 'deploy': [ci-without-repository] issuer 'ci' is a CI platform",
    ),
    *(
        (
            f"ci-issuer-with-owner-wide-repository {pattern}",
            {3: GITHUB, 20: None, 21: f"      claims: {{repository: {{glob: '{pattern}'}}}}"},
            "rules.yaml:18: rule 'deploy': [ci-without-repository] issuer 'ci' is a CI platform",
        )
        for pattern in ("acme/*", "acme/**", "acme/?*", "acme/[a-z]*", "*/payments")
    ),
    *(
        (
            f"ref-any-branch {pattern}",
            {21: f"      claims: {{repository: acme/payments, ref: {{glob: '{pattern}'}}}}"},
            f"rules.yaml:21: rule 'deploy': [ref-any-branch] ref pattern {pattern!r} admits any "
            "branch or tag of the repository (a pull request's branch included) for a deploy: "
            "pin the ref (refs/heads/main) or a literal name prefix (refs/heads/release-*)",
        )
        for pattern in (
            "*",
            "refs/*",
            "refs/heads/*",
            "refs/heads/**",
            "refs/heads/?*",
            "refs/heads/[a-z]*",
            "refs/*/main",
            "r*",
            "*main",
        )
    ),
    (
        "ref-any-branch in the subject",
        {20: '      subject: {glob: "repo:acme/payments:ref:refs/heads/*"}'},
        "rules.yaml:20: rule 'deploy': [ref-any-branch] ref pattern 'refs/heads/*' admits any",
    ),
    (
        "ref-any-branch for a deploy audience",
        {
            21: "      claims: {repository: acme/payments, ref: {glob: 'refs/heads/*'}}",
            25: '      scopes: ["status:read"]',
        },
        "rules.yaml:21: rule 'deploy': [ref-any-branch] ref pattern 'refs/heads/*' admits any",
    ),
    (
        "ref-any-branch without a ref condition on a CI platform",
        {3: GITHUB, 20: None},
        "rules.yaml:18: rule 'deploy': [ref-any-branch] a deploy on a CI platform with no ref "
        "or environment condition: a job on any branch (a pull request's included) could "
        "deploy; pin the ref or environment",
    ),
    (
        "ref-unanchored",
        {
            21: "      claims: {repository: acme/payments, ref: {glob: '*/main'}}",
            24: '      audiences: ["https://packages.acme.internal"]',
            25: '      scopes: ["packages:read"]',
        },
        "rules.yaml:21: rule 'deploy': [ref-unanchored] ref pattern '*/main' starts with a "
        "wildcard: it matches any ref that merely ends like it (*main matches "
        "refs/heads/not-main); anchor it (refs/heads/main)",
    ),
    (
        "actor-any-issuer",
        {22: "    clients: [runner]\n    actor: {required: true}"},
        "rules.yaml:23: rule 'deploy': [actor-any-issuer] the actor section names no issuer, "
        "credential or sts: a token of any trusted issuer may act",
    ),
    (
        "issuer-without-subject",
        {20: None, 21: None, 25: '      scopes: ["deploy:read"]'},
        "rules.yaml:18: rule 'deploy': [issuer-without-subject] no subject or claim condition: "
        "any token issuer 'ci' issues would match",
    ),
    (
        "long-ttl",
        {26: "      max_ttl: 7200"},
        "rules.yaml:26: rule 'deploy': [long-ttl] max_ttl 7200 s is over an hour: "
        "short-lived tokens limit a leak",
    ),
    (
        "copy-all-claims",
        {26: '      max_ttl: 300\n      copy_claims: ["*"]'},
        "rules.yaml:27: rule 'deploy': [copy-all-claims] copies every claim: "
        "name the claims the audience needs",
    ),
    (
        "introspection-any-audience",
        {10: f'    secret_hash: "{CLIENT_HASH}"\n    resource_server: true'},
        "rules.yaml:11: client 'runner': [introspection-any-audience] a resource server with "
        "no introspects may introspect every token, whatever its audience: list the "
        "audiences it serves (introspects: [...])",
    ),
    (
        "plain-http-issuer",
        {4: "    jwks_uri: http://ci.example.com/jwks"},
        "rules.yaml:4: issuer 'ci': [plain-http-issuer] jwks_uri uses plain http: tokens or "
        "keys can be forged in transit; use https",
    ),
]


@pytest.mark.parametrize(("edits", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_finding(edits: dict[int, str | None], expected: str) -> None:
    findings = [str(f) for f in lint_rules(parse(edited(edits), max_ttl=86400))]
    assert any(f.startswith(expected) for f in findings), findings


def test_a_look_alike_character_is_flagged_in_allow_and_deny_rules() -> None:
    """A Cyrillic "\u0430" in "acme/payments": another value to the evaluator. In a deny
    rule it covers nothing, so deny rules are linted for it too; the description is free
    text and is not."""
    look_alike = "acme/p\u0430yments"
    allow = lint_rules(parse(edited({21: f"      claims: {{repository: {look_alike}}}"})))
    assert [str(f) for f in allow] == [
        "rules.yaml:21: rule 'deploy': [non-ascii-value] subject_token.claims.repository "
        "'acme/p\\u0430yments' holds non-ASCII characters (U+0430 CYRILLIC SMALL LETTER A): "
        "a look-alike of an ASCII name is another value, so a rule on it matches nothing (a "
        "deny rule covers nothing); spell it in ASCII"
    ]
    deny = (
        "  - name: no-payments\n"
        "    effect: deny\n"
        "    description: bloqu\u00e9 (free text)\n"
        "    subject_token:\n"
        "      issuer: ci\n"
        f"      claims: {{repository: {look_alike}}}\n"
    )
    rules_file = parse(edited({}, append=deny))
    assert rules_file.problems == []
    findings = lint_rules(rules_file)
    assert [(f.code, f.line, f.where) for f in findings] == [
        ("non-ascii-value", 32, "rule 'no-payments'")
    ]


def test_the_base_file_has_no_findings() -> None:
    assert lint_rules(parse(edited({}))) == []


def test_a_repository_glob_with_a_literal_name_prefix_is_pinned_enough() -> None:
    edits = {3: GITHUB, 20: None, 21: "      claims: {repository: {glob: 'acme/payments-*'}}"}
    codes = [finding.code for finding in lint_rules(parse(edited(edits)))]
    assert "ci-without-repository" not in codes


REF_CLAIMS = "      claims: {repository: acme/payments, %s}"
PINNED_REFS: dict[str, dict[int, str | None]] = {
    "a literal name prefix": {21: REF_CLAIMS % "ref: {glob: 'refs/heads/release-*'}"},
    "a tag prefix": {21: REF_CLAIMS % "ref: {glob: 'refs/tags/v*'}"},
    "a GitLab name prefix": {21: REF_CLAIMS % "ref: {glob: 'release-*'}"},
    "a literal ref that looks like a glob": {21: REF_CLAIMS % "ref: 'refs/heads/*'"},
    "an environment on a CI platform": {
        3: GITHUB,
        20: '      subject: "repo:acme/payments:environment:production"',
    },
    "an environment claim on a CI platform": {
        3: GITHUB,
        20: None,
        21: REF_CLAIMS % "environment: production",
    },
    "a ref claim on a CI platform": {3: GITHUB, 20: None, 21: REF_CLAIMS % "ref: refs/heads/main"},
    "any branch, for no deploy": {
        21: REF_CLAIMS % "ref: {glob: 'refs/heads/*'}",
        24: '      audiences: ["https://packages.acme.internal"]',
        25: '      scopes: ["packages:read"]',
    },
}


@pytest.mark.parametrize("edits", PINNED_REFS.values(), ids=PINNED_REFS.keys())
def test_a_pinned_ref_is_not_flagged(edits: dict[int, str | None]) -> None:
    codes = [finding.code for finding in lint_rules(parse(edited(edits)))]
    assert not [code for code in codes if code.startswith("ref-")], codes


def test_a_resource_server_that_names_its_audiences_is_not_flagged() -> None:
    """RFC 7662 §4: one registered with ``introspects`` sees only its own tokens."""
    line = f'    secret_hash: "{CLIENT_HASH}"\n    resource_server: true'
    result = parse(edited({10: f'{line}\n    introspects: ["https://deploy.acme.internal"]'}))
    assert result.problems == []
    assert lint_rules(result) == []


def test_deny_rules_are_not_linted() -> None:
    text = edited({}, "  - name: no-prs\n    effect: deny\n    subject_token: {issuer: ci}\n")
    assert lint_rules(parse(text)) == []


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_pass_lint(example: Path) -> None:
    result = CliRunner().invoke(cli, ["rules", "lint", str(example)], env={})
    assert result.exit_code == 0, result.output
    assert result.output == f"{example}: no findings\n"


def test_lint_exits_non_zero_on_findings(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(edited({26: "      max_ttl: 7200"}))
    result = CliRunner().invoke(cli, ["rules", "lint", str(path)], env={})
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines == [
        f"{path}:26: rule 'deploy': allow.max_ttl 7200 is above the global cap "
        "STS_MAX_TOKEN_TTL=900 [invalid]",
        f"{path}:26: rule 'deploy': [long-ttl] max_ttl 7200 s is over an hour: "
        "short-lived tokens limit a leak",
        "2 findings",
    ]


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"ci-deploy.yaml", "ai-agent.yaml", "vault-workload.yaml"}
