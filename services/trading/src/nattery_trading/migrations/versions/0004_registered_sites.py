"""Site registry: which org each site belongs to, learnt from device-service's ``device.registered``.

Every trading route keyed by a site answers only when the site is registered to the caller's org here
(before this, any admin could configure any site UUID in trading, including another org's).

- ``source = 'event'``: written by the ``trading.sites`` consumer; ``event_id`` is the first
  ``device.registered`` that announced the site. Never moved to another org afterwards.
- ``source = 'backfill'``: sites already configured in trading when this migration ran, registered to
  the org that configured them so existing deployments keep working. Those claims were made without
  any check: a later ``device.registered`` (device-service is authoritative) corrects the org of a
  backfilled row.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE registered_sites (
            site_id uuid PRIMARY KEY,
            org_id uuid NOT NULL,
            source text NOT NULL CHECK (source IN ('event', 'backfill')),
            event_id uuid,
            registered_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CHECK (source <> 'event' OR event_id IS NOT NULL)
        );
        CREATE INDEX registered_sites_org ON registered_sites (org_id);

        INSERT INTO registered_sites (site_id, org_id, source)
        SELECT site_id, org_id, 'backfill' FROM sites;
        """
    )


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
