"""Alembic environment: run by `engine.db.migrate` (never by an `alembic.ini`). An advisory
lock makes concurrent starts (several API processes, a CLI) migrate one at a time."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from engine.db.schema import metadata

MIGRATION_LOCK = 7_240_311  # pg_advisory_lock id (any constant of ours)


def run() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url
    engine = create_engine(url)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
        conn.commit()
        try:
            context.configure(connection=conn, target_metadata=metadata)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
            conn.commit()
    engine.dispose()


run()
