"""Write a plan as an Alembic revision on the ``rules`` branch.

The revision is meant to be reviewed in a pull request, so it is short and literal: calls
to :mod:`sts.rules.ops` with the full desired value of each entry. ``upgrade()`` applies
exactly the plan; ``downgrade()`` puts back every ``before`` value (and deletes what the
upgrade added), so a rollback restores the previous state exactly, with new rule versions.

The first rules revision depends on the schema head (``depends_on``), so the tables exist
before it runs; later ones follow the rules head, and depend on a schema revision only
where they write a column it added (:data:`FIELD_SCHEMA`), so that a fresh ``sts db
upgrade``, which replays both branches, applies them after it. Only there: Alembic rolls
a revision back with any schema revision it depends on, and a release's schema rollback
must not undo rules changes that do not need it. ``depends_on`` rather than
``down_revision`` keeps the two branches' heads apart, so the schema can move on without
a merge revision.
"""

from __future__ import annotations

import pprint
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError

from sts.db.migrate import RULES_BRANCH
from sts.rules.plan import Change, render_plan

_PUT = {
    "issuer": "put_issuer",
    "client": "put_client",
    "credential": "put_credential",
    "rule": "put_rule",
}
_DELETE = {kind: f"delete_{kind}" for kind in _PUT}
_REFERENCED = ("issuer", "client", "credential")  # what rules name


# (kind, field) -> the schema revision that added the column a rules revision writes it to.
FIELD_SCHEMA = {
    ("client", "dpop_bound_access_tokens"): "0010_client_dpop_bound",
    ("client", "introspects"): "0011_client_introspects",
}


class RulesMigrationError(Exception):
    pass


@dataclass(frozen=True)
class NewRevision:
    revision: str
    down_revision: str | None
    depends_on: str | tuple[str, ...] | None
    path: Path
    text: str


def rules_head(script: ScriptDirectory) -> str | None:
    """The head of the rules branch, None before its first revision."""
    try:
        all_heads = script.get_heads()
    except RevisionError as exc:  # e.g. two first revisions, both labelled "rules"
        raise RulesMigrationError(f"the rules revisions do not form one branch: {exc}") from None
    heads = []
    for head in all_heads:
        revision = script.get_revision(head)
        if revision is not None and RULES_BRANCH in revision.branch_labels:
            heads.append(head)
    if len(heads) > 1:
        raise RulesMigrationError(
            f"the rules branch has several heads ({', '.join(sorted(heads))}): "
            "two revisions were written from the same state; delete one and regenerate it"
        )
    return heads[0] if heads else None


def _rules_revision_count(script: ScriptDirectory) -> int:
    return sum(RULES_BRANCH in r.branch_labels for r in script.walk_revisions())


def upgrade_calls(changes: list[Change]) -> list[str]:
    ordered = _ordered(changes, puts_first=True)
    return [_call(c.kind, c.name, c.after) for c in ordered]


def downgrade_calls(changes: list[Change]) -> list[str]:
    # The inverse of each change: an add is deleted; a change or removal is put back.
    ordered = _ordered(changes, puts_first=False)
    return [_call(c.kind, c.name, c.before) for c in ordered]


def _ordered(changes: list[Change], *, puts_first: bool) -> list[Change]:
    """Deletes before puts, so a rename that keeps a unique value (an issuer URL, a key id)
    never collides with itself; rules last among puts and first among deletes. The whole
    revision runs in one transaction, so no reader ever sees the steps in between."""

    def is_put(change: Change) -> bool:
        return (change.after if puts_first else change.before) is not None

    puts = [c for c in changes if is_put(c)]
    deletes = [c for c in changes if not is_put(c)]
    return (
        [c for c in deletes if c.kind == "rule"]
        + [c for c in deletes if c.kind in _REFERENCED]
        + [c for c in puts if c.kind in _REFERENCED]
        + [c for c in puts if c.kind == "rule"]
    )


def _call(kind: str, name: str, value: dict[str, Any] | None) -> str:
    if value is None:
        return f"ops.{_DELETE[kind]}({name!r})"
    literal = pprint.pformat(value, width=88, sort_dicts=False, indent=1)
    literal = literal.replace("\n", "\n        ")
    return f"ops.{_PUT[kind]}(\n        {name!r},\n        {literal},\n    )"


def render_revision(
    changes: list[Change],
    *,
    revision: str,
    down_revision: str | None,
    depends_on: str | tuple[str, ...] | None,
    message: str,
    source: str,
    created: datetime,
) -> str:
    plan = "\n".join(f"#   {line}" if line else "#" for line in render_plan(changes).splitlines())
    upgrades = "\n    ".join(upgrade_calls(changes))
    downgrades = "\n    ".join(downgrade_calls(changes))
    revises = down_revision or f"(none; the first rules revision, after schema {depends_on})"
    title = " ".join(message.split()).replace('"""', "'''").replace("\\", "/")
    return f'''"""{title}

Rules revision written by `sts rules migration` from {Path(source).name}.

Revision ID: {revision}
Revises: {revises}
Create Date: {created.isoformat(timespec="seconds")}
"""

from __future__ import annotations

from collections.abc import Sequence

from sts.rules import ops

revision: str = {revision!r}
down_revision: str | Sequence[str] | None = {down_revision!r}
branch_labels: str | Sequence[str] | None = {(RULES_BRANCH,) if down_revision is None else None!r}
depends_on: str | Sequence[str] | None = {depends_on!r}

# The plan this revision applies:
{plan}


def upgrade() -> None:
    {upgrades}


def downgrade() -> None:
    {downgrades}
'''


def _schema_needed(changes: list[Change]) -> str | tuple[str, ...] | None:
    """The schema revisions a later rules revision must follow: those that added a column
    its upgrade or downgrade sets (a flag set to true, a list of audiences; false and
    absent are the column's default, and ``ops`` leaves a missing column alone)."""
    needed = {
        revision
        for change in changes
        for (kind, field), revision in FIELD_SCHEMA.items()
        if change.kind == kind
        and any(values and values.get(field) for values in (change.before, change.after))
    }
    if len(needed) > 1:
        return tuple(sorted(needed))
    return needed.pop() if needed else None


def write_revision(
    changes: list[Change],
    *,
    script: ScriptDirectory,
    directory: Path,
    schema_head: str,
    message: str,
    source: str,
    created: datetime,
) -> NewRevision:
    if not changes:
        raise RulesMigrationError("no changes: the database already matches the rules file")
    down_revision = rules_head(script)
    depends_on = schema_head if down_revision is None else _schema_needed(changes)
    revision = uuid.uuid4().hex[:12]
    text = render_revision(
        changes,
        revision=revision,
        down_revision=down_revision,
        depends_on=depends_on,
        message=message,
        source=source,
        created=created,
    )
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40] or "rules"
    directory.mkdir(parents=True, exist_ok=True)
    # A sequence number first: a directory listing shows the revisions in order.
    path = directory / f"{_rules_revision_count(script) + 1:04d}_{revision}_{slug}.py"
    path.write_text(text, encoding="utf-8")
    return NewRevision(revision, down_revision, depends_on, path, text)
