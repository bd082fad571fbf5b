"""Shared test fixtures.

Standard test vectors live outside the repository, in ``../shared/conformance``
beside the checkout (CI lays a copy of ``shared/`` there). Tests that read them
take the ``conformance_dir`` fixture. On a developer's machine without them it
skips with the reason; under CI (CI=true, as .ci/run is run) their absence
fails the run, since a green CI must mean the standard's vectors were read.
"""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE_DIR = REPO_ROOT.parent / "shared" / "conformance"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    if not CONFORMANCE_DIR.is_dir():
        message = f"conformance vectors not found at {CONFORMANCE_DIR} (shared/ absent)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": under CI they must be there")
        pytest.skip(message)
    return CONFORMANCE_DIR
