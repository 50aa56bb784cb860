"""Shared fixtures: the real sample media folder when present, small synthetic clips otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"


@pytest.fixture(scope="session")
def samples() -> Path:
    """../shared/samples (real FF++, DFDC and GRID clips), or a skip that says why."""
    if not SAMPLES.is_dir():
        pytest.skip(f"real sample media not present at {SAMPLES}: tests on real footage skipped")
    return SAMPLES
