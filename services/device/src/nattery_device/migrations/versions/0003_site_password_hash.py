"""Keep each site's MQTT password hash (never the password): PostgreSQL is the source of truth and the
broker's password file a projection that device-service reconciles.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE sites ADD COLUMN mqtt_password_hash text")


def downgrade() -> None:
    pass
