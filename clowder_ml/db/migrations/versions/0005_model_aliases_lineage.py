"""model registry: aliases, shares, lineage, reproductions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
import json

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_links',
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('direction', sa.String(length=3), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('ref', sa.String(length=64), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'direction', 'kind', 'ref', 'number')
    )
    with op.batch_alter_table('job_links', schema=None) as batch_op:
        batch_op.create_index('ix_job_links_target', ['kind', 'ref', 'number'], unique=False)

    op.create_table('model_alias_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.String(length=32), nullable=False),
    sa.Column('alias', sa.String(length=64), nullable=False),
    sa.Column('from_number', sa.Integer(), nullable=True),
    sa.Column('to_number', sa.Integer(), nullable=True),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('model_alias_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_alias_events_model_id'), ['model_id'],
                              unique=False)

    op.create_table('model_shares',
    sa.Column('model_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('permission', sa.String(length=8), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('model_id', 'user_id')
    )
    with op.batch_alter_table('model_shares', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_shares_user_id'), ['user_id'],
                              unique=False)

    op.create_table('model_aliases',
    sa.Column('model_id', sa.String(length=32), nullable=False),
    sa.Column('alias', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('model_id', 'alias')
    )
    with op.batch_alter_table('model_aliases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_aliases_version_id'), ['version_id'],
                              unique=False)

    op.create_table('model_reproductions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('verdict', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id')
    )
    with op.batch_alter_table('model_reproductions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_reproductions_version_id'), ['version_id'],
                              unique=False)

    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tags', sa.JSON(), nullable=False,
                                      server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column('source', sa.String(length=16), nullable=False,
                                      server_default='job'))
        batch_op.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_model_versions_parent_id', 'model_versions',
                                    ['parent_id'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('best_metric', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('best_mode', sa.String(length=8), nullable=True))

    _backfill_links()


def _backfill_links() -> None:
    """Lineage of the jobs that ran before this table existed: their pinned inputs, the
    model version each fine-tune registered and the dataset version each predict wrote."""
    conn = op.get_bind()
    links = set()
    for job_id, spec, result in conn.execute(sa.text("SELECT id, spec, result FROM jobs")):
        spec = json.loads(spec) if isinstance(spec, str) else (spec or {})
        result = json.loads(result) if isinstance(result, str) else (result or {})
        for item in spec.get("inputs", []):
            if item.get("kind") == "dataset" and item.get("version"):
                links.add((job_id, "in", "dataset", item["ref"], int(item["version"])))
            elif item.get("kind") == "model" and item.get("version"):
                links.add((job_id, "in", "model", item["ref"].removeprefix("mv_"),
                           int(item["version"])))
        pred = result.get("predictions") if isinstance(result, dict) else None
        if isinstance(pred, dict) and pred.get("dataset") and pred.get("version"):
            links.add((job_id, "out", "dataset", pred["dataset"], int(pred["version"])))
    for vid, number, job_id in conn.execute(sa.text(
            "SELECT id, number, job_id FROM model_versions WHERE job_id IS NOT NULL")):
        links.add((job_id, "out", "model", str(vid), int(number)))
    if links:
        conn.execute(sa.text("INSERT INTO job_links (job_id, direction, kind, ref, number) "
                             "VALUES (:j, :d, :k, :r, :n)"),
                     [{"j": j, "d": d, "k": k, "r": r, "n": n} for j, d, k, r, n in links])



def downgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_column('best_mode')
        batch_op.drop_column('best_metric')

    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_constraint('fk_model_versions_parent_id', type_='foreignkey')
        batch_op.drop_column('parent_id')
        batch_op.drop_column('source')
        batch_op.drop_column('tags')

    with op.batch_alter_table('model_reproductions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_reproductions_version_id'))

    op.drop_table('model_reproductions')
    with op.batch_alter_table('model_aliases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_aliases_version_id'))

    op.drop_table('model_aliases')
    with op.batch_alter_table('model_shares', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_shares_user_id'))

    op.drop_table('model_shares')
    with op.batch_alter_table('model_alias_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_alias_events_model_id'))

    op.drop_table('model_alias_events')
    with op.batch_alter_table('job_links', schema=None) as batch_op:
        batch_op.drop_index('ix_job_links_target')

    op.drop_table('job_links')
