"""Mail queue and organisation setting overrides (recovery e-mail switch)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0400_mail_resets"
down_revision = "0001_core"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mail_queue",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("sealed_body", sa.LargeBinary),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("lease_until", TS),
        sa.Column("sent_at", TS),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mail_queue"),
    )
    op.create_index("ix_mail_queue_account_id", "mail_queue", ["account_id"])
    op.create_index("ix_mail_queue_status_next", "mail_queue", ["status", "next_attempt_at"])
    op.create_table(
        "org_overrides",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.JSON),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_org_overrides"),
    )


def downgrade() -> None:
    op.drop_table("org_overrides")
    op.drop_table("mail_queue")
