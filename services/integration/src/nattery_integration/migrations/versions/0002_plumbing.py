"""Provider plumbing: scheduled jobs, per-org connections (secrets encrypted), the outbox, inbound
webhook deliveries.

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
        -- One row per registered job; a replica claims a due row (FOR UPDATE SKIP LOCKED) and holds a
        -- lease while it runs, so each scheduled run happens on exactly one replica.
        CREATE TABLE jobs (
            name text PRIMARY KEY,
            provider text,
            next_run_at timestamptz NOT NULL,
            scheduled_for timestamptz NOT NULL,
            attempt integer NOT NULL DEFAULT 0,
            lease_until timestamptz,
            leased_by text,
            last_started_at timestamptz,
            last_finished_at timestamptz,
            last_outcome text CHECK (last_outcome IN ('ok', 'not_yet', 'failed')),
            last_message text,
            last_error text,
            last_success_at timestamptz,
            runs integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX jobs_due ON jobs (next_run_at);

        -- An org's connection to a provider. Secrets are one AES-256-GCM blob (nonce || ciphertext)
        -- under the key ``key_id``; the associated data binds it to this row (id, org, provider).
        CREATE TABLE connections (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            provider text NOT NULL,
            name text NOT NULL,
            settings jsonb NOT NULL DEFAULT '{}'::jsonb,
            secret_names text[] NOT NULL DEFAULT '{}',
            secrets_blob bytea,
            key_id text,
            enabled boolean NOT NULL DEFAULT true,
            last_test_at timestamptz,
            last_test_ok boolean,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (org_id, provider, name),
            CHECK ((secrets_blob IS NULL) = (key_id IS NULL))
        );
        CREATE INDEX connections_org ON connections (org_id);
        CREATE INDEX connections_provider ON connections (provider) WHERE enabled;

        -- Transactional outbox (as device-service): events stored with the change, published after.
        CREATE TABLE outbox (
            id uuid PRIMARY KEY,
            type text NOT NULL,
            envelope jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            published_at timestamptz
        );
        CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;
        CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

        -- Inbound webhook deliveries, stored before the 200 and processed afterwards by a worker.
        CREATE TABLE webhook_deliveries (
            id bigserial PRIMARY KEY,
            provider text NOT NULL,
            delivery_id text NOT NULL,
            signed_at timestamptz NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            body bytea NOT NULL,
            status text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'processed', 'failed', 'unhandled')),
            attempts integer NOT NULL DEFAULT 0,
            lease_until timestamptz,
            processed_at timestamptz,
            last_error text,
            UNIQUE (provider, delivery_id)
        );
        CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (received_at) WHERE status = 'pending';
        """
    )


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
