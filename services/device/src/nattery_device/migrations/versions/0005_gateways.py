"""HTTP ingest gateways: one API key per gateway (only its SHA-256 stored), optional site scope and
client-address allow-list.

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
        CREATE TABLE gateways (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            name text NOT NULL,
            site_ids uuid[] NOT NULL DEFAULT '{}',
            allowed_cidrs cidr[] NOT NULL DEFAULT '{}',
            key_hash bytea NOT NULL UNIQUE,
            key_hint text NOT NULL,
            previous_key_hash bytea UNIQUE,
            previous_key_valid_until timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            rotated_at timestamptz,
            revoked_at timestamptz,
            last_used_at timestamptz
        );
        CREATE INDEX gateways_org ON gateways (org_id, created_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE gateways")
