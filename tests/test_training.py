import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from media import crops_folder
from safetensors.torch import load_file

from deepfake_detect.artifact import load_artifact
from deepfake_detect.training import TrainConfig, TrainError, read_history, run_training
from deepfake_detect.training_data import (
    DataError,
    EpochSampler,
    read_metadata,
    select_split,
    verify,
)

SMALL = {"batch_size": 16, "crops_per_video": 4, "val_crops_per_video": 6, "progress": False,
         "image_size": 64, "augment": "none"}  # fmt: skip
BALANCED = {"train": [0, 1] * 8, "val": [0, 1] * 4}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return crops_folder(tmp_path_factory.mktemp("crops"), BALANCED)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "deepfake_detect", *args]


def test_meso4_learns_synthetic_fakes_and_exports_an_artifact(dataset, tmp_path):
    config = TrainConfig(train=dataset, output_dir=tmp_path / "run", max_epochs=6, lr=3e-3,
                         **SMALL)  # fmt: skip
    result = run_training(config)
    assert result.metrics["auc"] >= 0.85
    assert len(result.history) >= 1 and "val_video_auc" in result.history
    saved = json.loads((result.artifact_dir / "model.json").read_text())
    assert saved["model"]["name"] == "meso4" and saved["model"]["input_size"] == 64
    assert saved["preprocessing"]["crop_size"] == 64
    assert 0 < saved["threshold"] < 1 and saved["temperature"] > 0
    assert saved["metrics"]["val"]["video"]["auc"] == pytest.approx(result.metrics["auc"])
    assert {"torch", "lightning", "deepfake_detect"} <= saved["versions"].keys()
    network, artifact = load_artifact(result.artifact_dir)
    mean, std = (
        torch.tensor(v).view(1, 3, 1, 1) * 255 for v in (artifact.model.mean, artifact.model.std)
    )
    scores = {}
    for name in ("val_000_0", "val_001_1"):
        crops = torch.from_numpy(np.load(dataset / "faces" / f"{name}.npy")).permute(0, 3, 1, 2)
        with torch.no_grad():
            scores[name] = torch.sigmoid(network((crops.float() - mean) / std)).mean().item()
    assert scores["val_001_1"] > scores["val_000_0"]  # the exported weights tell them apart
    for name in ("last.ckpt", "best.ckpt"):
        assert (tmp_path / "run" / "checkpoints" / name).is_file()
    assert (tmp_path / "run" / "logs" / "metrics.csv").is_file()
    assert list((tmp_path / "run" / "logs").glob("events.out.tfevents.*"))
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_target_auc_stops_at_once_and_early_stopping_waits_patience(dataset, tmp_path):
    target = run_training(TrainConfig(train=dataset, output_dir=tmp_path / "t", max_epochs=5,
                                      target_auc=0.01, **SMALL))  # fmt: skip
    assert len(target.history) == 1
    # a learning rate too small to learn: the AUC soon stops improving
    stalled = run_training(TrainConfig(train=dataset, output_dir=tmp_path / "e", max_epochs=8,
                                       lr=1e-12, patience=1, monitor="val_video_auc",
                                       **SMALL))  # fmt: skip
    aucs = stalled.history.val_video_auc
    best_epoch = int(aucs.to_numpy().argmax())
    assert len(aucs) == best_epoch + 2 < 8  # stopped one epoch (patience) after the best


def whole_file(checkpoint: Path) -> bool:
    """Whether `checkpoint` exists and loads: written to its end, not caught mid-write."""
    try:
        torch.load(checkpoint, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return False
    return True


@pytest.mark.slow
def test_kill_9_mid_training_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = crops_folder(tmp_path / "crops", {"train": [0, 1] * 30, "val": [0, 1] * 4})
    args = ["--train", str(data), "--max-epochs", "4", "--batch-size", "8", "--image-size", "64",
            "--crops-per-video", "6", "--augment", "strong", "--quiet"]  # fmt: skip
    subprocess.run(cli("train", *args, "--output-dir", str(tmp_path / "whole")), check=True)
    out = tmp_path / "killed"
    process = subprocess.Popen(cli("train", *args, "--output-dir", str(out)),
                               start_new_session=True)  # fmt: skip
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None and not whole_file(last):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the first epoch saved, the next one under way
    process.wait()
    assert not (out / "model" / "model.json").exists(), "finished before it could be killed"
    subprocess.run(cli("train", *args, "--output-dir", str(out), "--resume-checkpoint", "last"),
                   check=True)  # fmt: skip
    whole = load_file(tmp_path / "whole" / "model" / "model.safetensors")
    resumed = load_file(out / "model" / "model.safetensors")
    for name, tensor in whole.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    histories = [read_history(run) for run in (tmp_path / "whole", out)]
    assert len(histories[1]) == 4
    pd.testing.assert_frame_equal(histories[0], histories[1], atol=1e-6, rtol=0)


def test_self_blend_trains_from_real_videos_only(tmp_path):
    data = crops_folder(tmp_path / "crops", {"train": [0] * 16, "val": [0, 1] * 4})
    config = TrainConfig(train=data, output_dir=tmp_path / "run", max_epochs=6, lr=3e-3,
                         self_blend=0.5, **SMALL)  # fmt: skip
    assert run_training(config).metrics["auc"] >= 0.75


def test_a_timm_backbone_trains_a_step_offline(dataset, tmp_path):
    config = TrainConfig(train=dataset, output_dir=tmp_path / "run", model="resnet18",
                         max_epochs=1, **SMALL)  # fmt: skip
    result = run_training(config)
    assert (
        json.loads((result.artifact_dir / "model.json").read_text())["model"]["name"] == "resnet18"
    )


def test_sampler_balances_classes_and_is_deterministic_per_epoch():
    labels = np.array([0] * 6 + [1] * 2)
    sampler = EpochSampler(labels, np.full(8, 10), crops_per_video=3, self_blend=0.25, seed=1)
    keys = list(sampler)
    assert len(keys) == len(sampler) == 48
    base = [k for k in keys if not k.blend]
    assert sum(labels[k.video] for k in base) == len(base) // 2  # as many fake as real
    assert sum(k.blend for k in keys) == 12 and all(labels[k.video] == 0 for k in keys if k.blend)
    assert keys == list(sampler)
    sampler.set_epoch(1)
    assert keys != list(sampler)


def write_table(folder: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    return folder


def test_verification_lists_every_problem_with_file_names(dataset, tmp_path):
    folder = tmp_path / "bad"
    (folder / "faces").mkdir(parents=True)
    good = np.zeros((4, 64, 64, 3), np.uint8)
    np.save(folder / "faces" / "ok0.npy", good)
    np.save(folder / "faces" / "ok1.npy", good)
    np.save(folder / "faces" / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(folder / "faces" / "small.npy", np.zeros((4, 32, 32, 3), np.uint8))
    (folder / "faces" / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    rows = [("ok0", 0, "train", "g0"), ("ok1", 1, "train", "shared"), ("pickled", 0, "train", "p"),
            ("small", 1, "train", "s"), ("corrupt", 0, "train", "c"), ("gone", 1, "train", "x"),
            ("two", 2, "val", "t"), ("val0", 0, "val", "shared")]  # fmt: skip
    np.save(folder / "faces" / "two.npy", good)
    np.save(folder / "faces" / "val0.npy", good)
    write_table(folder, [{"video_id": v, "label": label, "split": split, "group": group,
                          "npy_path": f"faces/{v}.npy", "n_crops": 4, "status": "ok"}
                         for v, label, split, group in rows])  # fmt: skip
    table, root = read_metadata(folder)
    _, problems = verify(select_split(table, root, "train"), select_split(table, root, "val"))
    text = "\n".join(problems)
    assert "pickled.npy: holds pickled objects; refused" in text
    assert "corrupt.npy: not a readable npy, refused" in text
    assert "gone.npy: npy file missing" in text
    assert "crops of different shapes" in text and "small.npy" in text
    assert "labels outside {0, 1}: [2]" in text
    assert "val: no fake videos" in text
    assert "1 groups are in both train and val (leakage)" in text


@pytest.mark.parametrize("case", ["empty", "single-class", "pickle", "unwritable", "other-arch"])
def test_bad_training_input_exits_2_with_a_clear_message(dataset, tmp_path, case):
    output = tmp_path / "run"
    extra: list[str] = []
    data = dataset
    if case == "empty":
        data = write_table(tmp_path, [{"video_id": "a", "label": 0, "split": "train", "group": "a",
                                       "npy_path": "faces/a.npy", "n_crops": 0,
                                       "status": "no_face"}])  # fmt: skip
        expected = "no usable videos"
    elif case == "single-class":
        data = crops_folder(tmp_path / "one", {"train": [0] * 4, "val": [0, 1]})
        expected = "train: no fake videos"
    elif case == "pickle":
        data = crops_folder(tmp_path / "p", {"train": [0, 1], "val": [0, 1]})
        np.save(data / "faces" / "train_000_0.npy", np.array([object()]), allow_pickle=True)
        expected = "refused (never unpickled)"
    elif case == "unwritable":
        (tmp_path / "file").write_text("x")
        output = tmp_path / "file" / "run"
        expected = "cannot write output folder"
    else:
        run_training(TrainConfig(train=dataset, output_dir=tmp_path / "meso", max_epochs=1,
                                 **SMALL))  # fmt: skip
        extra = ["--model", "mesoinception4", "--resume-checkpoint",
                 str(tmp_path / "meso" / "checkpoints" / "last.ckpt")]  # fmt: skip
        expected = "checkpoint of meso4"
    result = subprocess.run(
        cli("train", "--train", str(data), "--output-dir", str(output), "--image-size", "64",
            "--quiet", *extra),
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_yaml_config_with_flags_on_top(dataset, tmp_path):
    config_file = tmp_path / "train.yaml"
    config_file.write_text(f"train: {dataset}\noutput-dir: {tmp_path / 'run'}\nmax_epochs: 1\n"
                           "batch_size: 16\nimage_size: 64\n")  # fmt: skip
    result = subprocess.run(cli("train", "--config", str(config_file), "--lr", "0.002", "--quiet"),
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "lr: 0.002" in saved and "max_epochs: 1" in saved
    config_file.write_text("train: x\noutput_dir: y\nepochs: 3\n")
    with pytest.raises(TrainError, match="unknown options \\['epochs'\\]"):
        TrainConfig.from_yaml(config_file)


def test_data_error_type_is_raised_for_bad_metadata(tmp_path):
    with pytest.raises(DataError, match=r"no metadata\.csv"):
        read_metadata(tmp_path)


def test_monitor_chooses_the_best_epoch_by_the_named_metric(dataset, tmp_path):
    with pytest.raises(TrainError, match="monitor must be one of"):
        TrainConfig(train=dataset, output_dir=tmp_path, monitor="val_magic")
    result = run_training(TrainConfig(train=dataset, output_dir=tmp_path / "run", max_epochs=4,
                                      monitor="val_loss", patience=4, **SMALL))  # fmt: skip
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["epoch"] == int(result.history.val_loss.to_numpy().argmin())


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("{not json", "not a readable settings file"),
        ('{"crop_size": 64}', "no `parameters` mapping"),
        ('{"parameters": {"crop_size": "64"}}', "crop_size must be int, got '64'"),
        ('{"parameters": {"margin": 5}}', "margin must be between 0 and 2"),
    ],
)
def test_a_bad_preprocess_json_stops_training_before_it_starts(tmp_path, settings, expected):
    data = crops_folder(tmp_path / "crops", {"train": [0, 1], "val": [0, 1]})
    (data / "preprocess.json").write_text(settings)
    with pytest.raises(DataError, match=expected) as error:
        run_training(TrainConfig(train=data, output_dir=tmp_path / "run", **SMALL))
    assert str(data / "preprocess.json") in str(error.value)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


def test_the_artifact_records_the_stage1_settings_as_typed_crop_parameters(tiny_model):
    _, artifact = load_artifact(tiny_model)
    assert artifact.preprocessing.crop_size == 64 and artifact.preprocessing.margin == 0.3
    assert artifact.preprocessing.face_detector == "dlib"


@pytest.mark.parametrize("rule", ["mean", "max_face_mean"])
def test_validation_scores_a_video_as_predict_does(tmp_path, rule):
    """One rule: the calibrated video score the artifact was fitted on equals what predict's
    judge (through evaluate, from the same crops) gives, with two persons per video."""
    from deepfake_detect.evaluate import evaluate
    from deepfake_detect.inference import Predictor

    data = crops_folder(tmp_path / "crops", BALANCED, crops=6)
    metadata = pd.read_csv(data / "metadata.csv")
    rows = [{"video_id": v, "crop_index": c, "frame_index": c // 2, "face_index": c % 2}
            for v in metadata.video_id for c in range(6)]  # fmt: skip
    pd.DataFrame(rows).to_csv(data / "crops.csv", index=False)
    config = TrainConfig(train=data, output_dir=tmp_path / "run", max_epochs=2, lr=3e-3,
                         aggregation=rule, **SMALL)  # fmt: skip
    result = run_training(config)
    saved = json.loads((result.artifact_dir / "model.json").read_text())
    assert saved["aggregation"] == rule
    validation = pd.read_csv(tmp_path / "run" / "val_videos.csv", dtype={"video_id": str})
    predictor = Predictor(tmp_path / "run")
    assert predictor.aggregation == rule  # predict reads the rule from the artifact
    evaluated = evaluate(data, predictor, tmp_path / "eval", split="val", progress=False)
    by_video = evaluated.videos.set_index("video_id").probability
    assert len(validation) == 8
    for row in validation.itertuples():
        assert by_video[row.video_id] == pytest.approx(row.probability, abs=1e-5)


def test_real_only_trains_on_the_real_videos_with_self_blends_as_fakes(dataset, tmp_path):
    from deepfake_detect.training import load_tables

    with pytest.raises(TrainError, match="real_only needs self_blend"):
        TrainConfig(train=dataset, output_dir=tmp_path, real_only=True)
    config = TrainConfig(train=dataset, output_dir=tmp_path, real_only=True, self_blend=0.5)
    train, val, _ = load_tables(config)
    assert set(train.rows.label) == {0} and len(train.rows) == 8
    assert set(val.rows.label) == {0, 1}  # validation keeps its real fakes
