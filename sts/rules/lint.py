"""Lint a rules file for over-broad rules: valid, but granting more than anyone meant.

Each check names a classic misconfiguration; ``sts rules lint`` exits non-zero on any
finding, so CI can gate a rules change on it. Deny rules only narrow, so they are exempt.
Lint reads the raw entries, so it also works on a file that does not validate.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sts.rules.document import RulesFile

ONE_HOUR = 3600
# A scope whose last segment is a write-like action (deploy:write, repo.admin, delete, *).
WRITE_SCOPE = re.compile(
    r"(^|[:./_-])(write|admin|delete|manage|push|create|update|owner|root|all|\*)$",
    re.IGNORECASE,
)
# Issuers whose tokens any repository or project on the platform can obtain: GitHub
# Actions (github.com, and GitHub Enterprise Cloud's per-enterprise issuer under the same
# host), GitLab (gitlab.com and instances named so), and GitHub Enterprise Server, whose
# issuer is https://HOSTNAME/_services/token on the customer's own host.
CI_ISSUER_HOSTS = ("token.actions.githubusercontent.com", "gitlab")
CI_ISSUER_PATHS = ("/_services/token",)
# Claims (or subject prefixes) that pin a token to one repository or project.
REPOSITORY_CLAIMS = ("repository", "repository_id", "project_path", "project_id")
REPOSITORY_SUBJECT_PREFIXES = ("repo:", "project_path:")
GLOB_CHARS = re.compile(r"[*?\[]")
# What a rule's grant is for: a deploy (a write-like scope, or "deploy" in a scope or audience).
DEPLOY = re.compile(r"deploy", re.IGNORECASE)
# Claims that pin a CI token to one deployment environment, whose protection rules
# (GitHub: deployment branches) pin the ref themselves.
ENVIRONMENT_CLAIMS = ("environment",)


@dataclass(frozen=True)
class Finding:
    code: str
    file: str
    line: int
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.where}: [{self.code}] {self.message}"


def lint_rules(rules_file: RulesFile) -> list[Finding]:
    findings = (
        list(_lint_issuers(rules_file))
        + list(_lint_clients(rules_file))
        + list(_lint_rules(rules_file))
        + list(_lint_non_ascii(rules_file))
    )
    return sorted(findings, key=lambda f: (f.line, f.code))


# The parts of a rule that name identities, audiences and scopes (not its description).
MATCHED_PARTS = ("subject_token", "clients", "actor", "allow")


def _lint_non_ascii(rules_file: RulesFile) -> Iterator[Finding]:
    """A value with a character outside ASCII in what a rule matches or grants: CI
    platforms' repository and ref names, client ids, audiences and scopes are ASCII in
    practice, and a look-alike (a Cyrillic "\u0430" in "acme/p\u0430yments") is another value to
    the evaluator, which compares exactly. An allow rule on it grants nothing, a deny rule
    on it **covers nothing**: the plan shows it like the ASCII one. Allow and deny rules."""
    for (kind, name), entry in rules_file.entries.items():
        if kind != "rule":
            continue
        for part in MATCHED_PARTS:
            for path, value in _strings(entry.get(part), part):
                odd = sorted({ch for ch in value if not ch.isascii()})
                if odd:
                    names = ", ".join(
                        f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}" for ch in odd[:3]
                    )
                    yield Finding(
                        "non-ascii-value",
                        rules_file.path,
                        rules_file.line_of("rule", name, path),
                        f"rule {name!r}",
                        f"{path} '{value.encode('ascii', 'backslashreplace').decode()}' holds "
                        f"non-ASCII characters ({names}): a look-alike of an ASCII name is "
                        "another value, so a rule on it matches nothing (a deny rule covers "
                        "nothing); spell it in ASCII",
                    )


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in ``value`` (keys included), with the dotted path of where it is."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                yield from _strings(key, path)
                yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, path)


def _lint_issuers(rules_file: RulesFile) -> Iterator[Finding]:
    for (kind, name), entry in rules_file.entries.items():
        if kind != "issuer":
            continue
        for key in ("issuer", "jwks_uri"):
            value = entry.get(key)
            if isinstance(value, str) and urlsplit(value).scheme == "http":
                yield Finding(
                    "plain-http-issuer",
                    rules_file.path,
                    entry.line_of(key),
                    f"issuer {name!r}",
                    f"{key} uses plain http: tokens or keys can be forged in transit; use https",
                )


def _lint_clients(rules_file: RulesFile) -> Iterator[Finding]:
    for (kind, name), entry in rules_file.entries.items():
        if kind != "client" or entry.get("resource_server") is not True:
            continue
        if "introspects" not in entry:
            # RFC 7662 §4: a resource server should learn only about the tokens meant for
            # it, not about every token of every service.
            yield Finding(
                "introspection-any-audience",
                rules_file.path,
                entry.line_of("resource_server"),
                f"client {name!r}",
                "a resource server with no introspects may introspect every token, whatever "
                "its audience: list the audiences it serves (introspects: [...])",
            )


def _lint_rules(rules_file: RulesFile) -> Iterator[Finding]:
    issuer_urls = {
        name: str(entry.get("issuer", ""))
        for (kind, name), entry in rules_file.entries.items()
        if kind == "issuer"
    }
    for (kind, name), entry in rules_file.entries.items():
        if kind != "rule" or entry.get("effect", "allow") != "allow":
            continue
        where = f"rule {name!r}"

        def finding(
            code: str, path: str, message: str, where: str = where, name: str = name
        ) -> Finding:
            return Finding(
                code, rules_file.path, rules_file.line_of("rule", name, path), where, message
            )

        subject_spec = entry.get("subject_token")
        subject = subject_spec if isinstance(subject_spec, Mapping) else {}
        grant_spec = entry.get("allow")
        grant = grant_spec if isinstance(grant_spec, Mapping) else {}

        audiences = grant.get("audiences")
        if not isinstance(audiences, list) or not audiences:
            yield finding(
                "missing-audience", "allow", "no audience: the token would be accepted anywhere"
            )
        else:
            for audience in audiences:
                if isinstance(audience, str) and GLOB_CHARS.search(audience):
                    yield finding(
                        "wildcard-audience",
                        "allow.audiences",
                        f"audience {audience!r} is a wildcard: name each service the token is for",
                    )

        scopes = [s for s in grant.get("scopes", []) or [] if isinstance(s, str)]
        write_scopes = [s for s in scopes if s in ("*", "write") or WRITE_SCOPE.search(s)]
        if write_scopes and _subject_is_open(subject):
            yield finding(
                "write-scope-open-subject",
                "subject_token",
                f"write-like scope(s) {', '.join(write_scopes)} granted to "
                f"{_describe_subject(subject)}: pin the subject exactly",
            )

        issuer_name = subject.get("issuer")
        if isinstance(issuer_name, str):
            url = issuer_urls.get(issuer_name, "")
            if _is_ci_issuer(url) and not _pins_repository(subject):
                yield finding(
                    "ci-without-repository",
                    "subject_token",
                    f"issuer {issuer_name!r} is a CI platform ({urlsplit(url).hostname}) and the "
                    "rule has no repository/project condition: any repository on the platform "
                    "could use it",
                )
            elif not _has_condition(subject):
                yield finding(
                    "issuer-without-subject",
                    "subject_token",
                    f"no subject or claim condition: any token issuer {issuer_name!r} issues "
                    "would match",
                )

        deploy = bool(write_scopes) or any(
            isinstance(value, str) and DEPLOY.search(value)
            for value in [*scopes, *(audiences if isinstance(audiences, list) else [])]
        )
        for pattern in _ref_patterns(subject):
            if deploy and _ref_glob_is_open(pattern):
                yield finding(
                    "ref-any-branch",
                    _ref_path(subject),
                    f"ref pattern {pattern!r} admits any branch or tag of the repository (a "
                    "pull request's branch included) for a deploy: pin the ref "
                    "(refs/heads/main) or a literal name prefix (refs/heads/release-*)",
                )
            elif GLOB_CHARS.match(pattern):
                yield finding(
                    "ref-unanchored",
                    _ref_path(subject),
                    f"ref pattern {pattern!r} starts with a wildcard: it matches any ref that "
                    "merely ends like it (*main matches refs/heads/not-main); anchor it "
                    "(refs/heads/main)",
                )
        if (
            deploy
            and isinstance(issuer_name, str)
            and _is_ci_issuer(issuer_urls.get(issuer_name, ""))
            and not _has_ref_condition(subject)
            and not _pins_environment(subject)
        ):
            yield finding(
                "ref-any-branch",
                "subject_token",
                "a deploy on a CI platform with no ref or environment condition: a job on any "
                "branch (a pull request's included) could deploy; pin the ref or environment",
            )

        actor = entry.get("actor")
        if isinstance(actor, Mapping) and not any(
            k in actor for k in ("issuer", "credential", "sts")
        ):
            yield finding(
                "actor-any-issuer",
                "actor",
                "the actor section names no issuer, credential or sts: a token of any trusted "
                "issuer may act (on a CI platform, any repository's)",
            )

        ttl = grant.get("max_ttl")
        if isinstance(ttl, int) and ttl > ONE_HOUR:
            yield finding(
                "long-ttl",
                "allow.max_ttl",
                f"max_ttl {ttl} s is over an hour: short-lived tokens limit a leak",
            )

        copy_claims = grant.get("copy_claims")
        if isinstance(copy_claims, list) and any(
            isinstance(c, str) and GLOB_CHARS.search(c) for c in copy_claims
        ):
            yield finding(
                "copy-all-claims",
                "allow.copy_claims",
                "copies every claim: name the claims the audience needs",
            )


def _matcher_is_glob(spec: Any) -> bool:
    if isinstance(spec, Mapping):
        return "glob" in spec
    return isinstance(spec, str) and spec in ("*", "")


def _subject_is_open(subject: Mapping[str, Any]) -> bool:
    """True when any subject of the source matches: no subject condition, or a glob.

    A service credential has exactly one owner, so naming the credential pins the subject.
    """
    if "credential" in subject:
        return False
    return "subject" not in subject or _matcher_is_glob(subject["subject"])


def _describe_subject(subject: Mapping[str, Any]) -> str:
    if "subject" not in subject:
        return "any subject (no subject condition)"
    return f"a wildcard subject {subject['subject']!r}"


def _has_condition(subject: Mapping[str, Any]) -> bool:
    claims = subject.get("claims")
    return "subject" in subject or (isinstance(claims, Mapping) and bool(claims))


def _is_ci_issuer(url: str) -> bool:
    parts = urlsplit(url)
    host, path = parts.hostname or "", parts.path.rstrip("/")
    return any(marker in host for marker in CI_ISSUER_HOSTS) or path.endswith(CI_ISSUER_PATHS)


def _pins_repository(subject: Mapping[str, Any]) -> bool:
    claims = subject.get("claims")
    if isinstance(claims, Mapping):
        for claim in REPOSITORY_CLAIMS:
            if claim in claims and not _pattern_is_open(claims[claim]):
                return True
    pattern = subject.get("subject")
    values = _matcher_values(pattern)
    return bool(values) and all(
        v.startswith(REPOSITORY_SUBJECT_PREFIXES) and not _repository_part_is_open(v)
        for v in values
    )


def _matcher_values(spec: Any) -> list[str]:
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, list):
        return [v for v in spec if isinstance(v, str)]
    if isinstance(spec, Mapping) and len(spec) == 1:
        (value,) = spec.values()
        return _matcher_values(value)
    return []


def _pattern_is_open(spec: Any) -> bool:
    """A repository condition like {glob: "*"}, {glob: "acme/*"} or {glob: "acme/[a-z]*"}
    still admits every repository of an owner (or of every owner); only a glob whose owner
    is literal and whose name starts literally (acme/payments-*) is tolerated as pinned."""
    return any(_repository_glob_is_open(v) for v in _matcher_values(spec))


def _repository_glob_is_open(value: str) -> bool:
    owner, _, name = value.partition("/")
    return bool(GLOB_CHARS.search(owner) or GLOB_CHARS.match(name))


def _ref_patterns(subject: Mapping[str, Any]) -> list[str]:
    """The ref globs of a subject token's conditions: on its ``ref`` claim (GitHub:
    ``refs/heads/main``; GitLab: the bare name) and in the ``:ref:`` part of a subject
    glob (``repo:O/R:ref:REF``, GitLab's ``project_path:G/P:ref_type:branch:ref:NAME``).
    A literal (equals, one of) matches only itself."""
    claims = subject.get("claims")
    patterns = _glob_values(claims.get("ref")) if isinstance(claims, Mapping) else []
    for value in _glob_values(subject.get("subject")):
        if ":ref:" in value:
            patterns.append(value.split(":ref:", 1)[1])
    return patterns


def _glob_values(spec: Any) -> list[str]:
    if isinstance(spec, Mapping) and isinstance(spec.get("glob"), str):
        return [spec["glob"]]
    return []


def _ref_path(subject: Mapping[str, Any]) -> str:
    claims = subject.get("claims")
    in_claims = isinstance(claims, Mapping) and "ref" in claims
    return "subject_token.claims.ref" if in_claims else "subject_token.subject"


def _has_ref_condition(subject: Mapping[str, Any]) -> bool:
    claims = subject.get("claims")
    if isinstance(claims, Mapping) and "ref" in claims:
        return True
    values = _matcher_values(subject.get("subject"))
    return bool(values) and all(":ref:" in v for v in values)


def _ref_glob_is_open(value: str) -> bool:
    """A ref pattern that admits every branch (or tag): a wildcard before the first literal
    character of the name. ``refs/heads/*``, ``refs/*``, ``refs/heads/[a-z]*``, ``*`` and
    ``r*`` are open; ``refs/heads/release-*`` and ``refs/tags/v*`` are tolerated as pinned,
    as ``acme/payments-*`` is for a repository. Globs cross ``/`` (fnmatch), so a wildcard
    anywhere in ``refs/KIND/`` reaches every name."""
    glob = GLOB_CHARS.search(value)
    if glob is None:
        return False  # a literal ref
    if not value.startswith("refs/"):
        # A bare name (GitLab's ref claim) that starts with a wildcard, or a prefix of
        # "refs/" followed by one (r*, refs*), which reaches every ref.
        return glob.start() == 0 or "refs/".startswith(value[: glob.start()])
    parts = value.split("/", 2)
    kind, name = parts[1], parts[2] if len(parts) > 2 else ""
    return bool(GLOB_CHARS.search(kind) or not name or GLOB_CHARS.match(name))


def _pins_environment(subject: Mapping[str, Any]) -> bool:
    """An ``environment`` claim or a ``repo:O/R:environment:ENV`` subject whose environment
    does not start with a wildcard."""
    claims = subject.get("claims")
    if isinstance(claims, Mapping):
        for claim in ENVIRONMENT_CLAIMS:
            values = _matcher_values(claims.get(claim))
            if values and not any(GLOB_CHARS.match(v) for v in values):
                return True
    values = _matcher_values(subject.get("subject"))
    return bool(values) and all(
        ":environment:" in v and not GLOB_CHARS.match(v.split(":environment:", 1)[1])
        for v in values
    )


def _repository_part_is_open(subject: str) -> bool:
    # repo:OWNER/NAME:...  -> the OWNER/NAME part must be literal
    parts = subject.split(":")
    return len(parts) < 2 or bool(GLOB_CHARS.search(parts[1]))
