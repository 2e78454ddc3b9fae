"""Day-ahead load forecasts as issued (one per site and local day; a re-issue replaces it).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE load_forecasts (
            site_id uuid NOT NULL,
            target_day date NOT NULL,
            org_id uuid NOT NULL,
            issued_at timestamptz NOT NULL,
            model text NOT NULL,
            reason text NOT NULL,
            points jsonb NOT NULL,
            PRIMARY KEY (site_id, target_day)
        );
        CREATE INDEX load_forecasts_org_site ON load_forecasts (org_id, site_id, target_day DESC);
        """
    )


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
