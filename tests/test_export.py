import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from media import crops_folder

from deepfake_detect import export
from deepfake_detect.artifact import ModelArtifact, load_artifact, save_artifact
from deepfake_detect.backends import BackendError, onnx_runner
from deepfake_detect.export import ExportError, export_onnx
from deepfake_detect.inference import Predictor
from deepfake_detect.models import create_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return crops_folder(tmp_path_factory.mktemp("crops"), {"train": [0, 1] * 2, "val": [0, 1]})


@pytest.fixture(scope="module")
def meso4(tiny_model: Path, tmp_path_factory) -> Path:
    """A copy of the shared tiny meso4 artifact (conftest), exported to ONNX beside its
    weights."""
    artifact_dir = shutil.copytree(tiny_model / "model", tmp_path_factory.mktemp("run") / "model")
    assert export_onnx(artifact_dir) == artifact_dir / export.ONNX_FILE
    return artifact_dir


def normalised(crops: np.ndarray, model_dir: Path) -> np.ndarray:
    _, artifact = load_artifact(model_dir)
    mean, std = (np.array(v, np.float32).reshape(1, 3, 1, 1) * 255
                 for v in (artifact.model.mean, artifact.model.std))  # fmt: skip
    return np.ascontiguousarray((crops.transpose(0, 3, 1, 2).astype(np.float32) - mean) / std)


def torch_logits(model_dir: Path, batch: np.ndarray) -> np.ndarray:
    network, _ = load_artifact(model_dir)
    with torch.inference_mode():
        return network(torch.from_numpy(batch)).numpy()


def test_exported_meso4_matches_torch_on_crops_at_any_batch_size(meso4, dataset):
    assert (meso4 / "model.onnx").is_file() and not list(meso4.glob(".*.tmp*"))
    crops = np.load(dataset / "faces" / "val_001_1.npy")
    run = onnx_runner(meso4)
    for size in (1, 5):
        batch = normalised(crops[:size], meso4)
        logits = run(batch)
        assert logits.shape == (size,) and logits.dtype == np.float32
        np.testing.assert_allclose(logits, torch_logits(meso4, batch), rtol=0, atol=TOLERANCE)


def test_onnx_predictor_scores_crops_like_the_torch_one(meso4, dataset):
    crops = np.load(dataset / "faces" / "val_000_0.npy")
    onnx_scores = Predictor(meso4, backend="onnx", batch_size=4).score_crops(crops)
    torch_scores = Predictor(meso4, backend="torch", device="cpu", batch_size=4).score_crops(crops)
    assert onnx_scores.shape == (len(crops),)
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("name", ["mesoinception4", "efficientnet_b0"])
def test_other_architectures_export_and_match(name, tmp_path):
    network, config = create_model(name, pretrained=False, image_size=64)
    with torch.no_grad():  # logits and batch-norm statistics far from their initial values
        for linear in (m for m in network.modules() if isinstance(m, torch.nn.Linear)):
            torch.nn.init.normal_(linear.weight, std=0.5)
        network.train()(torch.randn(8, 3, 64, 64) * 2 + 0.5)
    save_artifact(tmp_path, network, ModelArtifact(model=config))
    export_onnx(tmp_path)
    batch = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    logits = onnx_runner(tmp_path)(batch)
    assert np.abs(logits).max() > 0.01
    np.testing.assert_allclose(logits, torch_logits(tmp_path, batch), rtol=0, atol=TOLERANCE)


def test_a_mismatch_writes_nothing_and_output_can_go_elsewhere(meso4, tmp_path, monkeypatch):
    output = tmp_path / "elsewhere" / "meso4.onnx"
    with monkeypatch.context() as patch:
        patch.setattr(export, "TOLERANCE", -1.0)
        with pytest.raises(ExportError, match="ONNX logits differ from torch's by up to"):
            export_onnx(meso4, output=output)
    assert not output.parent.exists()
    assert export_onnx(meso4 / "model.json", output=output) == output and output.is_file()


def test_missing_onnx_file_names_the_path_and_the_command(tmp_path):
    with pytest.raises(BackendError) as error:
        onnx_runner(tmp_path)
    assert str(tmp_path / "model.onnx") in str(error.value)
    assert "deepfake-detect export --onnx" in str(error.value)
