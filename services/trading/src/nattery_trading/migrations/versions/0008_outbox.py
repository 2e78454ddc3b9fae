"""Trading's transactional outbox (``outbox.py``): ``schedule.published`` and ``dispatch.status_changed``
are stored with the change they announce and published after the commit (the shared kit's table).

``plan_jobs.published_at`` is now set when the job's announcement is stored in the outbox (in the same
transaction as its schedule version), which then delivers it; NULL still means "stored, not announced"
for rows from before this migration (a redelivered job re-announces them).

Revision ID: 0008
Revises: 0007
"""

from nattery_shared.outbox import create_outbox_table

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_table()


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
