"""Shared test setup: the tests folder is importable (helpers shared between test files)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
