"""Shared fixtures: the real sample media folder when present, small synthetic clips otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"


@pytest.fixture(scope="session")
def samples() -> Path:
    """../shared/samples (real FF++, DFDC and GRID clips), or a skip that says why."""
    if not SAMPLES.is_dir():
        pytest.skip(f"real sample media not present at {SAMPLES}: tests on real footage skipped")
    return SAMPLES


# One BLAS/OpenMP thread per process: the test models are tiny, and two spinning threads on a
# shared 2-core machine (pytest beside a worker pool) slow a step down 50-fold.
os.environ.setdefault("OMP_NUM_THREADS", "1")
