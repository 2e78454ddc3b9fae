"""Trading domain: sites' batteries, tariffs and prices, strategies, forecasts, dispatches, schedules
(planned and actual), emergency stops.

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
        CREATE TABLE sites (
            site_id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            timezone text NOT NULL DEFAULT 'Europe/London',
            capacity_kwh double precision NOT NULL CHECK (capacity_kwh > 0),
            max_charge_kw double precision NOT NULL CHECK (max_charge_kw >= 0),
            max_discharge_kw double precision NOT NULL CHECK (max_discharge_kw >= 0),
            charge_efficiency double precision NOT NULL DEFAULT 0.95,
            discharge_efficiency double precision NOT NULL DEFAULT 0.95,
            soc_min_pct double precision NOT NULL DEFAULT 10,
            soc_max_pct double precision NOT NULL DEFAULT 100,
            degradation_p_per_kwh double precision NOT NULL DEFAULT 2,
            import_limit_kw double precision,
            export_limit_kw double precision,
            soc_pct double precision,
            soc_at timestamptz,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX sites_org ON sites (org_id);

        -- Tariffs: fixed (one rate), time_of_use (rates by local time of day), dynamic (a market feed).
        CREATE TABLE tariffs (
            tariff_id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            name text NOT NULL,
            direction text NOT NULL CHECK (direction IN ('import', 'export')),
            kind text NOT NULL CHECK (kind IN ('fixed', 'time_of_use', 'dynamic')),
            fixed_p_per_kwh double precision,
            market text,
            region text NOT NULL DEFAULT '',
            standing_charge_p_per_day double precision NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL DEFAULT now(),
            CHECK (kind <> 'fixed' OR fixed_p_per_kwh IS NOT NULL),
            CHECK (kind <> 'dynamic' OR market IS NOT NULL)
        );
        CREATE TABLE tariff_rates (
            tariff_id uuid NOT NULL REFERENCES tariffs ON DELETE CASCADE,
            start_local time NOT NULL,
            end_local time NOT NULL,  -- end <= start wraps past midnight
            p_per_kwh double precision NOT NULL,
            PRIMARY KEY (tariff_id, start_local)
        );
        CREATE TABLE site_tariffs (
            site_id uuid NOT NULL REFERENCES sites ON DELETE CASCADE,
            direction text NOT NULL CHECK (direction IN ('import', 'export')),
            tariff_id uuid NOT NULL REFERENCES tariffs,
            PRIMARY KEY (site_id, direction)
        );
        CREATE TABLE prices (
            market text NOT NULL,
            region text NOT NULL DEFAULT '',
            direction text NOT NULL CHECK (direction IN ('import', 'export')),
            start_at timestamptz NOT NULL,
            end_at timestamptz NOT NULL,
            p_per_kwh double precision NOT NULL,
            published_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (market, region, direction, start_at)
        );

        -- Strategy per site; demand charge: p per kW of the month's peak 30-min import.
        CREATE TABLE strategies (
            site_id uuid PRIMARY KEY REFERENCES sites ON DELETE CASCADE,
            kind text NOT NULL CHECK (kind IN ('arbitrage', 'self_consumption')),
            reserve_soc_pct double precision NOT NULL DEFAULT 0,
            demand_charge_p_per_kw double precision,
            billed_peak_kw double precision NOT NULL DEFAULT 0,
            windows jsonb NOT NULL DEFAULT '[]',
            horizon_h double precision NOT NULL DEFAULT 36,
            updated_at timestamptz NOT NULL DEFAULT now(),
            updated_by text NOT NULL DEFAULT ''
        );
        CREATE TABLE forecasts (
            site_id uuid NOT NULL,
            start_at timestamptz NOT NULL,
            end_at timestamptz NOT NULL,
            load_kw double precision NOT NULL,
            pv_kw double precision NOT NULL,
            model text NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (site_id, start_at)
        );
        CREATE TABLE dispatches (
            dispatch_id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            site_id uuid NOT NULL,
            provider text NOT NULL,
            battery_power_kw double precision NOT NULL,
            start_at timestamptz NOT NULL,
            end_at timestamptz NOT NULL,
            status text NOT NULL CHECK (status IN ('accepted', 'rejected', 'executed')),
            reason text,
            received_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX dispatches_site_time ON dispatches (site_id, end_at);

        -- Schedules: one schedule_id per site, a new version per plan; planned slots kept forever,
        -- actuals recorded beside them (planned vs actual).
        CREATE TABLE schedules (
            schedule_id uuid NOT NULL,
            version integer NOT NULL CHECK (version >= 1),
            org_id uuid NOT NULL,
            site_id uuid NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            valid_until timestamptz NOT NULL,
            trigger text NOT NULL,
            status text NOT NULL,
            method text NOT NULL,
            objective_p double precision,
            relaxations jsonb NOT NULL DEFAULT '[]',
            PRIMARY KEY (schedule_id, version)
        );
        CREATE INDEX schedules_site ON schedules (site_id, version DESC);
        CREATE TABLE schedule_slots (
            schedule_id uuid NOT NULL,
            version integer NOT NULL,
            start_at timestamptz NOT NULL,
            end_at timestamptz NOT NULL,
            mode text NOT NULL,
            battery_power_kw double precision NOT NULL,
            soc_pct double precision NOT NULL,
            grid_kw double precision NOT NULL,
            import_p_per_kwh double precision NOT NULL,
            export_p_per_kwh double precision NOT NULL,
            reason text NOT NULL,
            PRIMARY KEY (schedule_id, version, start_at),
            FOREIGN KEY (schedule_id, version) REFERENCES schedules ON DELETE CASCADE
        );
        CREATE TABLE actuals (
            site_id uuid NOT NULL,
            start_at timestamptz NOT NULL,
            battery_power_kw double precision NOT NULL,
            soc_pct double precision,
            grid_kw double precision,
            PRIMARY KEY (site_id, start_at)
        );

        -- Emergency stop: site_id NULL stops the whole org. Active until released.
        CREATE TABLE emergency_stops (
            stop_id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            site_id uuid,
            reason text NOT NULL,
            created_by text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            released_at timestamptz,
            released_by text
        );
        CREATE INDEX emergency_stops_active ON emergency_stops (org_id) WHERE released_at IS NULL;
        """
    )


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
