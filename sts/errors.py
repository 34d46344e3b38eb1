"""Errors. OAuth errors carry their RFC 6749 §5.2 code; they are rendered in one place.

``description`` is what the caller sees (it must never reveal rules, keys or secrets);
``detail`` is the private reason that goes to the audit log and the server log.
"""

from __future__ import annotations

from typing import ClassVar


class StartupError(Exception):
    """sts cannot start (or a command cannot run). The message is one line for an operator."""


class ConfigurationError(StartupError):
    """A setting is invalid. The message names the environment variable."""

    def __init__(self, variable: str, message: str) -> None:
        self.variable = variable
        super().__init__(f"{variable} {message}")


class OAuthError(Exception):
    """Base of every error answered to an OAuth client (RFC 6749 §5.2)."""

    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400
    default_description: ClassVar[str] = "The request is invalid."

    def __init__(
        self,
        description: str | None = None,
        *,
        detail: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.description = description or self.default_description
        self.detail = detail or self.description
        # A short, stable machine code for the audit log (e.g. "subject_token.expired").
        self.reason = reason or self.error
        super().__init__(self.description)

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidDpopProof(OAuthError):
    """RFC 9449 §5: a token request whose DPoP proof is missing where one is required, or
    fails a check of §4.3, is answered 400 ``invalid_dpop_proof`` (registered in §12.3)."""

    error = "invalid_dpop_proof"
    default_description = "The DPoP proof is invalid."


class UseDpopNonce(OAuthError):
    """RFC 9449 §8: the server requires a nonce it provided in the proof, and the proof
    has none, or one it did not hand out recently: 400 ``use_dpop_nonce``, with the nonce
    to use in the ``DPoP-Nonce`` header (the client retries with a new proof carrying
    it)."""

    error = "use_dpop_nonce"
    default_description = "Authorization server requires nonce in DPoP proof."

    def __init__(self, nonce: str, *, reason: str, detail: str | None = None) -> None:
        super().__init__(reason=reason, detail=detail)
        self.nonce = nonce

    def headers(self) -> dict[str, str]:
        return {"DPoP-Nonce": self.nonce}


class InvalidClient(OAuthError):
    """RFC 6749 §5.2: 401 with a WWW-Authenticate header. A client that authenticated with
    the Authorization header used Basic, the one HTTP scheme sts's endpoints accept, and
    MUST get a Basic challenge; any other client MAY be told that Basic is supported."""

    error = "invalid_client"
    status_code = 401
    default_description = "Client authentication failed."

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="sts", error="invalid_client"'}


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"
    default_description = "The grant type is not supported by this server."


class UnsupportedTokenType(OAuthError):
    # RFC 7009 §2.2.1
    error = "unsupported_token_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"
    default_description = "The requested scope is not allowed."


class InvalidTarget(OAuthError):
    # RFC 8707 §2 / RFC 8693 §2.2.2
    error = "invalid_target"
    default_description = "The requested audience or resource is not allowed."


class NotFound(OAuthError):
    error = "not_found"
    status_code = 404
    default_description = "There is nothing at this address."


class MethodNotAllowed(OAuthError):
    error = "method_not_allowed"
    status_code = 405
    default_description = "This method is not allowed here."

    def __init__(self, allowed: list[str], **kw: str) -> None:
        super().__init__(**kw)
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class TemporarilyUnavailable(OAuthError):
    """A dependency (database, signing key) is down. Fail closed; the caller may retry."""

    error = "temporarily_unavailable"
    status_code = 503
    default_description = "The service is temporarily unavailable; retry later."

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class ServerError(OAuthError):
    error = "server_error"
    status_code = 500
    default_description = "The server encountered an unexpected condition."
