"""Energy flows: hourly rollups per device (PV, load, grid import and export, battery charge and
discharge; kWh with the seconds of the hour each figure covers), and the devices they were computed for.

A ``{q}_kwh`` of NULL is an hour without a covered second (a gap), never zero energy. ``sample_counts``
are the numbers of telemetry values the hour was computed from (the neighbouring quarter-hours', its
own; flows/service.py): the job recomputes an hour when they change (late data, back-fills).

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
        CREATE TABLE flow_hours (
            device_id uuid NOT NULL,
            hour timestamptz NOT NULL,
            org_id uuid NOT NULL,
            site_id uuid NOT NULL,
            pv_kwh double precision,
            pv_covered_s double precision NOT NULL DEFAULT 0,
            pv_source text,
            load_kwh double precision,
            load_covered_s double precision NOT NULL DEFAULT 0,
            load_source text,
            grid_import_kwh double precision,
            grid_import_covered_s double precision NOT NULL DEFAULT 0,
            grid_import_source text,
            grid_export_kwh double precision,
            grid_export_covered_s double precision NOT NULL DEFAULT 0,
            grid_export_source text,
            battery_charge_kwh double precision,
            battery_charge_covered_s double precision NOT NULL DEFAULT 0,
            battery_charge_source text,
            battery_discharge_kwh double precision,
            battery_discharge_covered_s double precision NOT NULL DEFAULT 0,
            battery_discharge_source text,
            sample_counts integer[] NOT NULL,
            computed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (device_id, hour)
        );
        CREATE INDEX flow_hours_org_site_hour ON flow_hours (org_id, site_id, hour);
        CREATE INDEX flow_hours_hour ON flow_hours (hour);
        CREATE TABLE flow_devices (
            device_id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            site_id uuid NOT NULL,
            first_hour timestamptz NOT NULL,
            checked_until timestamptz NOT NULL
        );
        CREATE INDEX flow_devices_org_site ON flow_devices (org_id, site_id);
        """
    )


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
