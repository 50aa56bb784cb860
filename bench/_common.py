"""Helpers the benchmark scripts share (each script runs with bench/ on its path)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import av

from deepfake_detect.artifact import ModelArtifact, save_artifact
from deepfake_detect.crops import CropConfig
from deepfake_detect.models import create_model


def decode_all(path: Path) -> int:
    """Decode every frame of the first video stream, nothing else; return the frame count."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def untrained_artifact(
    directory: Path, name: str, crops: CropConfig, image_size: int | None = None
) -> Path:
    """An untrained model artifact: what a benchmark of speed, not accuracy, needs."""
    network, config = create_model(name, image_size=image_size)
    artifact = ModelArtifact(model=config, preprocessing=crops)
    return save_artifact(directory, network, artifact).parent


def quiet_lightning() -> None:
    """Lightning's start-up banners and advice on small runs would bury the figures."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
