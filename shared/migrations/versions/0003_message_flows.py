"""message flows: versioned definitions, runs, action links

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:59:33.808433
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('flows',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('app_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('app_id', 'name', 'version', name='uq_flows_version')
    )
    with op.batch_alter_table('flows', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_flows_app_id'), ['app_id'], unique=False)

    op.create_table('flow_links',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('flow_id', sa.Integer(), nullable=False),
    sa.Column('app_id', sa.String(length=36), nullable=False),
    sa.Column('contact', sa.JSON(), nullable=False),
    sa.Column('single_use', sa.Boolean(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.Column('run_id', sa.String(length=36), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['flow_id'], ['flows.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('flow_runs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('flow_id', sa.Integer(), nullable=False),
    sa.Column('app_id', sa.String(length=36), nullable=False),
    sa.Column('contact', sa.JSON(), nullable=False),
    sa.Column('contact_key', sa.String(length=200), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('native', sa.Boolean(), nullable=False),
    sa.Column('provider_run_id', sa.String(length=100), nullable=True),
    sa.Column('current_step', sa.String(length=100), nullable=True),
    sa.Column('current_message_id', sa.String(length=36), nullable=True),
    sa.Column('reasked', sa.Integer(), nullable=False),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.Column('end_id', sa.String(length=100), nullable=True),
    sa.Column('timed_out', sa.Boolean(), nullable=False),
    sa.Column('deadline_at', sa.DateTime(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['flow_id'], ['flows.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('provider_run_id')
    )
    with op.batch_alter_table('flow_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_flow_runs_app_id'), ['app_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_flow_runs_contact_key'), ['contact_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_flow_runs_current_message_id'), ['current_message_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_flow_runs_deadline_at'), ['deadline_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_flow_runs_flow_id'), ['flow_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('flow_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_flow_runs_flow_id'))
        batch_op.drop_index(batch_op.f('ix_flow_runs_deadline_at'))
        batch_op.drop_index(batch_op.f('ix_flow_runs_current_message_id'))
        batch_op.drop_index(batch_op.f('ix_flow_runs_contact_key'))
        batch_op.drop_index(batch_op.f('ix_flow_runs_app_id'))

    op.drop_table('flow_runs')
    op.drop_table('flow_links')
    with op.batch_alter_table('flows', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_flows_app_id'))

    op.drop_table('flows')
