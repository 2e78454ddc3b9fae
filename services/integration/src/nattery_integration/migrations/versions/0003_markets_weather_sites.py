"""Markets (versioned price sets, GB imbalance), sites known from device-service with their PV arrays,
weather and PV forecasts.

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
        -- One row per version of a complete price set (a delivery window of one market/region/direction).
        -- A new version only when the prices differ (digest); published with market.prices_updated.
        CREATE TABLE price_sets (
            market text NOT NULL,
            region text NOT NULL DEFAULT '',
            direction text NOT NULL CHECK (direction IN ('import', 'export')),
            window_start timestamptz NOT NULL,
            window_end timestamptz NOT NULL CHECK (window_end > window_start),
            version integer NOT NULL CHECK (version >= 1),
            provider text NOT NULL,
            currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            unit text NOT NULL,
            digest text NOT NULL,
            prices jsonb NOT NULL,  -- [[start, end, minor_per_kwh, native], ...]
            fetched_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (market, region, direction, window_start, version)
        );

        -- GB settlement periods' NIV and system prices, per source (elexon, modo).
        CREATE TABLE niv_periods (
            source text NOT NULL,
            settlement_date date NOT NULL,
            settlement_period integer NOT NULL CHECK (settlement_period BETWEEN 1 AND 50),
            start_at timestamptz,
            niv_mwh double precision NOT NULL,
            system_sell_price_gbp_per_mwh double precision,
            system_buy_price_gbp_per_mwh double precision,
            fetched_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (source, settlement_date, settlement_period)
        );

        -- Which org owns which site, from device-service's device.registered (never moved between orgs).
        CREATE TABLE registered_sites (
            site_id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            event_id uuid NOT NULL,
            registered_at timestamptz NOT NULL DEFAULT now()
        );

        -- A site's location and PV array (pvlib conventions: azimuth degrees east of north, 180 = south).
        CREATE TABLE pv_arrays (
            site_id uuid PRIMARY KEY REFERENCES registered_sites ON DELETE CASCADE,
            org_id uuid NOT NULL,
            latitude double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
            longitude double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
            altitude_m double precision NOT NULL DEFAULT 0,
            kwp double precision NOT NULL CHECK (kwp > 0),
            tilt_deg double precision NOT NULL CHECK (tilt_deg BETWEEN 0 AND 90),
            azimuth_deg double precision NOT NULL CHECK (azimuth_deg >= 0 AND azimuth_deg <= 360),
            losses_pct double precision NOT NULL CHECK (losses_pct >= 0 AND losses_pct < 100),
            inverter_kw double precision CHECK (inverter_kw > 0),
            updated_by text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );

        -- The latest weather and PV forecast per site (what was last published).
        CREATE TABLE site_forecasts (
            site_id uuid PRIMARY KEY REFERENCES registered_sites ON DELETE CASCADE,
            provider text NOT NULL,
            weather jsonb NOT NULL,
            pv jsonb NOT NULL,
            digest text NOT NULL,
            fetched_at timestamptz NOT NULL DEFAULT now()
        );
        """
    )


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
