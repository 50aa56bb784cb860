"""Where a model runs: a torch network on a device, or onnxruntime over an exported file.

A runner maps a normalised float32 NCHW batch (numpy) to one logit per image (numpy), so
prediction does not care which backend scores its crops.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.extras import import_extra

if TYPE_CHECKING:
    import onnxruntime

BACKENDS = ("torch", "onnx")
ONNX_FILE = "model.onnx"
INPUT_NAME = "images"
OUTPUT_NAME = "logits"

Runner = Callable[[np.ndarray], np.ndarray]


class BackendError(DeepfakeDetectError, ValueError):
    """A backend that cannot run here (no GPU, no ONNX file or package); one line saying why."""


def resolve_device(device: str) -> torch.device:
    """auto (CUDA when there is one), cpu, cuda or cuda:N, checked against this machine."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in {"cpu", "cuda"} and not device.startswith("cuda:"):
        raise BackendError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError("--device cuda asked for, but no CUDA GPU is available")
    return torch.device(device)


def torch_runner(network: torch.nn.Module, device: torch.device) -> Runner:
    """Float NCHW batch (numpy) -> logits (numpy), with the network on `device`."""
    network = network.to(device).eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    return run


def onnx_session(model: bytes | str) -> onnxruntime.InferenceSession:
    """An onnxruntime session on CPU over a serialised model or a file."""
    ort = import_extra("onnxruntime", "onnx", "ONNX inference")
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def onnx_runner(artifact_dir: Path) -> Runner:
    """Normalised float32 NCHW batch -> logits (N,), with onnxruntime over model.onnx."""
    path = Path(artifact_dir) / ONNX_FILE
    if not path.is_file():
        raise BackendError(
            f"{path}: no {ONNX_FILE}; run `deepfake-detect export --onnx MODEL` first"
        )
    session = onnx_session(str(path))

    def run(batch: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(batch, dtype=np.float32)
        return session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]

    return run
