"""The difference between two states (the database and a rules file), field by field.

A plan is a value: a list of :class:`Change`. ``render_plan`` prints it for a pull
request; :mod:`sts.rules.migration` turns it into a revision whose ``upgrade()`` applies
exactly these changes and whose ``downgrade()`` restores each ``before``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sts.rules.document import KINDS, State

Action = Literal["add", "change", "remove"]
_MARK = {"add": "+", "change": "~", "remove": "-"}


@dataclass(frozen=True)
class FieldChange:
    path: str  # dotted: allow.max_ttl, subject_token.claims.ref
    before: Any  # MISSING when the field is new
    after: Any  # MISSING when the field is removed


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Change:
    action: Action
    kind: str  # issuer | client | credential | rule
    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    fields: tuple[FieldChange, ...]


def diff_states(current: State, desired: State) -> list[Change]:
    """Changes that turn ``current`` into ``desired``, in kind order, names sorted."""
    changes: list[Change] = []
    for kind in KINDS:
        have, want = current.get(kind, {}), desired.get(kind, {})
        for name in sorted(set(have) | set(want)):
            before, after = have.get(name), want.get(name)
            if before == after:
                continue
            action: Action = "add" if before is None else "remove" if after is None else "change"
            fields = tuple(_diff_fields(flatten(before or {}), flatten(after or {})))
            changes.append(Change(action, kind, name, before, after, fields))
    return changes


# A key shown bare in a dotted path; any other (a claim named "event_name.glob", or a URI
# such as "https://acme.example/role") is shown quoted: claims["event_name.glob"].
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted paths; lists and scalars are leaves. Each path names one
    field only: a claim named ``ref.glob`` (equals) and a glob on ``ref`` were one path,
    ``claims.ref.glob``, and a change from one to the other showed no field at all."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if _BARE_KEY.fullmatch(key):
            path = f"{prefix}.{key}" if prefix else key
        else:
            path = f"{prefix}[{json.dumps(key, ensure_ascii=False)}]"
        if isinstance(item, Mapping) and item and key != "jwks":
            flat.update(flatten(item, path))
        else:
            flat[path] = item
    return flat


def _diff_fields(before: dict[str, Any], after: dict[str, Any]) -> list[FieldChange]:
    return [
        FieldChange(path, before.get(path, MISSING), after.get(path, MISSING))
        for path in sorted(set(before) | set(after))
        if before.get(path, MISSING) != after.get(path, MISSING)
    ]


def render_value(value: Any) -> str:
    if value is MISSING:
        return "(absent)"
    return visible(json.dumps(value, sort_keys=True, ensure_ascii=False))


def visible(text: str) -> str:
    """``text`` with every character a reviewer cannot see escaped (``\\u200b``): zero-width
    characters, bidirectional overrides, spaces other than U+0020. The evaluator compares
    exactly, so ``acme/payments`` and ``acme/payments\\u200b`` are two values, and a deny
    rule on the second covers nothing; shown raw, a plan showed them alike."""
    return "".join(
        ch
        if ch.isprintable()
        else f"\\u{ord(ch):04x}"
        if ord(ch) <= 0xFFFF
        else f"\\U{ord(ch):08x}"
        for ch in text
    )


def render_plan(changes: list[Change]) -> str:
    """A plan for humans (and pull requests): one block per entry, one line per field."""
    if not changes:
        return "No changes: the database matches the rules file.\n"
    lines: list[str] = []
    for change in changes:
        lines.append(f"{_MARK[change.action]} {change.kind} {visible(change.name)}")
        for item in change.fields:
            path = visible(item.path)
            if change.action == "add":
                lines.append(f"    {path}: {render_value(item.after)}")
            elif change.action == "remove":
                lines.append(f"    {path}: {render_value(item.before)}")
            else:
                lines.append(
                    f"    {path}: {render_value(item.before)} -> {render_value(item.after)}"
                )
    counts = {action: sum(c.action == action for c in changes) for action in _MARK}
    lines.append("")
    lines.append(
        f"Plan: {counts['add']} to add, {counts['change']} to change, {counts['remove']} to remove."
    )
    return "\n".join(lines) + "\n"
