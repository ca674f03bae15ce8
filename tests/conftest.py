"""Shared fixtures. The tiny testbed model is built once per test session into a shared cache, and
the SLURM cluster fixture (tests/slurm_harness.py) starts a real single-node cluster when a test asks."""
import os
import tempfile
from pathlib import Path

import pytest

from tests.slurm_harness import slurm_cluster  # noqa: F401  (session fixture, used by name)

# One testbed build for the whole session, shared with the job processes the tests start.
os.environ.setdefault("ABCX_CACHE", str(Path(tempfile.gettempdir()) / "abcx-test-cache"))
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    from abcx.testbed import ensure_tiny_model

    return ensure_tiny_model()
