"""Core tables: accounts, password history, TOTP credentials, tokens, audit log."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("username_key", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("groups", sa.JSON, nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("password_changed_at", TS),
        sa.Column("password_expires_at", TS),
        sa.Column("expired_notified", sa.Boolean, nullable=False),
        sa.Column("never_expires", sa.Boolean, nullable=False),
        sa.Column("must_change", sa.Boolean, nullable=False),
        sa.Column("temporary", sa.Boolean, nullable=False),
        sa.Column("grace_used", sa.Integer, nullable=False),
        sa.Column("failed_count", sa.Integer, nullable=False),
        sa.Column("failure_window_start", TS),
        sa.Column("locked_at", TS),
        sa.Column("locked_until", TS),
        sa.Column("lock_reason", sa.String(16)),
        sa.Column("mfa_failed_count", sa.Integer, nullable=False),
        sa.Column("recovery_email", sa.String(320)),
        sa.Column("recovery_email_verified_at", TS),
        sa.Column("last_login_at", TS),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("username_key", name="uq_accounts_username_key"),
        sa.UniqueConstraint("email_key", name="uq_accounts_email_key"),
    )
    op.create_index("ix_accounts_password_expires_at", "accounts", ["password_expires_at"])
    op.create_index("ix_accounts_locked_until", "accounts", ["locked_until"])
    op.create_table(
        "password_history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_password_history"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            ondelete="CASCADE",
            name="fk_password_history_account_id_accounts",
        ),
    )
    op.create_index("ix_password_history_account_id", "password_history", ["account_id"])
    op.create_table(
        "totp_credentials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("sealed_seed", sa.LargeBinary, nullable=False),
        sa.Column("confirmed_at", TS),
        sa.Column("last_step", sa.Integer),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_totp_credentials"),
        sa.UniqueConstraint("account_id", name="uq_totp_credentials_account_id"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            ondelete="CASCADE",
            name="fk_totp_credentials_account_id_accounts",
        ),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS),
        sa.Column("revoked_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            ondelete="CASCADE",
            name="fk_tokens_account_id_accounts",
        ),
    )
    op.create_index("ix_tokens_account_id", "tokens", ["account_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer),
        sa.Column("subject", sa.String(320), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("via", sa.String(64), nullable=False),
        sa.Column("client", sa.String(128), nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_account_id", "audit_log", ["account_id"])


def downgrade() -> None:
    for table in ("audit_log", "tokens", "totp_credentials", "password_history", "accounts"):
        op.drop_table(table)
