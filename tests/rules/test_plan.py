"""A plan names every field that changes, so a reviewer reads what a revision applies."""

from __future__ import annotations

from typing import Any

import pytest

from sts.rules.document import empty_state
from sts.rules.plan import diff_states, render_plan


def deny(claims: dict[str, Any]) -> dict[str, Any]:
    return {"effect": "deny", "subject_token": {"issuer": "ci", "claims": claims}}


def plan(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    current, desired = empty_state(), empty_state()
    if before is not None:
        current["rule"]["no-prs"] = before
    if after is not None:
        desired["rule"]["no-prs"] = after
    return render_plan(diff_states(current, desired))


CASES = {
    # A deny rule that covered every pull_request* event, changed to one on a claim named
    # "event_name.glob" that no token has: it now covers nothing, and the plan showed
    # "~ rule no-prs" with no field at all.
    "a glob becomes a claim with a dot in its name": (
        deny({"event_name": {"glob": "pull_request*"}}),
        deny({"event_name.glob": "pull_request*"}),
        "~ rule no-prs\n"
        '    subject_token.claims.event_name.glob: "pull_request*" -> (absent)\n'
        '    subject_token.claims["event_name.glob"]: (absent) -> "pull_request*"\n',
    ),
    "a claim named by a URI": (
        None,
        deny({"https://acme.example/role": "admin"}),
        "+ rule no-prs\n"
        '    effect: "deny"\n'
        '    subject_token.claims["https://acme.example/role"]: "admin"\n'
        '    subject_token.issuer: "ci"\n',
    ),
}


@pytest.mark.parametrize(("before", "after", "expected"), CASES.values(), ids=CASES.keys())
def test_every_changed_field_is_named_once(
    before: dict[str, Any] | None, after: dict[str, Any] | None, expected: str
) -> None:
    assert plan(before, after).startswith(expected)


INVISIBLE = {
    "zero-width space": ("\u200b", "\\u200b"),
    "right-to-left override": ("\u202e", "\\u202e"),
    "no-break space": ("\u00a0", "\\u00a0"),
}


@pytest.mark.parametrize(("char", "shown"), INVISIBLE.values(), ids=INVISIBLE.keys())
def test_a_character_nobody_can_see_is_shown_escaped(char: str, shown: str) -> None:
    """The evaluator compares exactly: a deny rule on "acme/payments" + U+200B covers no
    token of acme/payments, while the plan showed the two values alike."""
    text = plan(deny({"repository": "acme/payments"}), deny({"repository": f"acme/payments{char}"}))
    assert (
        f'    subject_token.claims.repository: "acme/payments" -> "acme/payments{shown}"\n' in text
    )
    assert char not in text


def test_printable_unicode_is_shown_as_it_is() -> None:
    text = plan(None, {**deny({"team": "équipe-sécurité"}), "description": "für Prüfer"})
    assert '    subject_token.claims.team: "équipe-sécurité"\n' in text
    assert '    description: "für Prüfer"\n' in text
