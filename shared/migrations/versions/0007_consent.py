"""one consent registry for every channel; the messenger's friendships move into it

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 18:50:00

* ``consents``: may this address be messaged on this channel of this provider account
  (``scope``), opted out of everything or of some categories (issue 18).
* ``consent_changes``: every change of a record, for audit (when, status, categories,
  source, app, carrying message).
* ``apps.consent_settings``: an app's own keywords and confirmation texts.
* Existing friendships move over: a contact that is a friend is ``opted_in``, one that
  declined or broke up ``opted_out`` (source ``friendship``), each with its audit row.
  ``contacts.status`` stays as the friendship's stage (invited, friend, ...), which the
  messenger's flows read; consent is decided by the registry alone.
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_FRIENDSHIP_CONSENT = {"friend": "opted_in", "declined": "opted_out", "not_friend": "opted_out"}


def upgrade() -> None:
    op.create_table('consents',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('scope', sa.String(length=100), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('categories', sa.JSON(), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('app_id', sa.String(length=36), nullable=True),
    sa.Column('message_id', sa.String(length=36), nullable=True),
    sa.Column('confirmation_message_id', sa.String(length=36), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('channel', 'scope', 'address', name='uq_consents_address')
    )
    op.create_index('ix_consents_status', 'consents', ['status', 'id'], unique=False)
    op.create_table('consent_changes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('consent_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('scope', sa.String(length=100), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('categories', sa.JSON(), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('app_id', sa.String(length=36), nullable=True),
    sa.Column('message_id', sa.String(length=36), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['consent_id'], ['consents.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_consent_changes_consent_id', 'consent_changes', ['consent_id'])
    op.create_index('ix_consent_changes_app_id', 'consent_changes', ['app_id'])
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('consent_settings', sa.JSON(), nullable=True))
    _move_friendships()


def _move_friendships() -> None:
    """Each friendship with a consent meaning becomes a record and its first audit row."""
    bind = op.get_bind()
    contacts = sa.table('contacts', sa.column('channel'), sa.column('address'),
                        sa.column('app_id'), sa.column('status'), sa.column('updated_at'))
    consents = sa.table('consents', sa.column('categories', sa.JSON), *(sa.column(c) for c in (
        'id', 'channel', 'scope', 'address', 'status', 'source', 'updated_at')))
    changes = sa.table('consent_changes', sa.column('categories', sa.JSON), *(
        sa.column(c) for c in ('consent_id', 'channel', 'scope', 'address', 'status',
                               'source', 'detail', 'created_at')))
    rows = bind.execute(sa.select(contacts).where(
        contacts.c.status.in_(sorted(_FRIENDSHIP_CONSENT)))).all()
    for row in rows:
        values = {"channel": row.channel, "scope": row.app_id or "", "address": row.address,
                  "status": _FRIENDSHIP_CONSENT[row.status], "categories": [],
                  "source": "friendship"}
        consent_id = bind.execute(sa.insert(consents).values(
            updated_at=row.updated_at, **values).returning(consents.c.id)).scalar_one()
        bind.execute(sa.insert(changes).values(
            consent_id=consent_id, created_at=row.updated_at,
            detail=f"friendship {row.status} (migration 0007)", **values))


def downgrade() -> None:
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.drop_column('consent_settings')
    op.drop_index('ix_consent_changes_app_id', table_name='consent_changes')
    op.drop_index('ix_consent_changes_consent_id', table_name='consent_changes')
    op.drop_table('consent_changes')
    op.drop_index('ix_consents_status', table_name='consents')
    op.drop_table('consents')
