"""Prices and tariffs carry a currency; a forecast may give PV without load.

- ``tariffs.currency`` and ``prices.currency`` (ISO 4217, default GBP: every existing row is pence per
  kWh). ``p_per_kwh`` columns hold the minor unit of that currency per kWh (pence, euro cents); a site
  is planned in its tariff's currency from prices of that currency only.
- ``forecasts.load_kw`` nullable: a PV-only forecast (integration's pvlib forecast) says nothing of
  load, and trading's load baseline covers it.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE tariffs ADD COLUMN currency text NOT NULL DEFAULT 'GBP' CHECK (currency ~ '^[A-Z]{3}$');
        ALTER TABLE prices ADD COLUMN currency text NOT NULL DEFAULT 'GBP' CHECK (currency ~ '^[A-Z]{3}$');
        ALTER TABLE forecasts ALTER COLUMN load_kw DROP NOT NULL;
        """
    )


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
