import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from media import audio_only, face_clip, noise_clip, still_clip, truncated_copy, two_face_frame

from deepfake_detect.preprocess import (
    CROP_COLUMNS,
    METADATA_COLUMNS,
    PreprocessError,
    VideoDataProcessor,
)

FAST = {"frames_per_video": 4, "crop_size": 64, "num_workers": 0, "progress": False}


def make_dataset(root: Path, n_real: int = 2, n_fake: int = 2) -> Path:
    for i in range(n_real):
        face_clip(root / "real" / f"r{i}.mp4", seed=i)
    for i in range(n_fake):
        face_clip(root / "fake" / f"f{i}.mp4", seed=10 + i)
    return root


def load_outputs(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, bytes]]:
    metadata = pd.read_csv(out / "metadata.csv", keep_default_na=False)
    crops = pd.read_csv(out / "crops.csv")
    npys = {p.name: p.read_bytes() for p in sorted((out / "faces").glob("*.npy"))}
    return metadata, crops, npys


def test_outputs_follow_the_data_contract(tmp_path):
    data = make_dataset(tmp_path / "data")
    metadata = VideoDataProcessor([data], tmp_path / "out", **FAST).run()
    out = tmp_path / "out"
    assert list(metadata.columns) == METADATA_COLUMNS
    assert len(metadata) == 4 and set(metadata.status) == {"ok"}
    assert sorted(metadata.label) == [0, 0, 1, 1]
    assert set(metadata.split) <= {"train", "val", "test"}
    crops = pd.read_csv(out / "crops.csv")
    assert list(crops.columns) == CROP_COLUMNS
    # YuNet's landmarks, in frame pixels, inside each box: eyes above the nose above the mouth
    assert crops.x0.lt(crops.eye1_x).all() and crops.eye2_x.lt(crops.x1).all()
    assert crops.eye1_y.lt(crops.nose_y).all() and crops.nose_y.lt(crops.mouth2_y).all()
    assert crops.score.between(0.6, 1).all()
    for row in metadata.itertuples():
        array = np.load(out / row.npy_path, mmap_mode="r", allow_pickle=False)
        assert array.dtype == np.uint8 and array.shape == (row.n_crops, 64, 64, 3)
        mine = crops[crops.video_id == row.video_id]
        assert list(mine.crop_index) == list(range(row.n_crops))
        assert row.n_frames_saved == 4 and row.n_faces >= 1
        assert (row.width, row.height, row.n_frames) == (192, 192, 10)
    settings = json.loads((out / "preprocess.json").read_text())
    assert settings["parameters"]["crop_size"] == 64
    assert settings["parameters"]["face_detector"] == "yunet"
    assert {"av", "dlib", "opencv", "deepfake_detect"} <= settings["versions"].keys()
    assert not list(out.rglob("*.tmp*"))


def test_crops_are_faces_not_background(tmp_path):
    data = make_dataset(tmp_path / "data", n_real=1, n_fake=1)
    VideoDataProcessor([data], tmp_path / "out", **FAST).run()
    crops = pd.read_csv(tmp_path / "out" / "crops.csv")
    # Grace Hopper's face is near the centre of the 192 px frames, about 60-80 px wide
    width = crops.x1 - crops.x0
    assert width.between(40, 120).all()
    assert ((crops.x0 + crops.x1) / 2).between(60, 140).all()


def test_without_face_detection_whole_frames_are_letterboxed(tmp_path):
    data = tmp_path / "data"
    still_clip(data / "real" / "wide.mp4", np.full((90, 160, 3), 200, np.uint8))
    still_clip(data / "fake" / "wide.mp4", np.full((90, 160, 3), 100, np.uint8))
    options = FAST | {"use_face_detection": False}
    metadata = VideoDataProcessor([data], tmp_path / "out", **options).run()
    assert set(metadata.status) == {"ok"}
    array = np.load(tmp_path / "out" / metadata.npy_path[0])
    assert array.shape == (4, 64, 64, 3)
    assert array[:, :10].max() == 0 and array[:, 28:36].min() > 90  # black bars above/below


def test_two_people_keep_their_face_index_largest_first(tmp_path):
    data = tmp_path / "data"
    still_clip(data / "real" / "pair.mp4", two_face_frame(), n_frames=6)
    face_clip(data / "fake" / "one.mp4")
    metadata = VideoDataProcessor([data], tmp_path / "out", **FAST).run()
    pair = metadata.set_index("video_id").loc["data__real__pair"]
    assert (pair.n_faces, pair.n_crops) == (2, 8)
    crops = pd.read_csv(tmp_path / "out" / "crops.csv")
    mine = crops[crops.video_id == "data__real__pair"]
    assert list(mine.face_index) == [0, 1] * 4  # per frame, person 0 then person 1
    person0, person1 = mine[mine.face_index == 0], mine[mine.face_index == 1]
    assert (person0.x1 < 320).all() and (person1.x0 > 320).all()
    one_face = VideoDataProcessor([data], tmp_path / "out1", **FAST | {"faces_per_frame": 1}).run()
    assert one_face.set_index("video_id").loc["data__real__pair"].n_crops == 4


def test_bad_videos_get_a_status_and_the_run_goes_on(tmp_path):
    data = make_dataset(tmp_path / "data", n_real=1, n_fake=1)
    bad = data / "fake"
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("not a video\n" * 40)
    audio_only(bad / "audio.mp4")
    truncated_copy(data / "real" / "r0.mp4", bad / "cut.mp4", keep=0.5)
    noise_clip(bad / "noface.mp4")
    still_clip(bad / "tiny.mp4", np.zeros((2, 2, 3), np.uint8), codec="mpeg4")
    face_clip(data / "real" / "ünï cödé" / "with space.mp4")
    metadata = VideoDataProcessor([data], tmp_path / "out", **FAST).run()
    status = dict(zip(metadata.video_id, metadata.status, strict=True))
    assert status["data__fake__empty"] == "empty_file"
    assert status["data__fake__text"] == "decode_error"
    assert status["data__fake__audio"] == "no_video_stream"
    assert status["data__fake__cut"] == "decode_error"
    assert status["data__fake__noface"] == "no_face"
    assert status["data__fake__tiny"] == "no_face"
    assert status["data__real__r0"] == status["data__fake__f0"] == "ok"
    unicode_row = metadata[metadata.path.str.contains("with space")].iloc[0]
    assert unicode_row.status == "ok" and unicode_row.video_id.isascii()
    failed = metadata[metadata.status != "ok"]
    assert failed.error.str.len().gt(0).all() and not failed.error.str.contains("\n").any()
    assert all(str(data) in message for message in failed.error)
    assert (failed.n_crops == 0).all()


def test_a_video_that_disappears_mid_run_is_reported(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", n_real=1, n_fake=1)
    processor = VideoDataProcessor([data], tmp_path / "out", **FAST)
    discovered = processor.discover()
    (data / "real" / "r0.mp4").unlink()
    monkeypatch.setattr(processor, "discover", lambda: discovered)
    metadata = processor.run().set_index("video_id")
    assert metadata.loc["data__real__r0", "status"] == "missing"
    assert metadata.loc["data__fake__f0", "status"] == "ok"
    # it comes back: a resume retries it
    face_clip(data / "real" / "r0.mp4")
    metadata = processor.run().set_index("video_id")
    assert metadata.loc["data__real__r0", "status"] == "ok"


def test_resume_skips_finished_videos_without_decoding_them(tmp_path):
    data = make_dataset(tmp_path / "data")
    first = VideoDataProcessor([data], tmp_path / "out", **FAST).run()
    # Break a finished video: a resume must not read it again, so its row stays ok.
    (data / "real" / "r0.mp4").write_bytes(b"garbage")
    second = VideoDataProcessor([data], tmp_path / "out", **FAST).run()
    pd.testing.assert_frame_equal(first, second)
    restarted = VideoDataProcessor([data], tmp_path / "out", **FAST | {"resume": False}).run()
    assert restarted.set_index("video_id").loc["data__real__r0", "status"] == "decode_error"


def test_resume_with_other_crop_parameters_is_refused(tmp_path):
    data = make_dataset(tmp_path / "data", n_real=1, n_fake=1)
    VideoDataProcessor([data], tmp_path / "out", **FAST).run()
    with pytest.raises(PreprocessError, match=r"crop_size: 64 -> 96"):
        VideoDataProcessor([data], tmp_path / "out", **FAST | {"crop_size": 96}).run()


def test_worker_pool_gives_the_same_result_as_in_process(tmp_path):
    data = make_dataset(tmp_path / "data")
    VideoDataProcessor([data], tmp_path / "serial", **FAST).run()
    VideoDataProcessor([data], tmp_path / "pool", **FAST | {"num_workers": 2}).run()
    serial, pool = load_outputs(tmp_path / "serial"), load_outputs(tmp_path / "pool")
    pd.testing.assert_frame_equal(serial[0], pool[0])
    pd.testing.assert_frame_equal(serial[1], pool[1])
    assert serial[2] == pool[2]


CRASHING_WORKERS = """
import os
import deepfake_detect.preprocess as stage

real_extract_faces = stage.extract_faces

def extract_or_die(path, *args, **kwargs):
    if path.stem.startswith("crash"):
        os._exit(1)  # as a decoder segfault would
    return real_extract_faces(path, *args, **kwargs)

stage.extract_faces = extract_or_die
"""


def test_a_video_that_kills_its_worker_is_recorded_and_the_others_finish(tmp_path, monkeypatch):
    """Workers load a sitecustomize that dies on crash*.mp4, the way a decoder segfault would."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(CRASHING_WORKERS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), *sys.path]))
    data = make_dataset(tmp_path / "data", n_real=3, n_fake=2)
    face_clip(data / "real" / "crash.mp4", seed=5)
    metadata = VideoDataProcessor([data], tmp_path / "out", **FAST | {"num_workers": 2}).run()
    status = dict(zip(metadata.video_id, metadata.status, strict=True))
    assert status.pop("data__real__crash") == "worker_crash"
    assert set(status.values()) == {"ok"} and len(status) == 5
    error = metadata.set_index("video_id").error["data__real__crash"]
    assert error.endswith("crash.mp4: the worker decoding it died")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "deepfake_detect", *args]


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    data = make_dataset(tmp_path / "data", n_real=5, n_fake=5)
    args = ["--frames-per-video", "6", "--crop-size", "64", "--num-workers", "1", "--quiet"]
    subprocess.run(cli("preprocess", str(data), "--output-dir", str(tmp_path / "whole"), *args),
                   check=True)  # fmt: skip
    out = tmp_path / "killed"
    process = subprocess.Popen(
        cli("preprocess", str(data), "--output-dir", str(out), *args), start_new_session=True
    )
    journal = out / "progress.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "metadata.csv").exists(), "the run finished before it could be killed"
    subprocess.run(cli("preprocess", str(data), "--output-dir", str(out), *args), check=True)
    whole, resumed = load_outputs(tmp_path / "whole"), load_outputs(out)
    pd.testing.assert_frame_equal(whole[0].drop(columns="path"), resumed[0].drop(columns="path"))
    pd.testing.assert_frame_equal(whole[1], resumed[1])
    assert whole[2] == resumed[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--crop-size", "0"], "crop-size"),
        (["--frame-sampling-rate", "5", "--frames-per-video", "8"], "not both"),
        (["--dataset-format", "nope"], "dataset-format"),
        (["--face-detector", "nope"], "face-detector"),
        (["--val-fraction", "0.6", "--test-fraction", "0.5"], "below 1"),
    ],
)
def test_invalid_arguments_exit_2_with_one_clear_line(tmp_path, args, message):
    data = make_dataset(tmp_path / "data", n_real=1, n_fake=1)
    result = subprocess.run(
        cli("preprocess", str(data), "--output-dir", str(tmp_path / "o"), *args),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_frames_over_max_pixels_are_a_decode_error_naming_the_size(tmp_path):
    data = make_dataset(tmp_path / "data", n_real=1, n_fake=0)  # 192x192 frames
    big = still_clip(data / "real" / "big.mp4", np.zeros((240, 320, 3), np.uint8))
    out = tmp_path / "out"
    result = subprocess.run(
        cli("preprocess", str(data), "--output-dir", str(out), "--max-pixels", "40000",
            "--frames-per-video", "4", "--crop-size", "64", "--num-workers", "0", "--quiet"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metadata = pd.read_csv(out / "metadata.csv", keep_default_na=False).set_index("path")
    assert metadata.status.to_dict() == {
        str(big): "decode_error",
        str(data / "real" / "r0.mp4"): "ok",
    }
    assert metadata.error[str(big)] == f"{big}: 320x240 frames exceed --max-pixels (40000)"


def test_dataset_errors_exit_2_naming_the_folder(tmp_path):
    empty = tmp_path / "empty"
    (empty / "real").mkdir(parents=True)
    (empty / "fake").mkdir()
    for folder in (empty, tmp_path / "absent"):
        result = subprocess.run(
            cli("preprocess", str(folder), "--output-dir", str(tmp_path / "o")),
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2
        assert str(folder) in result.stderr
        assert "Traceback" not in result.stderr


def test_help_lists_every_flag():
    wide = os.environ | {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
    result = subprocess.run(cli("preprocess", "--help"), capture_output=True, text=True, env=wide)
    for flag in ["--output-dir", "--dataset-format", "--resume", "--no-face-detection",
                 "--face-detector", "--frame-sampling-rate", "--frames-per-video", "--max-frames",
                 "--crop-size", "--margin", "--faces-per-frame", "--num-workers", "--limit",
                 "--max-pixels",
                 "--val-fraction", "--test-fraction", "--seed", "--splits"]:  # fmt: skip
        assert flag in result.stdout, flag


def test_real_samples_ffpp_and_dfdc(samples, tmp_path):
    options = FAST | {"frames_per_video": 3, "num_workers": 2}
    metadata = VideoDataProcessor(
        [samples / "ffpp", samples / "dfdc"], tmp_path / "out", **options
    ).run()
    by_id = metadata.set_index("video_id")
    missing = by_id[by_id.index.str.contains("awnfpubqmo")]
    assert list(missing.status) == ["missing"]
    assert by_id.loc["ffpp__original_sequences__youtube__c23__videos__004", "status"] == "ok"
    ffpp = metadata[metadata.dataset == "ffpp"]
    assert len(ffpp) == 7 and (ffpp.status == "ok").all()
    assert ffpp.groupby("group").split.nunique().max() == 1  # a fake and its original together
    assert (ffpp.n_crops == 3).all()  # FF++ faces are large and frontal: found in every frame
    assert (metadata[metadata.status == "ok"].n_crops >= 1).all()


def test_real_samples_grid_mpeg1_through_a_csv(samples, tmp_path):
    clips = sorted(samples.glob("grid/*.mpg"))[:3]
    table = tmp_path / "grid.csv"
    pd.DataFrame({"path": [str(c) for c in clips], "label": [0, 0, 1]}).to_csv(table, index=False)
    metadata = VideoDataProcessor([table], tmp_path / "out", allow_outside_root=True, **FAST).run()
    assert (metadata.status == "ok").all() and (metadata.width == 360).all()


def test_csv_rows_outside_the_csv_folder_are_refused_unless_allowed(tmp_path):
    face_clip(tmp_path / "data" / "inside.mp4")
    (tmp_path / "private.mp4").write_text("not yours\n")
    table = tmp_path / "data" / "list.csv"
    table.write_text("path,label\ninside.mp4,0\n../private.mp4,1\n")
    metadata = VideoDataProcessor([table], tmp_path / "out", **FAST).run()
    status = dict(zip(metadata.path.map(lambda p: Path(p).name), metadata.status, strict=True))
    assert status == {"inside.mp4": "ok", "private.mp4": "outside_root"}
    assert "--allow-outside-root" in metadata.set_index("status").error["outside_root"]
    assert len(list((tmp_path / "out" / "faces").glob("*.npy"))) == 1
    metadata = VideoDataProcessor([table], tmp_path / "out", allow_outside_root=True, **FAST).run()
    status = dict(zip(metadata.path.map(lambda p: Path(p).name), metadata.status, strict=True))
    assert status == {"inside.mp4": "ok", "private.mp4": "decode_error"}, "not retried on resume"


def test_a_torn_journal_line_is_cut_off_counted_and_its_video_redone(tmp_path):
    """Issue 14.9: a kill mid-append leaves a line without its newline; the next record must
    not be glued to it (that made the next video unreadable too)."""
    from io import StringIO

    from rich.console import Console

    from deepfake_detect.preprocess import JOURNAL, Journal

    data = make_dataset(tmp_path / "data")
    out = tmp_path / "out"
    first = VideoDataProcessor([data], out, **FAST).run()
    journal = out / JOURNAL
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # torn tail
    said = StringIO()
    console = Console(file=said, width=200)
    again = VideoDataProcessor([data], out, **FAST | {"progress": True, "console": console}).run()
    assert "resuming: 3 videos already done, 1 to go (1 unreadable journal lines skipped)" in (
        said.getvalue()
    )
    pd.testing.assert_frame_equal(first, again)
    reader = Journal(journal)
    assert len(reader.read()) == 4 and reader.unreadable == 0
    assert journal.read_text().count("\n") == 4


@pytest.mark.slow
def test_pool_workers_exit_when_preprocess_is_killed_9(tmp_path):
    """Issue 14.8: kill -9 of the driver alone (not its process group) leaves no worker or
    resource tracker behind."""
    import psutil

    data = make_dataset(tmp_path / "data", n_real=5, n_fake=5)
    out = tmp_path / "out"
    args = ["--frames-per-video", "8", "--crop-size", "64", "--num-workers", "2", "--quiet"]
    process = subprocess.Popen(
        cli("preprocess", str(data), "--output-dir", str(out), *args), start_new_session=True
    )
    try:
        driver = psutil.Process(process.pid)
        deadline = time.monotonic() + 120
        children: list[psutil.Process] = []
        while time.monotonic() < deadline and process.poll() is None:
            journal = out / "progress.jsonl"
            children = driver.children(recursive=True)
            if len(children) >= 3 and journal.exists() and journal.read_text().count("\n") >= 1:
                break  # two workers and the resource tracker, and work under way
            time.sleep(0.02)
        assert process.poll() is None, "the run finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, [p.cmdline()[-2:] for p in alive]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.parametrize("shape", ["square", "stretch", "pad"])
def test_crops_csv_landmarks_map_into_each_crop_shape(shape):
    """crops.csv's landmarks (frame pixels) land, in crop pixels, on the dots they mark."""
    from deepfake_detect.crops import LANDMARK_COLUMNS, CropConfig, landmarks_in_crops
    from deepfake_detect.faces import CROP_SHAPES, Box

    image = np.zeros((300, 400, 3), np.uint8)
    points = [(150, 120), (190, 118), (170, 140), (155, 165), (188, 166)]
    for x, y in points:
        image[y - 1 : y + 2, x - 1 : x + 2] = 255
    box = Box(130.3, 95.7, 215.2, 195.1)
    record = {"x0": box.x0, "y0": box.y0, "x1": box.x1, "y1": box.y1}
    records = pd.DataFrame([record | dict(zip(LANDMARK_COLUMNS, np.ravel(points), strict=True))])
    crop = CROP_SHAPES[shape](image, box, 0.3, 128)[..., 0].astype(float)
    for x, y in landmarks_in_crops(records, CropConfig(crop_size=128, crop_shape=shape))[0]:
        ys, xs = np.mgrid[round(y) - 4 : round(y) + 5, round(x) - 4 : round(x) + 5]
        weights = crop[ys, xs]
        dot = (weights * xs).sum() / weights.sum(), (weights * ys).sum() / weights.sum()
        assert np.hypot(dot[0] - x, dot[1] - y) < 0.7
