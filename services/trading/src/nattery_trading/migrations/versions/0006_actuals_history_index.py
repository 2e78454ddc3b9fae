"""A covering index for the forecasts' history read.

Every plan reads its site's last 28 days of half-hourly actuals (~1,340 rows). Actuals arrive slot by
slot for the whole fleet, so one site's rows lie on ~1,340 different heap pages: 30 ms of PostgreSQL
time per site (bench-trading, 10,000 sites), the largest part of a fleet re-plan's database work. The
index holds load and PV beside the key, in site order: an index-only scan of a few pages (~3 ms).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX actuals_history ON actuals (site_id, start_at) INCLUDE (load_kw, pv_kw)")


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
