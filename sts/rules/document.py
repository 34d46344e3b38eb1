"""The declarative rules file: load it, keeping line numbers, and validate all of it.

A rules file (YAML) holds the desired state of the trust configuration: trusted issuers,
clients, service credentials and rules. Loading reports EVERY problem at once, each with
file, line and the entry's name, so one CI run shows a reviewer everything to fix.

The result is a :data:`State`: plain JSON-shaped dicts, ``kind -> name -> fields``, the
same shape :func:`sts.rules.ops.read_state` reads from the database, so a plan is a
comparison of two values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from joserfc.jwk import KeySet

from sts.credentials import API_KEY_PREFIX, is_secret_hash
from sts.policy.rules import rule_errors
from sts.rules.ops import DPOP_BOUND, INTROSPECTS
from sts.tokens.issuer_keys import import_every_public_key
from sts.tokens.verify import ASYMMETRIC_ALGORITHMS
from sts.trust import KeySetError, import_client_key_set, import_key_set

# kind -> name -> fields (issuer/client/credential fields, or a rule's definition)
State = dict[str, dict[str, dict[str, Any]]]
KINDS = ("issuer", "client", "credential", "rule")
SECTIONS = {"issuers": "issuer", "clients": "client", "credentials": "credential", "rules": "rule"}
NAME_FIELD = {"issuer": "name", "client": "client_id", "credential": "name", "rule": "name"}
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
# Characters that make a pattern of a glob: an audience in introspects is compared exactly.
GLOB_CHARS = re.compile(r"[*?\[]")
# JWK members that only a private or symmetric key has (RFC 7518 §6).
PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
PLAINTEXT_HINT = {
    "client": "store the output of `sts clients hash-secret`",
    "credential": "store the secret_hash printed by `sts credentials new`",
}


def empty_state() -> State:
    return {kind: {} for kind in KINDS}


class LineMapping(dict[str, Any]):
    """A YAML mapping that remembers its own line and the line of each key."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    where: str  # "rule 'payments-prod-deploy'", "issuers[2]", "rules file"
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.where}: {self.message}"


@dataclass
class RulesFile:
    """A loaded rules file: the desired state, where each entry is, and its problems."""

    path: str
    state: State = field(default_factory=empty_state)
    entries: dict[tuple[str, str], LineMapping] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def add(self, line: int, where: str, message: str) -> None:
        self.problems.append(Problem(self.path, line, where, message))

    def line_of(self, kind: str, name: str, path: str = "") -> int:
        """The line of ``path`` (``allow.max_ttl``) in an entry, or of the entry itself."""
        entry = self.entries.get((kind, name))
        return 0 if entry is None else line_of_path(entry, path)


class RulesFileError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# ---- YAML with line numbers -------------------------------------------------------------


# Bounds on a rules file: nesting (the composer recurses: 5000 brackets were a
# RecursionError) and values once aliases are expanded (ten aliases of ten aliases... were
# 10**7 values to copy and validate, from a file of a few hundred bytes).
MAX_DEPTH = 64
MAX_VALUES = 1_000_000


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are :class:`LineMapping` and which notes duplicate keys
    (plain YAML keeps the last silently: a reviewer would read the wrong one); it refuses
    a document nested deeper than :data:`MAX_DEPTH` or holding more than
    :data:`MAX_VALUES` values once its aliases are expanded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[tuple[int, str]] = []
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"nested deeper than {MAX_DEPTH} levels",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_VALUES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"more than {MAX_VALUES} values once its aliases are expanded",
                node.start_mark,
            )
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for with every alias expanded (an alias is the very
    node it names, so each is counted once and reused)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 0  # a recursive node: the constructor refuses it
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, sizes) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = size
    return size


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineMapping:
    loader.flatten_mapping(node)
    mapping = LineMapping()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = str(loader.construct_object(key_node, deep=True))
        line = key_node.start_mark.line + 1
        if key in mapping:
            loader.duplicate_keys.append((line, key))
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = line
    return mapping


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def plain(value: Any) -> Any:
    """A JSON-shaped copy: LineMappings become dicts (what the database stores)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def line_of_path(entry: LineMapping, path: str) -> int:
    """The deepest line known for a dotted path such as ``subject_token.claims.ref``."""
    line = entry.line
    node: Any = entry
    for part in [p for p in path.split(".") if p]:
        if not isinstance(node, LineMapping) or part not in node:
            break
        line = node.line_of(part)
        node = node[part]
    return line


# ---- loading ----------------------------------------------------------------------------


def load_rules_file(path: Path, *, max_ttl: int) -> RulesFile:
    """Load and validate; raises :class:`RulesFileError` listing every problem."""
    result = parse_rules_text(path.read_text(encoding="utf-8"), str(path), max_ttl=max_ttl)
    if result.problems:
        raise RulesFileError(result.problems)
    return result


def parse_rules_text(text: str, path: str, *, max_ttl: int) -> RulesFile:
    """Parse and validate; the problems are in the result (nothing raised)."""
    result = RulesFile(path)
    loader = _LineLoader(text)
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        result.add(line, "rules file", f"not valid YAML: {getattr(exc, 'problem', exc)}")
        return result
    finally:
        loader.dispose()
    for line, key in loader.duplicate_keys:
        result.add(line, "rules file", f"duplicate key {key!r} (YAML keeps only the last one)")
    if document is None:
        return result  # an empty file: the desired state is empty
    if not isinstance(document, LineMapping):
        result.add(1, "rules file", "must be a mapping with issuers, clients, credentials, rules")
        return result
    for key in document:
        if key not in SECTIONS:
            result.add(
                document.line_of(key),
                "rules file",
                f"unknown key {key!r} (expected: {', '.join(SECTIONS)})",
            )
    for section, kind in SECTIONS.items():
        entries = document.get(section)
        if entries is None:
            continue
        if not isinstance(entries, list):
            result.add(document.line_of(section), section, "must be a list")
            continue
        _load_section(result, kind, section, entries, document.line_of(section))
    _check_references(result)
    _check_ttl_caps(result, max_ttl)
    return result


def _load_section(
    result: RulesFile, kind: str, section: str, entries: list[Any], section_line: int
) -> None:
    name_field = NAME_FIELD[kind]
    first_seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, LineMapping):
            result.add(section_line, f"{section}[{index}]", "must be a mapping")
            continue
        name = entry.get(name_field)
        if not isinstance(name, str) or not name:
            result.add(entry.line, f"{section}[{index}]", f"missing required field {name_field!r}")
            continue
        where = f"{kind} {name!r}"
        if name in first_seen:
            result.add(
                entry.line_of(name_field),
                where,
                f"duplicate {kind} {name_field} {name!r} "
                f"(first defined on line {first_seen[name]})",
            )
            continue
        first_seen[name] = entry.line
        result.entries[(kind, name)] = entry
        fields = _VALIDATORS[kind](result, entry, where)
        if fields is not None:
            result.state[kind][name] = fields
    if kind == "issuer":
        _check_unique_field(result, "issuer", "issuer", "issuer URL")
    if kind == "credential":
        _check_unique_field(result, "credential", "key_id", "key_id")


def _check_unique_field(result: RulesFile, kind: str, key: str, label: str) -> None:
    seen: dict[str, str] = {}
    for name, fields in result.state[kind].items():
        value = fields.get(key)
        if value in seen:
            result.add(
                result.line_of(kind, name, key),
                f"{kind} {name!r}",
                f"{label} {value!r} is also used by {kind} {seen[value]!r}",
            )
        elif isinstance(value, str):
            seen[value] = name


# ---- one validator per kind: each returns the entry's fields, or None if invalid ---------


def _unknown_keys(result: RulesFile, entry: LineMapping, where: str, allowed: set[str]) -> bool:
    ok = True
    for key in entry:
        if key in allowed:
            continue
        ok = False
        message = f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"
        if "secret" in key and key != "secret_hash":
            message = (
                f"unknown key {key!r}: plaintext secrets never go in the rules file, "
                "only secret_hash"
            )
        result.add(entry.line_of(key), where, message)
    return ok


def _required(result: RulesFile, entry: LineMapping, where: str, *keys: str) -> bool:
    missing = [key for key in keys if key not in entry]
    for key in missing:
        result.add(entry.line, where, f"missing required field {key!r}")
    return not missing


def _string(result: RulesFile, entry: LineMapping, where: str, key: str) -> bool:
    value = entry.get(key)
    if isinstance(value, str) and value:
        return True
    result.add(entry.line_of(key), where, f"{key} must be a non-empty string")
    return False


def _string_list(result: RulesFile, entry: LineMapping, where: str, key: str) -> bool:
    value = entry.get(key)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return True
    result.add(entry.line_of(key), where, f"{key} must be a non-empty list of strings")
    return False


def _boolean(result: RulesFile, entry: LineMapping, where: str, key: str) -> bool:
    if isinstance(entry.get(key, False), bool):
        return True
    result.add(entry.line_of(key), where, f"{key} must be true or false")
    return False


def _url(result: RulesFile, entry: LineMapping, where: str, key: str) -> bool:
    if not _string(result, entry, where, key):
        return False
    parts = urlsplit(entry[key])
    if parts.scheme in ("https", "http") and parts.hostname:
        return True
    result.add(entry.line_of(key), where, f"{key} must be an absolute https:// URL")
    return False


def _secret_hash(result: RulesFile, entry: LineMapping, where: str, kind: str) -> bool:
    value = entry.get("secret_hash")
    if isinstance(value, str) and is_secret_hash(value):
        return True
    # Never echo the value: it may be the very secret that must not leak.
    what = "an API key" if str(value).startswith(API_KEY_PREFIX) else "a plaintext secret"
    result.add(
        entry.line_of("secret_hash"),
        where,
        f"secret_hash must be a sha256:<64 hex digits> hash, not {what}: {PLAINTEXT_HINT[kind]}",
    )
    return False


def _public_jwks(
    result: RulesFile,
    entry: LineMapping,
    where: str,
    importer: Callable[[Mapping[str, Any]], KeySet],
) -> bool:
    """A JWK set of public keys that imports as sts will import it (``importer``): a key
    that does not (a point off its curve, an unknown curve) would leave the client unable
    to authenticate, or the issuer's tokens refused, once applied."""
    jwks = entry.get("jwks")
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list) or not keys or not all(isinstance(k, Mapping) for k in keys):
        result.add(entry.line_of("jwks"), where, "jwks must be a JWK set: {keys: [...]}")
        return False
    for jwk in keys:
        private = [member for member in PRIVATE_JWK_MEMBERS if member in jwk]
        if private:
            result.add(
                line_of_path(entry, "jwks.keys"),
                where,
                f"jwks holds private key material ({', '.join(private)}): publish public keys only",
            )
            return False
    odd = _not_json(jwks, "jwks")
    if odd is not None:
        # Stored as JSON: a plan or a revision could not even show it (a traceback).
        path, value = odd
        result.add(
            line_of_path(entry, "jwks.keys"),
            where,
            f"{path} is a YAML {type(value).__name__}, not a JSON value: quote it",
        )
        return False
    try:
        import_key_set(plain(jwks), importer)
    except KeySetError as exc:
        result.add(line_of_path(entry, "jwks.keys"), where, _key_set_problem(keys, importer, exc))
        return False
    return True


def _not_json(value: Any, path: str) -> tuple[str, Any] | None:
    """The first value (and its path) that JSON cannot hold: YAML reads an unquoted date
    as a date, ``!!binary`` as bytes, ``!!set`` as a set, ``.nan`` as a float NaN."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, Mapping):
        items: list[tuple[str, Any]] = [(f"{path}.{k}", v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    else:
        return path, value
    for item_path, item in items:
        found = _not_json(item, item_path)
        if found is not None:
            return found
    return None


def _key_set_problem(
    keys: list[Any], importer: Callable[[Mapping[str, Any]], KeySet], error: KeySetError
) -> str:
    """Name the first key that does not import on its own, else the set's own error."""
    for index, jwk in enumerate(keys):
        try:
            import_key_set({"keys": [plain(jwk)]}, importer)
        except KeySetError as exc:
            return f"jwks.keys[{index}] does not import: {exc}"
    return f"jwks does not import: {error}"


def _validate_issuer(result: RulesFile, entry: LineMapping, where: str) -> dict[str, Any] | None:
    allowed = {"name", "issuer", "jwks_uri", "jwks", "audiences", "algorithms"}
    checks = [
        _unknown_keys(result, entry, where, allowed),
        _required(result, entry, where, "issuer", "audiences", "algorithms"),
    ]
    if "issuer" in entry:
        checks.append(_url(result, entry, where, "issuer"))
    if "audiences" in entry:
        checks.append(_string_list(result, entry, where, "audiences"))
    if "algorithms" in entry and _string_list(result, entry, where, "algorithms"):
        bad = [alg for alg in entry["algorithms"] if alg not in ASYMMETRIC_ALGORITHMS]
        if bad:
            result.add(
                entry.line_of("algorithms"),
                where,
                f"algorithms: {', '.join(bad)} not allowed "
                f"(asymmetric only: {', '.join(sorted(ASYMMETRIC_ALGORITHMS))})",
            )
            checks.append(False)
    elif "algorithms" in entry:
        checks.append(False)
    if ("jwks" in entry) == ("jwks_uri" in entry):
        result.add(entry.line, where, "needs exactly one of jwks_uri or jwks")
        checks.append(False)
    elif "jwks_uri" in entry:
        checks.append(_url(result, entry, where, "jwks_uri"))
    else:
        checks.append(_public_jwks(result, entry, where, import_every_public_key))
    if not all(checks):
        return None
    fields = {
        "issuer": entry["issuer"],
        "audiences": list(entry["audiences"]),
        "algorithms": list(entry["algorithms"]),
    }
    if "jwks_uri" in entry:
        fields["jwks_uri"] = entry["jwks_uri"]
    else:
        fields["jwks"] = plain(entry["jwks"])
    return fields


def _validate_client(result: RulesFile, entry: LineMapping, where: str) -> dict[str, Any] | None:
    allowed = {
        "client_id",
        "auth_method",
        "secret_hash",
        "jwks",
        "resource_server",
        "disabled",
        DPOP_BOUND,
        INTROSPECTS,
    }
    checks = [
        _unknown_keys(result, entry, where, allowed),
        _required(result, entry, where, "auth_method"),
        _boolean(result, entry, where, "resource_server"),
        _boolean(result, entry, where, "disabled"),
        _boolean(result, entry, where, DPOP_BOUND),
    ]
    if INTROSPECTS in entry:
        checks.append(_introspects(result, entry, where))
    method = entry.get("auth_method")
    if "auth_method" in entry and method not in AUTH_METHODS:
        result.add(
            entry.line_of("auth_method"),
            where,
            f"auth_method must be one of {', '.join(AUTH_METHODS)}",
        )
        checks.append(False)
    if method in AUTH_METHODS:
        checks.append(_client_keys_fit_method(result, entry, where, str(method)))
    if not all(checks):
        return None
    fields: dict[str, Any] = {"auth_method": method}
    if "secret_hash" in entry:
        fields["secret_hash"] = entry["secret_hash"]
    if "jwks" in entry:
        fields["jwks"] = plain(entry["jwks"])
    fields["resource_server"] = entry.get("resource_server", False)
    fields["disabled"] = entry.get("disabled", False)
    # RFC 9449 §5.2, default false: left out of the fields then, so a database from
    # before the column compares equal (sts.rules.ops.read_state does the same).
    if entry.get(DPOP_BOUND, False):
        fields[DPOP_BOUND] = True
    # RFC 7662 §2.2; absent (every token) is left out, as read_state leaves out NULL.
    if INTROSPECTS in entry:
        fields[INTROSPECTS] = list(entry[INTROSPECTS])
    return fields


def _introspects(result: RulesFile, entry: LineMapping, where: str) -> bool:
    """``introspects``: the audiences a resource server may introspect tokens for (RFC 7662
    §2.2), each compared exactly with a token's ``aud``. Only a resource server may
    introspect at all; an empty list would hide every token (leave the key out to allow
    every token); a glob would read as a pattern but match only itself."""
    line, value = entry.line_of(INTROSPECTS), entry[INTROSPECTS]
    if entry.get("resource_server") is not True:
        result.add(line, where, f"{INTROSPECTS} needs resource_server: true")
        return False
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        result.add(line, where, f"{INTROSPECTS} must be a list of audiences (non-empty strings)")
        return False
    if not value:
        result.add(
            line,
            where,
            f"{INTROSPECTS} must name at least one audience "
            "(leave it out to let the resource server introspect every token)",
        )
        return False
    wildcards = [v for v in value if GLOB_CHARS.search(v)]
    for audience in wildcards:
        result.add(
            line,
            where,
            f"{INTROSPECTS}: {audience!r} is a wildcard; audiences are compared exactly: "
            "name each audience the resource server serves",
        )
    return not wildcards


def _client_keys_fit_method(result: RulesFile, entry: LineMapping, where: str, method: str) -> bool:
    """A secret method needs a secret_hash; private_key_jwt needs public keys; nothing else."""
    ok = True
    if method in SECRET_METHODS:
        if "secret_hash" not in entry:
            result.add(entry.line, where, f"missing required field 'secret_hash' for {method}")
            ok = False
        else:
            ok = _secret_hash(result, entry, where, "client") and ok
    elif "secret_hash" in entry:
        result.add(entry.line_of("secret_hash"), where, f"secret_hash is not used by {method}")
        ok = False
    if method == "private_key_jwt":
        if "jwks" not in entry:
            result.add(entry.line, where, "missing required field 'jwks' for private_key_jwt")
            ok = False
        else:
            ok = _public_jwks(result, entry, where, import_client_key_set) and ok
    elif "jwks" in entry:
        result.add(entry.line_of("jwks"), where, f"jwks is not used by {method}")
        ok = False
    if method == "none" and entry.get(DPOP_BOUND) is True:
        # A client that does not authenticate cannot be held to anything: its requests
        # could leave its client_id out. A rule's sender_constraint binds such tokens.
        result.add(
            entry.line_of(DPOP_BOUND),
            where,
            f"{DPOP_BOUND} needs a client that authenticates (not auth_method none); "
            "require DPoP in the rule instead (allow.sender_constraint: dpop)",
        )
        ok = False
    return ok


def _validate_credential(
    result: RulesFile, entry: LineMapping, where: str
) -> dict[str, Any] | None:
    allowed = {"name", "key_id", "secret_hash", "owner_subject", "disabled"}
    checks = [
        _unknown_keys(result, entry, where, allowed),
        _required(result, entry, where, "key_id", "secret_hash", "owner_subject"),
        _boolean(result, entry, where, "disabled"),
    ]
    if "key_id" in entry and _string(result, entry, where, "key_id"):
        if not re.fullmatch(r"[0-9A-Za-z]{1,64}", entry["key_id"]):
            result.add(entry.line_of("key_id"), where, "key_id must be letters and digits")
            checks.append(False)
    elif "key_id" in entry:
        checks.append(False)
    if "secret_hash" in entry:
        checks.append(_secret_hash(result, entry, where, "credential"))
    if "owner_subject" in entry:
        checks.append(_string(result, entry, where, "owner_subject"))
    if not all(checks):
        return None
    return {
        "key_id": entry["key_id"],
        "secret_hash": entry["secret_hash"],
        "owner_subject": entry["owner_subject"],
        "disabled": entry.get("disabled", False),
    }


_RULE_ERROR_PATH = re.compile(r"^([A-Za-z_][\w.]*)")
_UNKNOWN_KEYS = re.compile(r"unknown key\(s\) ([^,\s]+)")


def _validate_rule(result: RulesFile, entry: LineMapping, where: str) -> dict[str, Any] | None:
    definition: dict[str, Any] = plain({k: v for k, v in entry.items() if k != "name"})
    errors = rule_errors(entry["name"], definition)
    for error in errors:
        message = str(error)
        match = _RULE_ERROR_PATH.match(message)
        path = match.group(1) if match else ""
        unknown = _UNKNOWN_KEYS.search(message)
        if unknown:  # point at the first unknown key itself, not at its section
            path = f"{path}.{unknown.group(1)}" if path != "rule" else unknown.group(1)
        result.add(line_of_path(entry, path), where, message)
    return None if errors else definition


_VALIDATORS: dict[str, Callable[[RulesFile, LineMapping, str], dict[str, Any] | None]] = {
    "issuer": _validate_issuer,
    "client": _validate_client,
    "credential": _validate_credential,
    "rule": _validate_rule,
}


# ---- checks across entries --------------------------------------------------------------


def _check_references(result: RulesFile) -> None:
    """A rule may only name issuers, credentials and clients the file defines."""
    for (kind, name), entry in result.entries.items():
        if kind != "rule":
            continue
        where = f"rule {name!r}"
        for part in ("subject_token", "actor"):
            spec = entry.get(part)
            if not isinstance(spec, Mapping):
                continue
            for source in ("issuer", "credential"):
                target = spec.get(source)
                if isinstance(target, str) and target not in _names(result, source):
                    result.add(
                        line_of_path(entry, f"{part}.{source}"),
                        where,
                        f"{part}.{source}: no {source} named {target!r} in this file",
                    )
        clients = entry.get("clients")
        if isinstance(clients, list):
            for client_id in clients:
                if isinstance(client_id, str) and client_id not in _names(result, "client"):
                    result.add(
                        entry.line_of("clients"),
                        where,
                        f"clients: no client {client_id!r} in this file",
                    )


def _names(result: RulesFile, kind: str) -> set[str]:
    # Entries that failed validation still count: their own error is already reported.
    return {name for (k, name) in result.entries if k == kind}


def _check_ttl_caps(result: RulesFile, max_ttl: int) -> None:
    for name, definition in result.state["rule"].items():
        grant = definition.get("allow")
        ttl = grant.get("max_ttl") if isinstance(grant, Mapping) else None
        if isinstance(ttl, int) and ttl > max_ttl:
            result.add(
                result.line_of("rule", name, "allow.max_ttl"),
                f"rule {name!r}",
                f"allow.max_ttl {ttl} is above the global cap STS_MAX_TOKEN_TTL={max_ttl}",
            )


# ---- back to YAML (export) --------------------------------------------------------------


def render_state(state: State) -> str:
    """The rules file for a state: what ``sts rules export`` prints."""
    document: dict[str, list[dict[str, Any]]] = {}
    for section, kind in SECTIONS.items():
        entries = []
        for name, fields in sorted(state[kind].items()):
            entry = {NAME_FIELD[kind]: name, **fields}
            for flag in ("resource_server", "disabled"):
                if entry.get(flag) is False:
                    del entry[flag]  # the default; keeps the file short
            entries.append(entry)
        document[section] = entries
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
