"""Shared pytest fixtures."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# before torch is imported anywhere: see arml_core/__init__.py
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

# Make `import arml_core` work under a bare `pytest` run from any directory
# (harmless once the package is installed or pytest's pythonpath is configured).
_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared benchmark data (``../shared/data`` next to the repo); skip when absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent")
    return path
