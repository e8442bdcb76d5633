"""Access: partners, users, keys, sessions, one-time login links, the audit log, secrets.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0001"
down_revision = None

TS = sa.DateTime(timezone=True)
NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "partners",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("partner_id", sa.Text, sa.ForeignKey("partners.id", ondelete="CASCADE")),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
        sa.Column("disabled_at", TS),
        sa.CheckConstraint("role IN ('admin', 'marketer', 'analyst', 'partner')", name="users_role"),
        sa.CheckConstraint("(role = 'partner') = (partner_id IS NOT NULL)",
                           name="users_partner_scope"),
    )
    op.create_index("users_email_lower", "users", [sa.text("lower(email)")], unique=True)
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("key_hash", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("scopes", ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("origins", ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("partner_id", sa.Text, sa.ForeignKey("partners.id", ondelete="CASCADE")),
        sa.Column("created_by", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
        sa.Column("revoked_at", TS),
        sa.Column("updated_at", TS, nullable=False, server_default=NOW),
        sa.CheckConstraint("kind IN ('public', 'secret')", name="api_keys_kind"),
    )
    op.create_index("api_keys_updated", "api_keys", ["updated_at"])
    op.create_table(
        "sessions",
        sa.Column("token_hash", sa.LargeBinary, primary_key=True),
        sa.Column("user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("ip", sa.Text, nullable=False, server_default=""),
        sa.Column("user_agent", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("sessions_user", "sessions", ["user_id"])
    op.create_table(
        "login_links",
        sa.Column("token_hash", sa.LargeBinary, primary_key=True),
        sa.Column("user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False, server_default=NOW),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False, server_default=""),
        sa.Column("partner_id", sa.Text),
        sa.Column("detail", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("ip", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("audit_log_at", "audit_log", ["at"])
    op.create_index("audit_log_partner", "audit_log", ["partner_id", "id"])
    op.create_table(
        "secrets",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
    )


def downgrade() -> None:
    for name in ("secrets", "audit_log", "login_links", "sessions", "api_keys", "users", "partners"):
        op.drop_table(name)
