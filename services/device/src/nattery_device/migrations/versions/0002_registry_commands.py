"""Registry (sites, devices), presence history, commands, edge events.

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
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            slug text NOT NULL UNIQUE,            -- also the site's MQTT username: unique fleet-wide
            name text NOT NULL,
            location text,
            latitude double precision,
            longitude double precision,
            timezone text NOT NULL,
            safety_limits jsonb NOT NULL,
            mqtt_revoked_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX sites_org ON sites (org_id);

        CREATE TABLE devices (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            site_id uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
            slug text NOT NULL,
            kind text NOT NULL CHECK (kind IN ('inverter', 'meter', 'flow_transmitter')),
            profile text,
            serial text,
            meter_category text CHECK (meter_category IN ('PROD', 'CONS', 'STOR', 'INJ')),
            status text NOT NULL DEFAULT 'offline',
            status_reason text,
            status_at timestamptz,
            firmware text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (site_id, slug),
            CHECK ((kind = 'meter') = (meter_category IS NOT NULL))
        );
        CREATE INDEX devices_org ON devices (org_id);

        CREATE TABLE device_status_changes (
            id bigserial PRIMARY KEY,
            device_id uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
            org_id uuid NOT NULL,
            previous text,
            status text NOT NULL,
            reason text NOT NULL,
            at timestamptz NOT NULL
        );
        CREATE INDEX device_status_changes_device ON device_status_changes (device_id, at);

        CREATE TABLE commands (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            site_id uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
            device_id uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
            type text NOT NULL,
            params jsonb NOT NULL,
            state text NOT NULL,
            edge_status text,
            reason text,
            applied jsonb NOT NULL DEFAULT '{}'::jsonb,
            source text NOT NULL,                 -- api:<subject> | event:<type>
            idempotency_key text,
            request_hash text,
            issued_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            sent_at timestamptz,
            updated_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (org_id, idempotency_key)
        );
        CREATE INDEX commands_open ON commands (expires_at) WHERE state IN ('pending', 'sent', 'accepted');
        CREATE INDEX commands_device ON commands (device_id, issued_at DESC);

        CREATE TABLE command_transitions (
            id bigserial PRIMARY KEY,
            command_id uuid NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
            state text NOT NULL,
            edge_status text,
            reason text,
            at timestamptz NOT NULL
        );
        CREATE INDEX command_transitions_command ON command_transitions (command_id, id);

        CREATE TABLE edge_events (
            id bigserial PRIMARY KEY,
            org_id uuid NOT NULL,
            site_id uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
            device_id uuid REFERENCES devices (id) ON DELETE CASCADE,
            ts timestamptz NOT NULL,
            code text NOT NULL,
            severity text NOT NULL,
            message text NOT NULL,
            details jsonb NOT NULL DEFAULT '{}'::jsonb,
            received_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (device_id, ts, code)         -- a redelivered event is stored once
        );
        CREATE INDEX edge_events_site ON edge_events (site_id, ts DESC);

        -- Transactional outbox: an event is stored with the change it describes and published after.
        CREATE TABLE outbox (
            id uuid PRIMARY KEY,
            type text NOT NULL,
            envelope jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            published_at timestamptz
        );
        CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;
        """
    )


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
