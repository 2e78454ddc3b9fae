"""Each site's measured state (``site.state_measured`` from device-service), and actuals built from it.

- ``site_states``: the newest measured state per site (SOC, mean powers over the interval). Plans start
  from it while it is fresh (``NATTERY_TRADING__MEASURED_STATE_MAX_AGE_S``).
- ``actuals.measured_s``: how many seconds of measurements a slot's actuals average; each new interval
  is folded into the slot's means weighted by its length. NULL for actuals posted through the API.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE site_states (
            site_id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            measured_at timestamptz NOT NULL,
            window_start timestamptz NOT NULL,
            window_end timestamptz NOT NULL,
            soc_pct double precision,
            battery_power_kw double precision,
            load_kw double precision,
            pv_kw double precision,
            grid_kw double precision,
            samples integer NOT NULL,
            event_id uuid NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now()
        );
        ALTER TABLE actuals ADD COLUMN measured_s double precision;
        """
    )


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
