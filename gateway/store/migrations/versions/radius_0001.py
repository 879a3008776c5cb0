"""RADIUS: live accounting sessions per account and NAS."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "radius_0001"
down_revision = "0001_core"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "radius_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("resource", sa.String(64), nullable=False),
        sa.Column("nas_address", sa.String(64), nullable=False),
        sa.Column("acct_session_id", sa.String(253), nullable=False),
        sa.Column("account_key", sa.String(320), nullable=False),
        sa.Column("username", sa.String(253), nullable=False),
        sa.Column("nas_ip", sa.String(64), nullable=False),
        sa.Column("nas_identifier", sa.String(253), nullable=False),
        sa.Column("framed_ip", sa.String(64), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("ended_at", TS),
        sa.Column("end_reason", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_radius_sessions"),
        sa.UniqueConstraint(
            "nas_address", "acct_session_id", name="uq_radius_sessions_nas_address"
        ),
    )
    op.create_index(
        "ix_radius_sessions_account_key", "radius_sessions", ["account_key", "ended_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_radius_sessions_account_key", table_name="radius_sessions")
    op.drop_table("radius_sessions")
