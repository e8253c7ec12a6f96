"""message templates, and the template version each message was rendered from

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 18:40:00

* ``templates``: one row per saved version of an app's template (content per locale and
  channel, as JSON); ``(app_id, name, version)`` is unique.
* ``messages.template_name`` / ``template_version`` / ``template_locale``: what a templated
  message was rendered from when it was accepted (issue 19).
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('templates',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('app_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('app_id', 'name', 'version', name='uq_templates_version')
    )
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_templates_app_id'), ['app_id'], unique=False)
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('template_name', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('template_version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('template_locale', sa.String(length=35), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('template_locale')
        batch_op.drop_column('template_version')
        batch_op.drop_column('template_name')
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_templates_app_id'))
    op.drop_table('templates')
