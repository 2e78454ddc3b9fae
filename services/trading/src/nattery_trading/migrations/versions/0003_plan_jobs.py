"""Re-plans through the work queue, forecast baselines from actuals, forecast source per schedule.

- ``plan_jobs``: one row per re-plan job that made a schedule version (idempotency: a redelivered job
  finds its key and publishes nothing new; ``published_at`` NULL means "stored, not yet announced").
- ``actuals`` gain ``load_kw`` and ``pv_kw`` (the history the baseline forecasts learn from).
- ``schedules.forecast``: which load/PV forecast source each version used.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE plan_jobs (
            job_key uuid PRIMARY KEY,
            site_id uuid NOT NULL,
            schedule_id uuid NOT NULL,
            version integer NOT NULL,
            trigger text NOT NULL,
            worker text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            published_at timestamptz
        );
        CREATE INDEX plan_jobs_site ON plan_jobs (site_id, created_at DESC);
        ALTER TABLE actuals ADD COLUMN load_kw double precision, ADD COLUMN pv_kw double precision;
        ALTER TABLE schedules ADD COLUMN forecast jsonb NOT NULL DEFAULT '{}';
        """
    )


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
