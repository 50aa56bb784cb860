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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A meso4 run folder, trained for a few seconds on 64-pixel synthetic crops (stage-1
    parameters: dlib, margin 0.3), shared by the tests that need any trained model."""
    from media import crops_folder

    from deepfake_detect.training import TrainConfig, run_training

    root = tmp_path_factory.mktemp("tiny-model")
    data = crops_folder(root / "crops", {"train": [0, 1] * 8, "val": [0, 1] * 4})
    config = TrainConfig(
        train=data, output_dir=root / "run", max_epochs=3, lr=3e-3, batch_size=16,
        crops_per_video=4, val_crops_per_video=6, image_size=64, augment="none",
        progress=False,
    )  # fmt: skip
    run_training(config)
    return root / "run"


@pytest.fixture(scope="session")
def predictor(tiny_model: Path):
    """tiny_model loaded for judging videos (4 frames each, on the CPU)."""
    from deepfake_detect.inference import Predictor

    return Predictor(tiny_model, device="cpu", frames=4)


@pytest.fixture(scope="session")
def nonfinite_models(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """Copies of tiny_model whose last bias is NaN or +inf: every logit they give is so."""
    import shutil

    from safetensors.torch import load_file, save_file

    models = {}
    for name, value in {"nan": float("nan"), "inf": float("inf")}.items():
        folder = tmp_path_factory.mktemp(f"{name}-model")
        shutil.copy(tiny_model / "model" / "model.json", folder)
        weights = load_file(tiny_model / "model" / "model.safetensors")
        weights["head.5.bias"].fill_(value)
        save_file(weights, folder / "model.safetensors")
        models[name] = folder
    return models
