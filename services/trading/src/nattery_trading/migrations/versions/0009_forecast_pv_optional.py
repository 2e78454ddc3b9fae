"""A forecast may give load without PV.

- ``forecasts.pv_kw`` nullable: analytics' load forecast says nothing of PV, so it must not overwrite
  integration's weather-based PV forecast for the same slots (the upsert keeps the PV it had), and
  trading's PV baseline covers slots no forecast gave PV for.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE forecasts ALTER COLUMN pv_kw DROP NOT NULL")


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
