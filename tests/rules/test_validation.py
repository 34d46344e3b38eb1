"""Loading a rules file reports every problem, each with file, line and entry name."""

from __future__ import annotations

import pytest

from tests.rules.base import CLIENT_HASH, edited, parse

PLAINTEXT = "hunter2-hunter2-hunter2-hunter2"
GOOD_JWK = (  # RFC 7515 Appendix A.3's P-256 public key
    "{kty: EC, crv: P-256, x: f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU, "
    "y: x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0}"
)
API_KEY = "stsk_" + "A" * 50

CASES: list[tuple[str, dict[int, str | None], str, str]] = [
    (
        "unknown-key",
        {6: "    algorithms: [ES256]\n    colour: blue"},
        "",
        "rules.yaml:7: issuer 'ci': unknown key 'colour' "
        "(allowed: algorithms, audiences, issuer, jwks, jwks_uri, name)",
    ),
    (
        "unknown-key-in-rule",
        {26: "      max_ttl: 300\n      max_tll: 60"},
        "",
        "rules.yaml:27: rule 'deploy': allow: unknown key(s) max_tll",
    ),
    (
        "unknown-top-level-key",
        {},
        "policies: []\n",
        "rules.yaml:27: rules file: unknown key 'policies' "
        "(expected: issuers, clients, credentials, rules)",
    ),
    (
        "missing-required-field",
        {5: None},
        "",
        "rules.yaml:2: issuer 'ci': missing required field 'audiences'",
    ),
    (
        "missing-name",
        {17: "  - description: no name"},
        "",
        "rules.yaml:17: rules[0]: missing required field 'name'",
    ),
    (
        "a-date-as-description",
        {17: "  - name: deploy\n    description: 2024-01-01"},
        "",
        "rules.yaml:18: rule 'deploy': description must be a string (quote it)",
    ),
    (
        "missing-allow",
        {23: None, 24: None, 25: None, 26: None},
        "",
        "rules.yaml:17: rule 'deploy': allow is required for an allow rule",
    ),
    (
        "bad-pattern",
        {20: '      subject: {regex: "repo:.*"}'},
        "",
        "rules.yaml:20: rule 'deploy': subject_token.subject must be a string (equals), "
        "a list (one of), or {glob: PATTERN}",
    ),
    (
        "bad-claim-pattern",
        {21: "      claims: {repository: {glob: ''}}"},
        "",
        "rules.yaml:21: rule 'deploy': subject_token.claims.repository must be a string",
    ),
    (
        "bad-scope",
        {25: '      scopes: ["deploy write"]'},
        "",
        "rules.yaml:25: rule 'deploy': allow.scopes: 'deploy write' is not a valid scope token",
    ),
    (
        "ttl-above-cap",
        {26: "      max_ttl: 7200"},
        "",
        "rules.yaml:26: rule 'deploy': allow.max_ttl 7200 is above the global cap "
        "STS_MAX_TOKEN_TTL=900",
    ),
    (
        "plaintext-client-secret",
        {10: f'    secret_hash: "{PLAINTEXT}"'},
        "",
        "rules.yaml:10: client 'runner': secret_hash must be a sha256:<64 hex digits> hash, "
        "not a plaintext secret: store the output of `sts clients hash-secret`",
    ),
    (
        "plaintext-secret-key",
        {10: f'    client_secret: "{PLAINTEXT}"'},
        "",
        "rules.yaml:10: client 'runner': unknown key 'client_secret': plaintext secrets never "
        "go in the rules file, only secret_hash",
    ),
    (
        "api-key-as-credential-hash",
        {14: f'    secret_hash: "{API_KEY}"'},
        "",
        "rules.yaml:14: credential 'agent-key': secret_hash must be a sha256:<64 hex digits> "
        "hash, not an API key: store the secret_hash printed by `sts credentials new`",
    ),
    (
        "unknown-issuer",
        {19: "      issuer: gitlab"},
        "",
        "rules.yaml:19: rule 'deploy': subject_token.issuer: no issuer named 'gitlab' in this file",
    ),
    (
        "unknown-credential",
        {19: "      credential: ghost"},
        "",
        "rules.yaml:19: rule 'deploy': subject_token.credential: no credential named 'ghost' "
        "in this file",
    ),
    (
        "unknown-client",
        {22: "    clients: [runner, nobody]"},
        "",
        "rules.yaml:22: rule 'deploy': clients: no client 'nobody' in this file",
    ),
    (
        "duplicate-rule",
        {},
        "  - name: deploy\n    effect: deny\n    subject_token: {issuer: ci}\n",
        "rules.yaml:27: rule 'deploy': duplicate rule name 'deploy' (first defined on line 17)",
    ),
    (
        "duplicate-client",
        {10: f'    secret_hash: "{CLIENT_HASH}"\n  - client_id: runner'},
        "",
        "rules.yaml:11: client 'runner': duplicate client client_id 'runner' "
        "(first defined on line 8)",
    ),
    (
        "duplicate-issuer",
        {7: "  - name: ci\n    issuer: https://other.example.com\nclients:"},
        "",
        "rules.yaml:7: issuer 'ci': duplicate issuer name 'ci' (first defined on line 2)",
    ),
    (
        "duplicate-yaml-key",
        {26: "      max_ttl: 300\n      max_ttl: 600"},
        "",
        "rules.yaml:27: rules file: duplicate key 'max_ttl' (YAML keeps only the last one)",
    ),
    (
        "symmetric-algorithm",
        {6: "    algorithms: [HS256]"},
        "",
        "rules.yaml:6: issuer 'ci': algorithms: HS256 not allowed (asymmetric only:",
    ),
    (
        "both-jwks-and-uri",
        {4: "    jwks_uri: https://ci.example.com/jwks\n    jwks: {keys: []}"},
        "",
        "rules.yaml:2: issuer 'ci': needs exactly one of jwks_uri or jwks",
    ),
    (
        "private-key-in-jwks",
        {4: "    jwks: {keys: [{kty: EC, crv: P-256, x: a, y: b, d: secret}]}"},
        "",
        "rules.yaml:4: issuer 'ci': jwks holds private key material (d): publish public keys only",
    ),
    (
        "issuer-key-off-its-curve",
        {4: "    jwks: {keys: [{kty: EC, crv: P-384, x: AA, y: AA}]}"},
        "",
        "rules.yaml:4: issuer 'ci': jwks.keys[0] does not import: ValueError: Invalid EC key.",
    ),
    (
        "client-key-of-an-unknown-curve",
        {
            9: "    auth_method: private_key_jwt",
            10: f"    jwks: {{keys: [{GOOD_JWK}, {{kty: EC, crv: BP-256, x: AA, y: AA}}]}}",
        },
        "",
        "rules.yaml:10: client 'runner': jwks.keys[1] does not import: KeyError: 'BP-256'",
    ),
    *(
        (
            f"jwks-holds-a-yaml-{kind}",
            {4: f"    jwks: {{keys: [{GOOD_JWK[:-1]}, extra: {value}}}]}}"},
            "",
            f"rules.yaml:4: issuer 'ci': jwks.keys[0].extra is a YAML {kind}, "
            "not a JSON value: quote it",
        )
        for kind, value in (
            ("date", "2026-01-01"),
            ("datetime", "2026-01-01T00:00:00Z"),
            ("bytes", "!!binary aGVsbG8="),
            ("set", "!!set {a}"),
            ("float", ".nan"),
        )
    ),
    (
        "not-yaml",
        {20: '      subject: "unterminated'},
        "",
        "rules.yaml:24: rules file: not valid YAML:",
    ),
]


@pytest.mark.parametrize(
    ("edits", "append", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_problem_is_reported_with_its_line(
    edits: dict[int, str | None], append: str, expected: str
) -> None:
    result = parse(edited(edits, append))
    messages = [str(problem) for problem in result.problems]
    assert any(message.startswith(expected) for message in messages), messages


def test_the_base_file_is_valid() -> None:
    result = parse(edited({}))
    assert result.problems == []
    assert set(result.state["rule"]) == {"deploy"}


def test_every_problem_is_reported_not_just_the_first() -> None:
    text = edited(
        {
            5: None,
            10: f'    secret_hash: "{PLAINTEXT}"',
            19: "      issuer: gitlab",
            26: "      max_ttl: 7200",
        }
    )
    messages = [str(p) for p in parse(text).problems]
    assert messages == [
        "rules.yaml:2: issuer 'ci': missing required field 'audiences'",
        "rules.yaml:9: client 'runner': secret_hash must be a sha256:<64 hex digits> hash, "
        "not a plaintext secret: store the output of `sts clients hash-secret`",
        "rules.yaml:18: rule 'deploy': subject_token.issuer: no issuer named 'gitlab' in this file",
        "rules.yaml:25: rule 'deploy': allow.max_ttl 7200 is above the global cap "
        "STS_MAX_TOKEN_TTL=900",
    ]


def test_a_plaintext_secret_is_never_echoed() -> None:
    problems = parse(edited({10: f'    secret_hash: "{PLAINTEXT}"'})).problems
    assert problems and all(PLAINTEXT not in str(p) for p in problems)


def test_every_problem_of_one_rule_is_reported() -> None:
    text = edited(
        {
            20: '      subject: {regex: "repo:.*"}',
            22: "    clients: []",
            26: "      max_ttl: -5\n    colour: blue",
        }
    )
    assert [str(p) for p in parse(text).problems] == [
        "rules.yaml:27: rule 'deploy': rule: unknown key(s) colour",
        "rules.yaml:20: rule 'deploy': subject_token.subject must be a string (equals), "
        "a list (one of), or {glob: PATTERN}",
        "rules.yaml:22: rule 'deploy': clients must not be empty",
        "rules.yaml:26: rule 'deploy': allow.max_ttl must be a positive number of seconds",
    ]


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        (
            {9: None},
            ["rules.yaml:8: client 'runner': missing required field 'auth_method'"],
        ),
        (
            {9: "    auth_method: private_key_jwt"},
            [
                "rules.yaml:10: client 'runner': secret_hash is not used by private_key_jwt",
                "rules.yaml:8: client 'runner': missing required field 'jwks' for private_key_jwt",
            ],
        ),
        (
            {9: "    auth_method: client_secret_jwt"},
            [
                "rules.yaml:9: client 'runner': auth_method must be one of client_secret_basic, "
                "client_secret_post, private_key_jwt, none"
            ],
        ),
    ],
    ids=["missing", "private-key-jwt-with-secret", "unsupported"],
)
def test_client_auth_method(edits: dict[int, str | None], expected: list[str]) -> None:
    assert [str(p) for p in parse(edited(edits)).problems] == expected


def test_a_client_with_public_keys_that_import_is_valid() -> None:
    text = edited({9: "    auth_method: private_key_jwt", 10: f"    jwks: {{keys: [{GOOD_JWK}]}}"})
    result = parse(text)
    assert result.problems == []
    assert result.state["client"]["runner"]["jwks"]["keys"][0]["crv"] == "P-256"


def test_a_client_bound_to_dpop() -> None:
    """``dpop_bound_access_tokens`` (RFC 9449 §5.2): a boolean, false by default and then
    left out of the client's fields (as the database's state leaves it out)."""
    line = f'    secret_hash: "{CLIENT_HASH}"'
    bound = parse(edited({10: f"{line}\n    dpop_bound_access_tokens: true"}))
    assert bound.problems == []
    assert bound.state["client"]["runner"]["dpop_bound_access_tokens"] is True
    unbound = parse(edited({10: f"{line}\n    dpop_bound_access_tokens: false"}))
    assert unbound.state["client"]["runner"] == parse(edited({})).state["client"]["runner"]
    assert "dpop_bound_access_tokens" not in unbound.state["client"]["runner"]
    wrong = parse(edited({10: f'{line}\n    dpop_bound_access_tokens: "yes"'}))
    assert [str(p) for p in wrong.problems] == [
        "rules.yaml:11: client 'runner': dpop_bound_access_tokens must be true or false"
    ]


def test_a_client_that_does_not_authenticate_cannot_be_bound_to_dpop() -> None:
    """Its requests could leave its client_id out: the rule must require DPoP instead."""
    text = edited(
        {
            9: "    auth_method: none",
            10: "    dpop_bound_access_tokens: true",
        }
    )
    assert [str(p) for p in parse(text).problems] == [
        "rules.yaml:10: client 'runner': dpop_bound_access_tokens needs a client that "
        "authenticates (not auth_method none); require DPoP in the rule instead "
        "(allow.sender_constraint: dpop)"
    ]


def test_a_resource_server_registered_with_the_audiences_it_introspects() -> None:
    """``introspects`` (RFC 7662 §2.2): the audiences, kept as written; left out of the
    client's fields when absent (every token, as the database's state leaves out NULL)."""
    line = f'    secret_hash: "{CLIENT_HASH}"\n    resource_server: true'
    served = parse(edited({10: f'{line}\n    introspects: ["https://deploy.acme.internal"]'}))
    assert served.problems == []
    assert served.state["client"]["runner"]["introspects"] == ["https://deploy.acme.internal"]
    every = parse(edited({10: line}))
    assert every.problems == []
    assert "introspects" not in every.state["client"]["runner"]


INTROSPECTS_REFUSALS: list[tuple[str, str, str]] = [
    (
        "not-a-resource-server",
        '    introspects: ["https://deploy.acme.internal"]',
        "rules.yaml:11: client 'runner': introspects needs resource_server: true",
    ),
    (
        "empty",
        "    resource_server: true\n    introspects: []",
        "rules.yaml:12: client 'runner': introspects must name at least one audience "
        "(leave it out to let the resource server introspect every token)",
    ),
    (
        "not-a-list",
        '    resource_server: true\n    introspects: "https://deploy.acme.internal"',
        "rules.yaml:12: client 'runner': introspects must be a list of audiences "
        "(non-empty strings)",
    ),
    (
        "not-strings",
        "    resource_server: true\n    introspects: [42, {glob: x}]",
        "rules.yaml:12: client 'runner': introspects must be a list of audiences "
        "(non-empty strings)",
    ),
    (
        "wildcard",
        '    resource_server: true\n    introspects: ["https://*.acme.internal", "https://v?"]',
        "rules.yaml:12: client 'runner': introspects: 'https://*.acme.internal' is a "
        "wildcard; audiences are compared exactly: name each audience the resource server "
        "serves",
    ),
]


@pytest.mark.parametrize(
    ("added", "expected"),
    [c[1:] for c in INTROSPECTS_REFUSALS],
    ids=[c[0] for c in INTROSPECTS_REFUSALS],
)
def test_introspects_refusals(added: str, expected: str) -> None:
    result = parse(edited({10: f'    secret_hash: "{CLIENT_HASH}"\n{added}'}))
    assert str(result.problems[0]) == expected
    assert "runner" not in result.state["client"]


def _aliases(levels: int) -> str:
    """A rule whose description is ten aliases of ten aliases ...: 10**levels values."""
    lines = ["    description:", '      - &a0 ["xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx"]']
    lines += [f"      - &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("append", "expected"),
    [
        (
            "    description: " + "[" * 5000 + "]" * 5000 + "\n",
            "rules.yaml:27: rules file: not valid YAML: nested deeper than 64 levels",
        ),
        (
            _aliases(6),
            "rules.yaml:1: rules file: not valid YAML: more than 1000000 values once its "
            "aliases are expanded",
        ),
    ],
    ids=["nested-5000-deep", "aliases-expanding-to-4e6-values"],
)
def test_a_huge_document_is_a_problem_not_a_crash(append: str, expected: str) -> None:
    """5000 brackets were a RecursionError (a traceback from `sts rules lint`); aliases of
    aliases took minutes and gigabytes to copy, from a file of a few hundred bytes."""
    messages = [str(problem) for problem in parse(edited({}, append)).problems]
    assert messages == [expected]


def test_a_few_aliases_are_still_read() -> None:
    append = _aliases(2)
    messages = [str(problem) for problem in parse(edited({}, append)).problems]
    assert messages == ["rules.yaml:27: rule 'deploy': description must be a string (quote it)"]
