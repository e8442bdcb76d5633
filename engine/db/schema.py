"""The control plane's tables (SQLAlchemy Core). Migrations in `engine/db/migrations` create
them; this module is what the queries are written against. Hot paths never read these."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

NOW = text("now()")

partners = Table(
    "partners", metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

users = Table(
    "users", metadata,
    Column("id", Text, primary_key=True),
    Column("email", Text, nullable=False),
    Column("password_hash", Text),
    Column("role", Text, nullable=False),
    Column("partner_id", Text, ForeignKey("partners.id", ondelete="CASCADE")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("disabled_at", DateTime(timezone=True)),
    CheckConstraint("role IN ('admin', 'marketer', 'analyst', 'partner')", name="users_role"),
    CheckConstraint("(role = 'partner') = (partner_id IS NOT NULL)", name="users_partner_scope"),
)
Index("users_email_lower", func.lower(users.c.email), unique=True)

api_keys = Table(
    "api_keys", metadata,
    Column("id", Text, primary_key=True),  # the shown prefix, e.g. kp_AbCd1234
    Column("kind", Text, nullable=False),
    Column("key_hash", LargeBinary, nullable=False, unique=True),
    Column("name", Text, nullable=False, server_default=""),
    Column("scopes", ARRAY(Text), nullable=False, server_default="{}"),
    Column("origins", ARRAY(Text), nullable=False, server_default="{}"),
    Column("partner_id", Text, ForeignKey("partners.id", ondelete="CASCADE")),
    Column("created_by", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("revoked_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("kind IN ('public', 'secret')", name="api_keys_kind"),
)
Index("api_keys_updated", api_keys.c.updated_at)

sessions = Table(
    "sessions", metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("user_id", Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("ip", Text, nullable=False, server_default=""),
    Column("user_agent", Text, nullable=False, server_default=""),
)
Index("sessions_user", sessions.c.user_id)

login_links = Table(
    "login_links", metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("user_id", Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False, server_default=""),
    Column("partner_id", Text),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("ip", Text, nullable=False, server_default=""),
)
Index("audit_log_at", audit_log.c.at)
Index("audit_log_partner", audit_log.c.partner_id, audit_log.c.id)

secrets = Table(
    "secrets", metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)
