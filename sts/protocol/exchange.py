"""RFC 8693 §2.1 token exchange request: parsed once into a frozen value.

Nothing after this module reads the raw form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from sts.errors import InvalidRequest, InvalidScope, InvalidTarget
from sts.policy.rules import SCOPE_TOKEN
from sts.protocol import (
    SUPPORTED_SUBJECT_TOKEN_TYPES,
    TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_JWT,
)

# RFC 6749 §2.3.1 and RFC 7523 §2.2: client authentication in the form.
CLIENT_PARAMETERS = frozenset(
    {"client_id", "client_secret", "client_assertion_type", "client_assertion"}
)
# RFC 8693 §2.1's single-valued parameters ("resource" and "audience" may repeat).
EXCHANGE_PARAMETERS = CLIENT_PARAMETERS | {
    "grant_type",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "scope",
}
# §2.2.1: the issued token is a JWT usable as an access token; these are the types it can
# be described as.
ISSUABLE_TOKEN_TYPES = (TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT)


@dataclass(frozen=True)
class ClientCredentials:
    """Client authentication parameters carried in the form (RFC 6749 §2.3.1, RFC 7523)."""

    client_id: str | None
    client_secret: str | None
    client_assertion_type: str | None
    client_assertion: str | None


@dataclass(frozen=True)
class TokenExchangeRequest:
    subject_token: str
    subject_token_type: str
    actor_token: str | None
    actor_token_type: str | None
    audiences: tuple[str, ...]
    resources: tuple[str, ...]
    scopes: tuple[str, ...] | None  # None: no scope parameter
    requested_token_type: str
    client: ClientCredentials

    @property
    def targets(self) -> tuple[str, ...]:
        return self.audiences + self.resources


def single_values(form: Sequence[tuple[str, str]], known: frozenset[str]) -> dict[str, str]:
    """The ``known`` parameters, each once, or ``invalid_request`` naming a repeated one.

    RFC 6749 §3.2: parameters "MUST NOT be included more than once"; "parameters sent
    without a value MUST be treated as if they were omitted from the request"; and the
    server "MUST ignore unrecognized request parameters" (left out, repeated or not)."""
    values: dict[str, str] = {}
    for name, value in form:
        if not value or name not in known:
            continue
        if name in values:
            raise InvalidRequest(
                f"Parameter {name} is repeated.", reason="request.duplicate_parameter"
            )
        values[name] = value
    return values


def parse_token_exchange_request(form: Sequence[tuple[str, str]]) -> TokenExchangeRequest:
    params = single_values(form, EXCHANGE_PARAMETERS)
    subject_token = _required(params, "subject_token")
    subject_token_type = _required(params, "subject_token_type")
    if subject_token_type not in SUPPORTED_SUBJECT_TOKEN_TYPES:
        raise InvalidRequest(
            "The subject_token_type is not supported.", reason="request.subject_token_type"
        )
    actor_token = params.get("actor_token") or None
    actor_token_type = params.get("actor_token_type") or None
    # §2.1: actor_token_type is REQUIRED when actor_token is present, and MUST NOT be
    # included otherwise.
    if actor_token and not actor_token_type:
        raise InvalidRequest(
            "actor_token_type is required with actor_token.", reason="request.actor_token_type"
        )
    if actor_token_type and not actor_token:
        raise InvalidRequest(
            "actor_token_type must not be sent without actor_token.",
            reason="request.actor_token_type",
        )
    if actor_token_type and actor_token_type not in SUPPORTED_SUBJECT_TOKEN_TYPES:
        raise InvalidRequest(
            "The actor_token_type is not supported.", reason="request.actor_token_type"
        )
    requested = params.get("requested_token_type") or TOKEN_TYPE_ACCESS_TOKEN
    if requested not in ISSUABLE_TOKEN_TYPES:
        raise InvalidRequest(
            "The requested_token_type cannot be issued; sts issues access tokens (JWT).",
            reason="request.requested_token_type",
        )
    return TokenExchangeRequest(
        subject_token=subject_token,
        subject_token_type=subject_token_type,
        actor_token=actor_token,
        actor_token_type=actor_token_type,
        audiences=_repeated(form, "audience"),
        resources=_resources(form),
        scopes=_scopes(params.get("scope")),
        requested_token_type=requested,
        client=ClientCredentials(
            client_id=params.get("client_id") or None,
            client_secret=params.get("client_secret") or None,
            client_assertion_type=params.get("client_assertion_type") or None,
            client_assertion=params.get("client_assertion") or None,
        ),
    )


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise InvalidRequest(f"Missing {name}.", reason=f"request.{name}_missing")
    return value


def _repeated(form: Sequence[tuple[str, str]], name: str) -> tuple[str, ...]:
    return tuple(value for key, value in form if key == name and value)  # blank: omitted


def _resources(form: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    resources = _repeated(form, "resource")
    for resource in resources:
        # RFC 8707 §2 / RFC 8693 §2.1: an absolute URI, without a fragment.
        parts = urlsplit(resource)
        if not parts.scheme or not (parts.netloc or parts.path) or parts.fragment:
            raise InvalidTarget(
                "Each resource must be an absolute URI without a fragment.",
                reason="request.resource_not_absolute",
            )
    return resources


def _scopes(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    # RFC 6749 §3.3: space-delimited scope-tokens of restricted characters.
    scopes = tuple(raw.split(" "))
    if any(not SCOPE_TOKEN.match(scope) for scope in scopes):
        raise InvalidScope("The scope parameter is malformed.", reason="request.scope_malformed")
    return tuple(dict.fromkeys(scopes))
