"""The Alembic migrations produce exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from clowder_ml.db import migrate
from clowder_ml.db.models import Base


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
        migrate.upgrade(engine)  # idempotent
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


def test_sqlite_schema_matches_models(tmp_path: object) -> None:
    assert _diff(f"sqlite:///{tmp_path}/m.sqlite3") == []


def test_postgresql_schema_matches_models(pg_url: str) -> None:
    assert _diff(pg_url) == []
