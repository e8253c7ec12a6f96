"""time-aware delivery: scheduled messages, validity, quiet hours, priority (issue 17)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 18:55:00

* ``messages.send_at`` / ``valid_until`` / ``priority`` / ``quiet_hours``: when the message
  may go, resolved when it was accepted (``shared.sendtime``); an index on
  ``(status, send_at)`` for the schedule's rebuild after a Redis loss.
* ``app_settings``: an app's defaults (its quiet hours), the bootstrap ``default`` app's too.
* ``flow_runs.launch``: what a launch asked of every step's message: send_at (the first
  step), valid_until, quiet hours, priority and category.
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('send_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('valid_until', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('priority', sa.String(length=16), nullable=False,
                                   server_default='normal'))
        batch.add_column(sa.Column('quiet_hours', sa.JSON(), nullable=True))
        batch.create_index('ix_messages_status_send_at', ['status', 'send_at'])
    op.create_table(
        'app_settings',
        sa.Column('app_id', sa.String(length=36), primary_key=True),
        sa.Column('quiet_hours', sa.JSON(), nullable=True),
        sa.Column('updated_at', sa.DateTime(), nullable=True),
    )
    with op.batch_alter_table('flow_runs') as batch:
        batch.add_column(sa.Column('launch', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('flow_runs') as batch:
        batch.drop_column('launch')
    op.drop_table('app_settings')
    with op.batch_alter_table('messages') as batch:
        batch.drop_index('ix_messages_status_send_at')
        batch.drop_column('quiet_hours')
        batch.drop_column('priority')
        batch.drop_column('valid_until')
        batch.drop_column('send_at')
