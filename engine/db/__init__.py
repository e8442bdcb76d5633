"""The PostgreSQL edge: the control plane (keys, users, roles, sessions, the audit log and,
for distributed marketing, partners, contacts, approvals and sends).

`migrate(url)` brings a database to the newest schema (Alembic, run by `kairos setup`,
`kairos up` and the test fixtures); `new_engine(url)` makes the async engine a process uses;
`engine.db.control.ControlPlane` is the access store in domain words."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def sync_url(url: str) -> str:
    """SQLAlchemy URL with the psycopg 3 driver, from postgres:// or postgresql:// forms."""
    for old in ("postgres://", "postgresql://"):
        if url.startswith(old):
            return "postgresql+psycopg://" + url[len(old):]
    return url


def migrate(url: str) -> None:
    """Upgrade the database at `url` to the newest revision (idempotent, safe to run from
    several processes at once)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    command.upgrade(cfg, "head")


def new_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(sync_url(url), pool_size=pool_size, max_overflow=5,
                               pool_pre_ping=True, pool_recycle=1800)
