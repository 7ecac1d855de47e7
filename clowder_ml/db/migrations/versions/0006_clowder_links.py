"""Clowder: the accounts jobs run as and the extraction requests already taken

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('clowder_accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('clowder_url', sa.String(length=512), nullable=False),
    sa.Column('clowder_user_id', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('clowder_url', 'clowder_user_id'),
    sa.UniqueConstraint('user_id')
    )
    op.create_table('clowder_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('clowder_url', sa.String(length=512), nullable=False),
    sa.Column('clowder_job_id', sa.String(length=64), nullable=False),
    sa.Column('extractor', sa.String(length=128), nullable=False),
    sa.Column('clowder_dataset_id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=True),
    sa.Column('written_back', sa.JSON(), nullable=False),
    sa.Column('done', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('clowder_url', 'clowder_job_id')
    )


def downgrade() -> None:
    op.drop_table('clowder_requests')
    op.drop_table('clowder_accounts')
