"""Index published outbox rows by publication time, for the relay's retention prune.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX outbox_published")
