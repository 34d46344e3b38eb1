"""Baseline schema: every table of sts.

Revision ID: 0001_baseline
Revises: (none; the root of the schema branch)
Create Date: 2026-11-28 19:00:31.869126
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001_baseline'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ('schema',)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('decision', sa.String(length=8), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('client_id', sa.String(length=255), nullable=True),
    sa.Column('subject', sa.String(length=1024), nullable=True),
    sa.Column('subject_issuer', sa.String(length=2048), nullable=True),
    sa.Column('subject_token_id', sa.String(length=255), nullable=True),
    sa.Column('actor', sa.String(length=1024), nullable=True),
    sa.Column('requested_audiences', sa.JSON(), nullable=True),
    sa.Column('requested_scope', sa.Text(), nullable=True),
    sa.Column('rule_id', sa.Integer(), nullable=True),
    sa.Column('rule_version', sa.Integer(), nullable=True),
    sa.Column('issued_jti', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_issued_jti'), ['issued_jti'], unique=False)

    op.create_table('client_assertions',
    sa.Column('client_id', sa.String(length=255), nullable=False),
    sa.Column('jti', sa.String(length=255), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('client_id', 'jti', name=op.f('pk_client_assertions'))
    )
    with op.batch_alter_table('client_assertions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_client_assertions_expires_at'), ['expires_at'], unique=False)

    op.create_table('clients',
    sa.Column('client_id', sa.String(length=255), nullable=False),
    sa.Column('auth_method', sa.String(length=32), nullable=False),
    sa.Column('secret_hash', sa.String(length=255), nullable=True),
    sa.Column('jwks', sa.JSON(), nullable=True),
    sa.Column('is_resource_server', sa.Boolean(), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('client_id', name=op.f('pk_clients'))
    )
    op.create_table('revocations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('value', sa.String(length=2048), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lifted_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_revocations'))
    )
    with op.batch_alter_table('revocations', schema=None) as batch_op:
        batch_op.create_index('ix_revocations_kind_value', ['kind', 'value'], unique=False)

    op.create_table('rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('effect', sa.String(length=8), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rules')),
    sa.UniqueConstraint('name', name=op.f('uq_rules_name'))
    )
    rules_state = op.create_table('rules_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('generation', sa.BigInteger(), nullable=False),
    sa.Column('last_version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rules_state'))
    )
    # The single row the rules cache and the rule-version sequence read and bump.
    op.bulk_insert(rules_state, [{'id': 1, 'generation': 0, 'last_version': 0}])
    op.create_table('service_credentials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('secret_hash', sa.String(length=255), nullable=False),
    sa.Column('owner_subject', sa.String(length=1024), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_service_credentials')),
    sa.UniqueConstraint('key_id', name=op.f('uq_service_credentials_key_id')),
    sa.UniqueConstraint('name', name=op.f('uq_service_credentials_name'))
    )
    op.create_table('signing_keys',
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('alg', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('public_jwk', sa.JSON(), nullable=False),
    sa.Column('encrypted_private_key', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('compromised_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('kid', name=op.f('pk_signing_keys'))
    )
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signing_keys_state'), ['state'], unique=False)

    op.create_table('trusted_issuers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('issuer', sa.String(length=2048), nullable=False),
    sa.Column('jwks', sa.JSON(), nullable=True),
    sa.Column('jwks_uri', sa.String(length=2048), nullable=True),
    sa.Column('algorithms', sa.JSON(), nullable=False),
    sa.Column('audiences', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trusted_issuers')),
    sa.UniqueConstraint('issuer', name=op.f('uq_trusted_issuers_issuer')),
    sa.UniqueConstraint('name', name=op.f('uq_trusted_issuers_name'))
    )
    op.create_table('issued_tokens',
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('parent_jti', sa.String(length=64), nullable=True),
    sa.Column('credential_id', sa.Integer(), nullable=True),
    sa.Column('subject', sa.String(length=1024), nullable=False),
    sa.Column('subject_issuer', sa.String(length=2048), nullable=False),
    sa.Column('subject_token_id', sa.String(length=255), nullable=True),
    sa.Column('actor', sa.String(length=1024), nullable=True),
    sa.Column('client_id', sa.String(length=255), nullable=True),
    sa.Column('rule_id', sa.Integer(), nullable=False),
    sa.Column('rule_version', sa.Integer(), nullable=False),
    sa.Column('audience', sa.JSON(), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_idx', sa.Integer(), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['credential_id'], ['service_credentials.id'], name=op.f('fk_issued_tokens_credential_id_service_credentials')),
    sa.ForeignKeyConstraint(['parent_jti'], ['issued_tokens.jti'], name=op.f('fk_issued_tokens_parent_jti_issued_tokens')),
    sa.PrimaryKeyConstraint('jti', name=op.f('pk_issued_tokens'))
    )
    with op.batch_alter_table('issued_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_issued_tokens_client_id'), ['client_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_issued_tokens_credential_id'), ['credential_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_issued_tokens_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_issued_tokens_kid'), ['kid'], unique=False)
        batch_op.create_index(batch_op.f('ix_issued_tokens_parent_jti'), ['parent_jti'], unique=False)
        batch_op.create_index('ix_issued_tokens_rule', ['rule_id', 'rule_version'], unique=False)
        batch_op.create_index(batch_op.f('ix_issued_tokens_subject'), ['subject'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('issued_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_issued_tokens_subject'))
        batch_op.drop_index('ix_issued_tokens_rule')
        batch_op.drop_index(batch_op.f('ix_issued_tokens_parent_jti'))
        batch_op.drop_index(batch_op.f('ix_issued_tokens_kid'))
        batch_op.drop_index(batch_op.f('ix_issued_tokens_expires_at'))
        batch_op.drop_index(batch_op.f('ix_issued_tokens_credential_id'))
        batch_op.drop_index(batch_op.f('ix_issued_tokens_client_id'))

    op.drop_table('issued_tokens')
    op.drop_table('trusted_issuers')
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signing_keys_state'))

    op.drop_table('signing_keys')
    op.drop_table('service_credentials')
    op.drop_table('rules_state')
    op.drop_table('rules')
    with op.batch_alter_table('revocations', schema=None) as batch_op:
        batch_op.drop_index('ix_revocations_kind_value')

    op.drop_table('revocations')
    op.drop_table('clients')
    with op.batch_alter_table('client_assertions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_client_assertions_expires_at'))

    op.drop_table('client_assertions')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_issued_jti'))
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))

    op.drop_table('audit_log')
