"""Nattery integration service."""

from nattery_shared.pool_cancel import keep_cancellation

# Before any pool exists: psycopg_pool's connection wait loses cancellations on Python 3.11.
keep_cancellation()
