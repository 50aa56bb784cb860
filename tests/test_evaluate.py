import io
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from media import crops_folder, face_clip, noise_clip
from rich.console import Console
from scipy.special import expit
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    log_loss,
    roc_auc_score,
)

from deepfake_detect.dataset_layouts import DatasetError
from deepfake_detect.evaluate import evaluate
from deepfake_detect.inference import Predictor
from deepfake_detect.training_data import DataError


class KnownScores(Predictor):
    """A predictor whose logit for each crop is set by the test (looked up by pixels); it
    judges videos with the real Predictor's rules."""

    aggregation, threshold, min_frames, model_path = "mean", 0.5, 1, Path("known")

    def __init__(self, logits: dict[bytes, float]) -> None:
        self.logits = logits

    def score_crops(self, crops: np.ndarray) -> np.ndarray:
        return np.array([self.logits[np.asarray(crop).tobytes()] for crop in crops])

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return expit(logits)


def known_logits(folder: Path) -> tuple[dict[bytes, float], dict[str, np.ndarray]]:
    """Noisy logits that lean towards each video's label; also each video's crop probabilities."""
    table = pd.read_csv(folder / "metadata.csv")
    rng = np.random.default_rng(0)
    logits, probabilities = {}, {}
    for video in table.itertuples():
        crops = np.load(folder / video.npy_path)
        values = (2 * video.label - 1) * 0.5 + rng.normal(0, 3.0, len(crops))
        logits |= {crop.tobytes(): value for crop, value in zip(crops, values, strict=True)}
        probabilities[video.video_id] = expit(values)
    return logits, probabilities


@pytest.fixture(scope="module")
def trained(tiny_model: Path) -> tuple[Path, Path]:
    """The shared tiny meso4 (conftest): its crops folder and its artifact."""
    return tiny_model.parent / "crops", tiny_model / "model"


def test_metrics_equal_scikit_learns_on_known_scores(tmp_path):
    data = crops_folder(tmp_path / "crops", {"train": [0, 1], "test": [0, 1] * 6})
    logits, crop_probabilities = known_logits(data)
    table = pd.read_csv(data / "metadata.csv")
    table["method"] = [["", "Deepfakes", "", "FaceSwap"][i % 4] for i in range(len(table))]
    gone = {"video_id": "test_gone", "label": 1, "group": "g", "split": "test", "npy_path": "",
            "n_crops": 0, "status": "no_face", "method": "FaceSwap"}  # fmt: skip
    pd.concat([table, pd.DataFrame([gone])]).to_csv(data / "metadata.csv", index=False)
    # two people in one video: 4 crops of face 0, then 2 of face 1
    two = pd.DataFrame({"video_id": "test_000_0", "crop_index": range(6),
                        "face_index": [0, 0, 0, 0, 1, 1]})  # fmt: skip
    two.to_csv(data / "crops.csv", index=False)

    result = evaluate(data, KnownScores(logits), tmp_path / "out", split="test", progress=False)

    videos = result.videos.set_index("video_id")
    assert len(videos) == 13 and not videos.index.str.startswith("train").any()
    assert videos.loc["test_gone", "status"] == "no_face"
    assert np.isnan(videos.loc["test_gone", "probability"])
    assert videos.loc["test_gone", "prediction"] is pd.NA
    pair = crop_probabilities["test_000_0"]
    expected = {v: p.mean() for v, p in crop_probabilities.items() if v.startswith("test")}
    expected["test_000_0"] = max(pair[:4].mean(), pair[4:].mean())
    scored = videos.drop(index="test_gone")
    np.testing.assert_allclose(scored.probability, [expected[v] for v in scored.index])
    y, p = scored.label.to_numpy(), scored.probability.to_numpy()
    summary = result.summary
    assert 0.5 < summary["video"]["auc"] < 1  # not trivially separable
    assert summary["counts"] == {"videos": 13, "scored": 12, "real": 6, "fake": 6, "frames": 72}
    assert summary["n_unscored"] == {"no_face": 1}
    assert summary["video"]["auc"] == pytest.approx(roc_auc_score(y, p))
    assert summary["video"]["ap"] == pytest.approx(average_precision_score(y, p))
    assert summary["video"]["log_loss"] == pytest.approx(log_loss(y, p))
    assert summary["video"]["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5))
    tn, fp, fn, tp = confusion_matrix(y, p >= 0.5).ravel()
    assert summary["video"]["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert list(scored.prediction) == list((p >= 0.5).astype(int))
    frame_labels = np.repeat(y, 6)
    frame_probabilities = np.concatenate([crop_probabilities[v] for v in scored.index])
    assert summary["frame"]["auc"] == pytest.approx(
        roc_auc_score(frame_labels, frame_probabilities)
    )
    assert set(summary["per_method"]) == {"Deepfakes", "FaceSwap"}
    for method, metrics in summary["per_method"].items():
        subset = scored[(scored.label == 0) | (scored.method == method)]
        assert metrics["n_real"] == 6 and metrics["n_fake"] == 3
        assert metrics["auc"] == pytest.approx(roc_auc_score(subset.label, subset.probability))
    assert json.loads((tmp_path / "out" / "evaluation.json").read_text()) == json.loads(
        json.dumps(summary)
    )
    written = pd.read_csv(tmp_path / "out" / "videos.csv")
    assert list(written.columns[:6]) == ["video_id", "path", "label", "method", "split", "status"]


def test_a_single_class_gives_undefined_rank_metrics_and_says_why(tmp_path):
    data = crops_folder(tmp_path / "crops", {"test": [0, 0, 0]})
    logits, _ = known_logits(data)
    summary = evaluate(data, KnownScores(logits), tmp_path / "out", progress=False).summary
    assert np.isnan(summary["video"]["auc"]) and np.isnan(summary["frame"]["ap"])
    assert 0 <= summary["video"]["accuracy"] <= 1
    assert "only real videos were scored" in summary["notes"][0]
    saved = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert saved["video"]["auc"] is None


def test_bad_data_raises_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a preprocessed folder"):
        evaluate(tmp_path / "empty", KnownScores({}), tmp_path / "out", progress=False)
    data = crops_folder(tmp_path / "crops", {"train": [0, 1]})
    with pytest.raises(DataError, match="no videos of split 'test' \\(splits found: train\\)"):
        evaluate(data, KnownScores({}), tmp_path / "out", split="test", progress=False)


def test_a_trained_model_on_the_preprocessed_val_split_writes_tables_and_plots(trained, tmp_path):
    data, artifact = trained
    predictor = Predictor(artifact, device="cpu", frames=4)
    console = Console(file=io.StringIO(), width=120)
    result = evaluate(data, predictor, tmp_path / "out", split="val", console=console)
    for name in ("evaluation.json", "videos.csv"):
        assert (tmp_path / "out" / name).is_file()
    for name in ("roc.png", "scores.png"):
        assert cv2.imread(str(tmp_path / "out" / name)) is not None
    assert result.summary["counts"]["scored"] == 8 and result.summary["source"] == "preprocessed"
    assert "balanced_accuracy" in console.file.getvalue()
    crops = np.load(data / "faces" / "val_001_1.npy")
    alone = predictor.probabilities(predictor.score_crops(crops)).mean()
    assert result.videos.set_index("video_id").probability["val_001_1"] == pytest.approx(alone)


def test_raw_videos_are_judged_and_unscorable_ones_listed(trained, tmp_path):
    _, artifact = trained
    root = tmp_path / "clips"
    for folder, seeds in (("real", (0, 1)), ("fake", (2, 3))):
        (root / folder).mkdir(parents=True)
        for seed in seeds:
            face_clip(root / folder / f"clip{seed}.mp4", seed=seed, size=160)
    noise_clip(root / "real" / "noise.mp4")
    (root / "fake" / "empty.mp4").write_bytes(b"")
    predictor = Predictor(artifact, device="cpu", frames=4)

    result = evaluate(root, predictor, tmp_path / "out", progress=False)

    videos = result.videos.set_index(result.videos.path.map(lambda p: Path(p).name))
    assert videos.loc["noise.mp4", "status"] == "no_face"
    assert videos.loc["empty.mp4", "status"] == "empty_file"
    assert videos.probability.isna().sum() == 2
    summary = result.summary
    assert summary["source"] == "folders" and summary["counts"]["scored"] == 4
    assert sum(summary["n_unscored"].values()) == 2
    assert 0 <= summary["video"]["auc"] <= 1 and summary["counts"]["frames"] >= 4
    clip = root / "fake" / "clip2.mp4"
    assert videos.loc["clip2.mp4", "probability"] == pytest.approx(
        predictor.predict(clip).probability
    )


def test_videos_seen_in_fewer_frames_than_min_frames_are_not_scored(tmp_path):
    data = crops_folder(tmp_path / "crops", {"test": [0, 1]}, crops=3)
    logits, _ = known_logits(data)
    predictor = KnownScores(logits)
    predictor.min_frames = 4
    result = evaluate(data, predictor, tmp_path / "out", progress=False)
    assert set(result.videos.status) == {"too_few_frames"}
    assert "a face in only 3 frames (at least 4 needed)" in result.videos.error[0]
    assert result.summary["n_unscored"] == {"too_few_frames": 2}


def test_a_model_that_outputs_nan_leaves_every_video_unscored_as_model_error(
    nonfinite_models, tmp_path
):
    data = crops_folder(tmp_path / "crops", {"test": [0, 1, 0, 1]})
    predictor = Predictor(nonfinite_models["nan"], device="cpu")
    result = evaluate(data, predictor, tmp_path / "out", progress=False)
    assert set(result.videos.status) == {"model_error"} and result.videos.probability.isna().all()
    assert result.summary["counts"]["scored"] == 0
    assert result.summary["n_unscored"] == {"model_error": 4}
    saved = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert saved["video"]["auc"] is None


def test_summary_reports_the_uncertain_share_the_accuracy_on_the_rest_and_calibration():
    from deepfake_detect.evaluate import summarise

    videos = pd.DataFrame({"label": [0, 0, 0, 1, 1, 1], "method": [""] * 3 + ["swap"] * 3,
                           "probability": [0.1, 0.45, 0.7, 0.55, 0.9, 0.2],
                           "status": ["ok"] * 6})  # fmt: skip
    frames = pd.DataFrame({"label": videos.label, "probability": videos.probability})
    summary = summarise(videos, frames, threshold=0.5, uncertain_band=(0.4, 0.6))
    uncertain = summary["uncertain"]
    assert uncertain["band"] == [0.4, 0.6] and uncertain["n"] == 2  # 0.45 and 0.55
    assert uncertain["share"] == pytest.approx(2 / 6)
    # outside: 0.1 real right, 0.7 real wrong, 0.9 fake right, 0.2 fake wrong
    assert uncertain["accuracy_on_rest"] == pytest.approx(0.5) and uncertain["n_rest"] == 4
    low, high = summary["video"]["auc_interval"]
    assert low <= summary["video"]["auc"] <= high
    assert 0 <= summary["video"]["ece"] <= 1 and 0 <= summary["video"]["brier"] <= 1
    assert summarise(videos, frames, 0.5)["uncertain"]["n"] == 0  # no band: every video called
