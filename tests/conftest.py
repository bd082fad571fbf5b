"""Shared test fixtures.

Standard test vectors live outside the repository, in ``../shared/conformance``
beside the checkout (CI lays a copy of ``shared/`` there). Tests that read them
take the ``conformance_dir`` fixture, which skips with the reason when absent.
"""
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE_DIR = REPO_ROOT.parent / "shared" / "conformance"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    if not CONFORMANCE_DIR.is_dir():
        pytest.skip(f"conformance vectors not found at {CONFORMANCE_DIR} (shared/ absent)")
    return CONFORMANCE_DIR
