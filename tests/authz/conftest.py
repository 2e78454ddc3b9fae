"""The matrix's world (apps, orgs, fixtures) lives in ``authz_world.py``; --import-mode=importlib gives
this folder no package to import it from, hence the path."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from authz_world import world  # noqa: F401  (the module-scoped fixture)
