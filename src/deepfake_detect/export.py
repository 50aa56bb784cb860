"""A model artifact to ONNX, checked against torch (the runner over it is in backends.py).

The ONNX file takes a normalised float32 batch named "images", shape (N, 3, S, S), and gives
one logit per image named "logits", shape (N,); N is free. It sits beside the artifact's
weights, so `Predictor(model, backend="onnx")` finds it with the artifact's model.json.

onnx, onnxscript (torch's exporter) and onnxruntime are imported only when used, so the
package works without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from deepfake_detect.artifact import load_artifact, read_artifact
from deepfake_detect.backends import (
    INPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    onnx_session,
)
from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.extras import import_extra, require_extra
from deepfake_detect.files import atomic_path

if TYPE_CHECKING:
    import onnx
    import onnxruntime

# torch's exporter (torch.export based) implements opset 18 and up.
MIN_OPSET = 18
TOLERANCE = 1e-4


class ExportError(DeepfakeDetectError, ValueError):
    """A model that cannot be exported or run as ONNX; one line saying why."""


def export_onnx(model: Path, output: Path | None = None, opset: int = MIN_OPSET) -> Path:
    """Export an artifact's network to ONNX, verify it against torch, and write it.

    Args:
        model: the artifact (a training run folder, its model/ folder or model.json).
        output: where to write; default model.onnx beside the artifact's weights.
        opset: ONNX operator set version, at least 18.

    Raises:
        ExportError: the export fails, or onnxruntime's logits differ from torch's by more
            than 1e-4 (relative for logits above 1). Nothing is written then.
    """
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; torch's ONNX exporter needs {MIN_OPSET}+")
    require_extra("onnx", "ONNX export")
    _, weights = read_artifact(model)
    network, artifact = load_artifact(model)
    size = artifact.model.input_size
    proto = _to_onnx(network, size, opset)
    import_extra("onnx", "onnx", "ONNX export").checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    _check_parity(network, onnx_session(data), size, artifact.model.name)
    target = output if output is not None else weights.parent / ONNX_FILE
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def _to_onnx(network: torch.nn.Module, size: int, opset: int) -> onnx.ModelProto:
    """The ONNX model proto of `network` with a free batch axis."""
    example = torch.randn(2, 3, size, size)
    try:
        program = torch.onnx.export(
            network,
            (example,),
            dynamo=True,
            verbose=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    except torch.onnx.OnnxExporterError as error:
        first = str(error).strip().splitlines()[0]
        raise ExportError(f"{type(network).__name__}: ONNX export failed ({first})") from error
    return program.model_proto


def _check_parity(
    network: torch.nn.Module, session: onnxruntime.InferenceSession, size: int, name: str
) -> None:
    """onnxruntime and torch agree on a random batch (of another size than the example's)."""
    batch = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = network(batch).numpy()
    got = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
    if got.shape != expected.shape:
        raise ExportError(f"{name}: ONNX logits have shape {got.shape}, torch's {expected.shape}")
    difference = np.abs(got - expected)
    # absolute for logits up to 1, relative beyond: float32 rounding grows with the logit
    if (difference > TOLERANCE * np.maximum(1, np.abs(expected))).any():
        raise ExportError(
            f"{name}: ONNX logits differ from torch's by up to {difference.max():.2e} "
            f"(tolerance {TOLERANCE:.0e}, relative above 1); not written"
        )
