"""The architecture tests read the project's source as data (arch_source.py); nothing here needs a server."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
