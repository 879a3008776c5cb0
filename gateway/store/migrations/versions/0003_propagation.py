"""Propagation: the desired-state table (one row per account and resource)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_propagation"
down_revision = "0001_core"
branch_labels = ("propagation",)
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "propagation_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("resource", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("delivered_version", sa.Integer, nullable=False),
        sa.Column("locked", sa.Boolean, nullable=False),
        sa.Column("expired", sa.Boolean, nullable=False),
        sa.Column("account_disabled", sa.Boolean, nullable=False),
        sa.Column("sealed_password", sa.LargeBinary),
        sa.Column("password_version", sa.Integer, nullable=False),
        sa.Column("password_set_at", TS),
        sa.Column("temporary", sa.Boolean, nullable=False),
        sa.Column("owned", sa.JSON, nullable=False),
        sa.Column("target_key", sa.String(1024)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("next_try_at", TS, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", TS),
        sa.Column("changed_at", TS, nullable=False),
        sa.Column("delivered_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_propagation_state"),
        sa.UniqueConstraint("account_id", "resource", name="uq_propagation_state_account_resource"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            ondelete="CASCADE",
            name="fk_propagation_state_account_id_accounts",
        ),
    )
    op.create_index("ix_propagation_state_due", "propagation_state", ["status", "next_try_at"])
    op.create_index("ix_propagation_state_resource", "propagation_state", ["resource"])


def downgrade() -> None:
    op.drop_table("propagation_state")
