"""Distributed marketing: template and journey versions, partner groups, releases, contacts,
campaigns and their members, approvals, messages, sends, suppressions, bounces, engagement.

A frozen copy of the tables as this revision made them (engine/db/schema.py is what the
queries use; a later change is a new revision, never an edit here).

Revision ID: 0002
"""

from alembic import op
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"

NOW = text("now()")
metadata = MetaData()
# the tables of 0001 that these refer to (not created here)
Table("partners", metadata, Column("id", Text, primary_key=True))


dm_template_versions = Table(
    "dm_template_versions", metadata,
    Column("version", Text, primary_key=True),  # sha256 of the template + brand documents
    Column("template_id", Text, nullable=False),
    Column("document", JSONB, nullable=False),
    Column("brand_document", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

dm_journey_versions = Table(
    "dm_journey_versions", metadata,
    Column("version", Text, primary_key=True),  # Journey.pinned_version(template versions)
    Column("journey_id", Text, nullable=False),
    Column("document", JSONB, nullable=False),
    Column("templates", JSONB, nullable=False),  # [template version of step 0, 1, ...]
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

dm_partner_groups = Table(
    "dm_partner_groups", metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

dm_group_members = Table(
    "dm_group_members", metadata,
    Column("group_id", Text, ForeignKey("dm_partner_groups.id", ondelete="CASCADE"), primary_key=True),
    Column("partner_id", Text, ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True),
)

dm_releases = Table(
    "dm_releases", metadata,
    Column("id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("subject", Text, nullable=False),  # the journey or template id
    Column("group_id", Text, ForeignKey("dm_partner_groups.id", ondelete="CASCADE")),
    Column("partner_id", Text, ForeignKey("partners.id", ondelete="CASCADE")),
    Column("released_by", Text, nullable=False),
    Column("released_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("retired_at", DateTime(timezone=True)),
    CheckConstraint("kind IN ('journey', 'template')", name="dm_releases_kind"),
    CheckConstraint("(group_id IS NULL) <> (partner_id IS NULL)", name="dm_releases_audience"),
)

dm_contacts = Table(
    "dm_contacts", metadata,
    Column("id", Text, primary_key=True),
    Column("partner_id", Text, ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    Column("email", Text, nullable=False),
    Column("email_key", Text, nullable=False),  # suppression_key(email): case-folded
    Column("first_name", Text, nullable=False, server_default=""),
    Column("last_name", Text, nullable=False, server_default=""),
    Column("attributes", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("visitor_id", Text),
    Column("user_id", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    UniqueConstraint("partner_id", "email_key", name="dm_contacts_partner_email"),
)
Index("dm_contacts_partner", dm_contacts.c.partner_id, dm_contacts.c.created_at)
Index("dm_contacts_visitor", dm_contacts.c.visitor_id)
Index("dm_contacts_user", dm_contacts.c.user_id)

dm_campaigns = Table(
    "dm_campaigns", metadata,
    Column("id", Text, primary_key=True),
    Column("partner_id", Text, ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("subject", Text, nullable=False),  # the journey or template id
    Column("name", Text, nullable=False, server_default=""),
    Column("version", Text, nullable=False),  # the pinned template or journey version
    Column("values", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("approval", Text, nullable=False),  # none | required (of the pinned content)
    Column("idempotency_key", Text),
    Column("test", Boolean, nullable=False, server_default=text("false")),
    Column("launched_at", DateTime(timezone=True)),  # sent (quick) or enrolled (journey)
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("kind IN ('journey', 'quick')", name="dm_campaigns_kind"),
    UniqueConstraint("partner_id", "idempotency_key", name="dm_campaigns_idempotency"),
)
Index("dm_campaigns_partner", dm_campaigns.c.partner_id, dm_campaigns.c.created_at)

dm_campaign_members = Table(
    "dm_campaign_members", metadata,
    Column("campaign_id", Text, ForeignKey("dm_campaigns.id", ondelete="CASCADE"), primary_key=True),
    Column("contact_id", Text, ForeignKey("dm_contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("partner_id", Text, nullable=False),
    Column("values", JSONB, nullable=False, server_default=text("'{}'::jsonb")),  # per member
    Column("status", Text, nullable=False, server_default="pending"),  # pending|active|done|exited
    Column("step", Integer, nullable=False, server_default=text("0")),
    Column("due_at", DateTime(timezone=True)),
    Column("in_flight", Boolean, nullable=False, server_default=text("false")),
    Column("enrolled_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("exit_reason", Text),
    Column("sent", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
)
Index("dm_members_due", dm_campaign_members.c.due_at,
      postgresql_where=text("status = 'active' AND NOT in_flight"))

dm_approvals = Table(
    "dm_approvals", metadata,
    Column("id", Text, primary_key=True),
    Column("campaign_id", Text, ForeignKey("dm_campaigns.id", ondelete="CASCADE"), nullable=False),
    Column("partner_id", Text, nullable=False),
    Column("content", Text, nullable=False),  # approval_content(version, values, audience)
    Column("values", JSONB, nullable=False),  # what the approver saw
    Column("audience", JSONB, nullable=False),
    Column("submitted_by", Text, nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("state", Text, nullable=False),
    Column("decided_by", Text),
    Column("decided_at", DateTime(timezone=True)),
    Column("reason", Text),
    CheckConstraint("decided_by IS NULL OR decided_by <> submitted_by", name="dm_approvals_not_self"),
    CheckConstraint("state IN ('pending', 'approved', 'rejected', 'superseded')", name="dm_approvals_state"),
)
Index("dm_approvals_campaign", dm_approvals.c.campaign_id, dm_approvals.c.submitted_at)
Index("dm_approvals_pending", dm_approvals.c.submitted_at, postgresql_where=text("state = 'pending'"))

dm_messages = Table(
    "dm_messages", metadata,
    Column("id", Text, primary_key=True),
    Column("campaign_id", Text, ForeignKey("dm_campaigns.id", ondelete="CASCADE"), nullable=False),
    Column("partner_id", Text, nullable=False),
    Column("step", Integer, nullable=False),
    Column("template_id", Text, nullable=False),
    Column("template_version", Text, ForeignKey("dm_template_versions.version"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    UniqueConstraint("campaign_id", "step", name="dm_messages_campaign_step"),
)

dm_sends = Table(
    "dm_sends", metadata,
    Column("id", Text, primary_key=True),  # new_send_id: a-z0-9, in the Message-ID and VERP
    Column("message_id", Text, ForeignKey("dm_messages.id", ondelete="CASCADE"), nullable=False),
    Column("campaign_id", Text, nullable=False),
    Column("partner_id", Text, nullable=False),
    Column("contact_id", Text, ForeignKey("dm_contacts.id", ondelete="CASCADE")),  # None: a test send
    Column("to_email", Text, nullable=False),
    Column("email_key", Text, nullable=False),
    Column("state", Text, nullable=False, server_default="queued"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("claimed_by", Text),
    Column("claim_until", DateTime(timezone=True)),
    Column("sent_at", DateTime(timezone=True)),
    Column("last_code", Integer),
    Column("last_reply", Text, nullable=False, server_default=""),
    Column("links", JSONB, nullable=False, server_default=text("'[]'::jsonb")),  # as rendered
    Column("test", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("state IN ('queued', 'claimed', 'retry', 'sent', 'bounced', 'failed', "
                    "'suppressed', 'relay_error')", name="dm_sends_state"),
    UniqueConstraint("message_id", "contact_id", name="dm_sends_message_contact"),
)
Index("dm_sends_due", dm_sends.c.next_at, postgresql_where=text("state IN ('queued', 'retry')"))
Index("dm_sends_claimed", dm_sends.c.claim_until, postgresql_where=text("state = 'claimed'"))
Index("dm_sends_partner", dm_sends.c.partner_id, dm_sends.c.campaign_id)

dm_suppressions = Table(
    "dm_suppressions", metadata,
    Column("email_key", Text, primary_key=True),  # brand-wide
    Column("reason", Text, nullable=False),  # unsubscribed | hard_bounce | soft_bounces | manual
    Column("send_id", Text),
    Column("partner_id", Text),  # whose mail it came from (the brand sees it; partners do not)
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

dm_bounces = Table(
    "dm_bounces", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("send_id", Text, nullable=False),
    Column("partner_id", Text, nullable=False),
    Column("email_key", Text, nullable=False),
    Column("kind", Text, nullable=False),  # hard | soft
    Column("status", Text, nullable=False, server_default=""),
    Column("diagnostic", Text, nullable=False, server_default=""),
    Column("at", DateTime(timezone=True), nullable=False, server_default=NOW),
)
Index("dm_bounces_email", dm_bounces.c.email_key, dm_bounces.c.at)

dm_engagement = Table(
    "dm_engagement", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("send_id", Text, ForeignKey("dm_sends.id", ondelete="CASCADE"), nullable=False),
    Column("partner_id", Text, nullable=False),
    Column("campaign_id", Text, nullable=False),
    Column("kind", Text, nullable=False),  # open | click
    Column("link", Integer, nullable=False, server_default=text("-1")),  # -1: an open
    Column("url", Text, nullable=False, server_default=""),
    Column("at", DateTime(timezone=True), nullable=False, server_default=NOW),
    UniqueConstraint("send_id", "kind", "link", name="dm_engagement_once"),
)
Index("dm_engagement_partner", dm_engagement.c.partner_id, dm_engagement.c.campaign_id)

dm_bot_hits = Table(
    "dm_bot_hits", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("send_id", Text, nullable=False),
    Column("partner_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("link", Integer, nullable=False, server_default=text("-1")),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=NOW),
)
Index("dm_bot_hits_send", dm_bot_hits.c.send_id, dm_bot_hits.c.at)


DM_TABLES = [t for name, t in metadata.tables.items() if name.startswith("dm_")]


def upgrade() -> None:
    metadata.create_all(op.get_bind(), tables=DM_TABLES)


def downgrade() -> None:
    metadata.drop_all(op.get_bind(), tables=DM_TABLES)
