"""Processed events: consumers are idempotent by CloudEvent id (ARCHITECTURE §5).

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE processed_events (
            event_id uuid PRIMARY KEY,
            queue text NOT NULL,
            processed_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX processed_events_processed_at ON processed_events (processed_at);
        """
    )


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
