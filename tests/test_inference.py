import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from media import face_clip, noise_clip, still_clip, two_face_frame

from deepfake_detect.artifact import ArtifactError, read_artifact
from deepfake_detect.inference import (
    VIDEO_COLUMNS,
    PredictError,
    Predictor,
    collect_videos,
    predict_video,
)
from deepfake_detect.preprocess import VideoDataProcessor
from deepfake_detect.synth import generate_dataset
from deepfake_detect.training import TrainConfig, run_training


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict[str, Path]:
    """Synthetic clips -> stage 1 -> a small meso4, as a user would run them."""
    root = tmp_path_factory.mktemp("pipeline")
    generate_dataset(root / "clips", videos=16, seed=3, size=128, fps=10, seconds=1.0)
    options = {"frames_per_video": 6, "crop_size": 64, "num_workers": 0, "progress": False}
    metadata = VideoDataProcessor([root / "clips"], root / "crops", **options).run()
    metadata["split"] = ["val" if i % 4 == 0 else "train" for i in range(len(metadata))]
    metadata.to_csv(root / "crops" / "metadata.csv", index=False)
    config = TrainConfig(
        train=root / "crops", output_dir=root / "run", max_epochs=4, batch_size=16,
        augment="none", allow_leakage=True, progress=False,
    )  # fmt: skip
    run_training(config)
    return {"clips": root / "clips", "run": root / "run", "root": root}


def cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "deepfake_detect", *args]
    return subprocess.run(command, capture_output=True, text=True)


def test_predict_real_and_fake_clips_gives_calibrated_verdicts(pipeline):
    predictor = Predictor(pipeline["run"], frames=6)
    artifact, _ = read_artifact(pipeline["run"])
    assert predictor.crop_config.crop_size == 64  # cropped as in training
    for clip in sorted(pipeline["clips"].glob("*/*.mp4"))[:4]:
        prediction = predictor.predict(clip)
        assert prediction.status == "ok", prediction.error
        assert 0 <= prediction.probability <= 1
        band = artifact.uncertain_band
        if band is not None and band[0] < prediction.probability < band[1]:
            assert prediction.verdict == "UNCERTAIN"  # the band fitted on validation
        else:
            assert prediction.verdict == (
                "FAKE" if prediction.probability >= artifact.threshold else "REAL"
            )
        assert prediction.persons[0].face_index == 0 and prediction.persons[0].n_frames >= 1
        frame_mean = np.mean([f.probability for f in prediction.frames if f.face_index == 0])
        assert prediction.persons[0].probability == pytest.approx(frame_mean)


def test_two_people_are_scored_separately(pipeline, tmp_path):
    clip = still_clip(tmp_path / "pair.mp4", two_face_frame(), n_frames=6)
    prediction = predict_video(clip, pipeline["run"], frames=6)
    assert prediction.status == "ok"
    assert [p.face_index for p in prediction.persons] == [0, 1]
    assert prediction.probability == max(p.probability for p in prediction.persons)


def test_no_face_gets_a_status_and_no_probability(pipeline, tmp_path):
    prediction = predict_video(noise_clip(tmp_path / "noise.mp4"), pipeline["run"], frames=4)
    assert (prediction.status, prediction.probability, prediction.verdict) == (
        "no_face",
        None,
        None,
    )
    assert "noise.mp4" in prediction.error


def test_aggregation_rules_and_threshold_override(pipeline, tmp_path):
    clip = face_clip(tmp_path / "a.mp4")
    always_fake = predict_video(clip, pipeline["run"], frames=4, threshold=0.0, aggregation="max")
    assert always_fake.verdict == "FAKE" and always_fake.aggregation == "max"
    with pytest.raises(PredictError, match="known: mean, median, max, vote, confident"):
        Predictor(pipeline["run"], aggregation="mode")


def test_cli_outputs_and_exit_codes(pipeline, tmp_path):
    good = face_clip(tmp_path / "good.mp4")
    out = tmp_path / "out"
    out.mkdir()
    model = str(pipeline["run"])
    result = cli("predict", str(good), "--model", model, "--frames", "4", "--json",
                 str(out / "v.json"), "--csv", str(out / "v.csv"), "--per-frame")  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads((out / "v.json").read_text())
    video = document["videos"][0]
    assert {"path", "status", "probability", "verdict", "threshold", "persons", "frames",
            "video", "timings"} <= video.keys()  # fmt: skip
    assert {"decode", "detect", "model"} <= video["timings"].keys()
    assert list(pd.read_csv(out / "v.csv").columns) == VIDEO_COLUMNS
    frames = pd.read_csv(out / "v_frames.csv")
    assert len(frames) == len(video["frames"]) and {"timestamp", "face_index"} <= set(frames)
    for frame in video["frames"]:  # YuNet's 5 landmarks and score travel with each crop
        assert len(frame["landmarks"]) == 5 and 0 < frame["score"] <= 1
        assert all(frame["x0"] <= x <= frame["x1"] for x, _ in frame["landmarks"])
    assert frames.eye1_x.notna().all() and "landmarks" not in frames
    (tmp_path / "broken.mp4").write_text("not a video")
    result = cli("predict", str(good), str(tmp_path / "broken.mp4"), "--model", model,
                 "--frames", "4", "--json", str(out / "mixed.json"))  # fmt: skip
    assert result.returncode == 1
    statuses = [v["status"] for v in json.loads((out / "mixed.json").read_text())["videos"]]
    assert statuses == ["ok", "decode_error"]


@pytest.mark.parametrize("case", ["not-artifact", "pickle", "newer", "no-videos", "bad-device"])
def test_bad_usage_exits_2(pipeline, tmp_path, case):
    clip = str(face_clip(tmp_path / "a.mp4"))
    model = pipeline["run"]
    expected = {"not-artifact": "not a deepfake-detect model artifact", "pickle": "never unpickled",
                "newer": "newer than this", "no-videos": "no videos found",
                "bad-device": "unknown device"}[case]  # fmt: skip
    extra: list[str] = []
    if case == "not-artifact":
        model = tmp_path / "m.json"
        model.write_text('{"hello": 1}')
    elif case == "pickle":
        model = pipeline["run"] / "checkpoints" / "best.ckpt"
    elif case == "newer":
        document = json.loads((pipeline["run"] / "model" / "model.json").read_text())
        model = tmp_path / "newer"
        model.mkdir()
        (model / "model.json").write_text(json.dumps(document | {"format_version": 99}))
    elif case == "no-videos":
        (tmp_path / "empty").mkdir()
        clip = str(tmp_path / "empty")
    else:
        extra = ["--device", "tpu"]
    result = cli("predict", clip, "--model", str(model), *extra)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_collect_videos_from_files_folders_and_globs(tmp_path):
    for name in ("a.mp4", "sub/b.avi", "sub/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert collect_videos([str(tmp_path)]) == [tmp_path / "a.mp4", tmp_path / "sub" / "b.avi"]
    assert collect_videos([str(tmp_path / "*.mp4")]) == [tmp_path / "a.mp4"]
    with pytest.raises(PredictError, match="no file matches"):
        collect_videos([str(tmp_path / "*.mkv")])


def test_artifact_errors_name_the_file(tmp_path):
    with pytest.raises(ArtifactError, match="never unpickled"):
        read_artifact(tmp_path / "weights.pt")


@pytest.mark.slow
def test_cli_evaluate_export_and_onnx_predict(pipeline, tmp_path):
    model = str(pipeline["run"])
    crops = str(pipeline["root"] / "crops")
    result = cli("evaluate", crops, "--model", model, "--output-dir", str(tmp_path / "eval"),
                 "--split", "val", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert summary["counts"]["videos"] == 4 and (tmp_path / "eval" / "roc.png").is_file()
    assert cli("export", model, "--onnx").returncode == 0
    clip = str(face_clip(tmp_path / "a.mp4"))
    outputs = {}
    for backend in ("torch", "onnx"):
        result = cli("predict", clip, "--model", model, "--frames", "4", "--backend", backend,
                     "--json", str(tmp_path / f"{backend}.json"))  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs[backend] = json.loads((tmp_path / f"{backend}.json").read_text())["videos"][0]
    assert outputs["onnx"]["probability"] == pytest.approx(
        outputs["torch"]["probability"], abs=1e-4
    )
    assert cli("export", model).returncode == 2  # no format chosen


def test_a_model_that_outputs_nan_or_inf_gives_model_error_and_valid_json(
    nonfinite_models, tmp_path
):
    clip = str(face_clip(tmp_path / "face.mp4"))
    out = tmp_path / "v.json"
    result = cli("predict", clip, "--model", str(nonfinite_models["nan"]), "--frames", "4",
                 "--json", str(out), "--csv", str(tmp_path / "v.csv"), "--per-frame")  # fmt: skip
    assert result.returncode == 1, result.stderr  # ran, but a video could not be scored
    (video,) = json.loads(out.read_text())["videos"]
    assert (video["status"], video["probability"], video["verdict"]) == ("model_error", None, None)
    assert video["frames"] == [] and "not a number (NaN or inf)" in video["error"]
    assert pd.read_csv(tmp_path / "v.csv").status.tolist() == ["model_error"]
    assert "REAL" not in result.stderr and "model_error" in result.stderr
    infinite = Predictor(nonfinite_models["inf"], device="cpu", frames=4).predict(Path(clip))
    assert (infinite.status, infinite.probability, infinite.verdict) == ("model_error", None, None)


def test_an_artifact_made_before_alignment_predicts_as_it_did(tiny_model, tmp_path):
    """model.json files written before `align` existed have no such key: they crop unaligned,
    with the detector they name, exactly as before."""
    import shutil

    old = shutil.copytree(tiny_model / "model", tmp_path / "old-model")
    document = json.loads((old / "model.json").read_text())
    del document["preprocessing"]["align"]
    (old / "model.json").write_text(json.dumps(document))
    clip = face_clip(tmp_path / "a.mp4")
    before, now = Predictor(old, frames=4), Predictor(tiny_model, frames=4)
    assert before.crop_config == now.crop_config and not before.crop_config.align
    assert before.crop_config.face_detector == "dlib"  # what the tiny model was trained with
    frames = [f.probability for f in before.predict(clip).frames]
    assert frames == [f.probability for f in now.predict(clip).frames] and len(frames) == 4


def test_an_aligned_model_predicts_on_aligned_crops(tiny_model, tmp_path):
    """The artifact's `align` reaches predict: its crops are cut as training's were."""
    import shutil

    aligned = shutil.copytree(tiny_model / "model", tmp_path / "aligned-model")
    document = json.loads((aligned / "model.json").read_text())
    document["preprocessing"] |= {"align": True, "face_detector": "yunet"}
    (aligned / "model.json").write_text(json.dumps(document))
    clip = face_clip(tmp_path / "a.mp4")
    predictor = Predictor(aligned, frames=4)
    assert predictor.crop_config.align
    prediction = predictor.predict(clip, keep_crops=True)
    assert prediction.status == "ok" and len(prediction.frames) == 4
    from deepfake_detect.crops import extract_faces

    square = extract_faces(clip, replace(predictor.crop_config, align=False)).crops
    assert np.array_equal(prediction.crops, extract_faces(clip, predictor.crop_config).crops)
    assert np.abs(prediction.crops.astype(int) - square).mean() > 3
