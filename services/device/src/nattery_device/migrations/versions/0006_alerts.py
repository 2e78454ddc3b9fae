"""Alert rules (per org, optionally narrowed to a site, device kind or device), alerts with their
history, one open alert per rule and device (partial unique index), and the orgs whose default rules
were created once.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE alert_rules (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            name text NOT NULL,
            kind text NOT NULL CHECK (kind IN ('threshold', 'band', 'fault', 'offline')),
            severity text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
            enabled boolean NOT NULL DEFAULT true,
            site_id uuid REFERENCES sites (id) ON DELETE CASCADE,
            device_kind text,
            device_id uuid REFERENCES devices (id) ON DELETE CASCADE,
            field text,
            operator text CHECK (operator IN ('gt', 'ge', 'lt', 'le')),
            value double precision,
            low double precision,
            high double precision,
            hysteresis double precision NOT NULL DEFAULT 0,
            for_s integer NOT NULL DEFAULT 0,
            clear_for_s integer NOT NULL DEFAULT 0,
            code text,
            offline_after_s integer,
            default_key text,                       -- set on the rules created for a new org
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (org_id, default_key)
        );
        CREATE INDEX alert_rules_org ON alert_rules (org_id);

        -- Orgs whose default rules exist (created once: a default deleted by hand stays deleted).
        CREATE TABLE alert_orgs (
            org_id uuid PRIMARY KEY,
            seeded_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE alerts (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            site_id uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
            device_id uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
            rule_id uuid REFERENCES alert_rules (id) ON DELETE SET NULL,
            rule_name text NOT NULL,
            rule_kind text NOT NULL,
            severity text NOT NULL,
            state text NOT NULL CHECK (state IN ('firing', 'acknowledged', 'resolved')),
            message text NOT NULL,
            value double precision,
            raised_at timestamptz NOT NULL,
            acknowledged_at timestamptz,
            acknowledged_by text,
            acknowledge_comment text,
            resolved_at timestamptz,
            resolved_by text,                       -- NULL: resolved automatically
            resolution text,                        -- cleared | manual | rule_deleted
            resolve_comment text
        );
        -- One open alert per rule and device; a new one only after it is resolved.
        CREATE UNIQUE INDEX alerts_one_open ON alerts (rule_id, device_id) WHERE state <> 'resolved';
        CREATE INDEX alerts_org_raised ON alerts (org_id, raised_at DESC);
        CREATE INDEX alerts_rule_device ON alerts (rule_id, device_id, raised_at DESC);

        CREATE TABLE alert_history (
            id bigserial PRIMARY KEY,
            alert_id uuid NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
            action text NOT NULL CHECK (action IN ('raised', 'acknowledged', 'resolved')),
            at timestamptz NOT NULL,
            by text,
            comment text
        );
        CREATE INDEX alert_history_alert ON alert_history (alert_id, id);
        """
    )


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
