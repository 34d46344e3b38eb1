"""A valid rules file, line by line, that the validation and lint tests edit one line at a time
(so each expected message can name its exact line)."""

from __future__ import annotations

from sts.credentials import hash_secret
from sts.rules.document import RulesFile, parse_rules_text

FILE = "rules.yaml"
CLIENT_HASH = hash_secret("runner-secret-0123456789abcdef")
KEY_HASH = hash_secret("stsk_not-a-real-key")

BASE_LINES = {
    1: "issuers:",
    2: "  - name: ci",
    3: "    issuer: https://ci.example.com",
    4: "    jwks_uri: https://ci.example.com/jwks",
    5: '    audiences: ["https://sts.test"]',
    6: "    algorithms: [ES256]",
    7: "clients:",
    8: "  - client_id: runner",
    9: "    auth_method: client_secret_basic",
    10: f'    secret_hash: "{CLIENT_HASH}"',
    11: "credentials:",
    12: "  - name: agent-key",
    13: "    key_id: abcDEF123456",
    14: f'    secret_hash: "{KEY_HASH}"',
    15: "    owner_subject: team-alpha",
    16: "rules:",
    17: "  - name: deploy",
    18: "    subject_token:",
    19: "      issuer: ci",
    20: '      subject: "repo:acme/payments:ref:refs/heads/main"',
    21: "      claims: {repository: acme/payments}",
    22: "    clients: [runner]",
    23: "    allow:",
    24: '      audiences: ["https://deploy.acme.internal"]',
    25: '      scopes: ["deploy:write"]',
    26: "      max_ttl: 300",
}


def edited(edits: dict[int, str | None], append: str = "") -> str:
    """The base file with lines replaced (None deletes a line) and text appended."""
    lines = []
    for number, line in BASE_LINES.items():
        replacement = edits.get(number, line)
        if replacement is not None:
            lines.append(replacement)
    return "\n".join(lines) + "\n" + append


def parse(text: str, max_ttl: int = 900) -> RulesFile:
    return parse_rules_text(text, FILE, max_ttl=max_ttl)
