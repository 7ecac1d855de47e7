"""Clowder: one delivery at a time works on a request (a lease), and its final answer is kept

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clowder_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_owner', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('final_status', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('final_message', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('clowder_requests', schema=None) as batch_op:
        batch_op.drop_column('final_message')
        batch_op.drop_column('final_status')
        batch_op.drop_column('lease_until')
        batch_op.drop_column('lease_owner')
