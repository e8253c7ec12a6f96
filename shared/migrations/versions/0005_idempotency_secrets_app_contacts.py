"""idempotency body hashes, signing-secret overlap, which app reached which contact

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 03:20:00

* ``messages.request_hash`` / ``campaigns.request_hash``: the SHA-256 of the request body an
  idempotency key was first used with, so the same key with another body is a 409.
* ``apps.previous_signing_secret`` / ``apps.previous_secret_until``: after a rotation the old
  secret keeps signing beside the new one until then (Standard Webhooks allows several).
* ``app_contacts``: the apps that messaged or invited a contact; a friendship stays the
  messenger service's, but an app lists only the contacts it reached.
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_hash', sa.String(length=64), nullable=True))
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_hash', sa.String(length=64), nullable=True))
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('previous_signing_secret', sa.String(length=100),
                                      nullable=True))
        batch_op.add_column(sa.Column('previous_secret_until', sa.DateTime(), nullable=True))
    op.create_table('app_contacts',
    sa.Column('app_id', sa.String(length=36), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], ),
    sa.PrimaryKeyConstraint('app_id', 'contact_id')
    )


def downgrade() -> None:
    op.drop_table('app_contacts')
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.drop_column('previous_secret_until')
        batch_op.drop_column('previous_signing_secret')
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_column('request_hash')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('request_hash')
