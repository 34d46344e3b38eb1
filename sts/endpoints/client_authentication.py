"""Client authentication for the revocation and introspection endpoints: the token
endpoint's methods (``grants.client_auth``), but a client is always required."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from sts import errors
from sts.db import queries
from sts.grants.client_auth import AuthenticatedClient, authenticate_client
from sts.protocol.exchange import ClientCredentials
from sts.services import Services


def authenticate_required_client(
    services: Services,
    credentials: ClientCredentials,
    authorization: str | None,
    endpoint_path: str,
    now: datetime,
) -> AuthenticatedClient:
    settings = services.settings
    client = authenticate_client(
        credentials,
        authorization,
        services.trust.current().clients,
        token_endpoint=settings.issuer + endpoint_path,
        issuer=settings.issuer,
        leeway=settings.clock_leeway,
        now=now,
    )
    # RFC 7009 §2.1 / RFC 7662 §2.1: the caller authenticates; sts has no public clients
    # at these endpoints.
    if client.client_id is None:
        raise errors.InvalidClient(reason="client.anonymous")
    return client


def record_assertion_once(session: Session, client: AuthenticatedClient) -> None:
    """RFC 7523 §3: a client assertion's jti is accepted once. A no-op for secret-based
    methods."""
    if client.assertion_jti is None or client.assertion_expires_at is None:
        return
    assert client.client_id is not None
    if not queries.record_client_assertion(
        session, client.client_id, client.assertion_jti, client.assertion_expires_at
    ):
        raise errors.InvalidClient("The client assertion was already used.", reason="client.replay")
