"""Long videos: sampling by time, streaming with bounded memory, progress, and fake segments
from per-frame scores to the verdict, --json/--csv, the report, the serve API and --annotate."""

from __future__ import annotations

import json
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from media import face_clip, partly_blended_clip
from servers import BASE_URL
from typer.testing import CliRunner

from deepfake_detect import crops as crops_module
from deepfake_detect.cli import app
from deepfake_detect.crops import CropConfig, extract_faces
from deepfake_detect.inference import Predictor, VideoPrediction
from deepfake_detect.segments import Segment, clock, describe, find_segments
from deepfake_detect.serve import create_app
from deepfake_detect.training import TrainConfig, run_training
from deepfake_detect.video import read_frames

pytestmark = pytest.mark.slow  # `pytest -m "not slow"` leaves it out; `make test` runs it

FPS, SECONDS, BLENDED = 5, 60, (20.0, 40.0)  # the manipulated middle of a one-minute clip
EVERY = 2.0


# --- segments from given scores ----------------------------------------------------------------


def one_person(probabilities: list[float], threshold: float = 0.5) -> list[Segment]:
    """Segments of one person sampled once a second (frame = 30 x second)."""
    times = np.arange(len(probabilities), dtype=float)
    return find_segments([0] * len(times), times * 30, times, probabilities, threshold)


def test_a_step_up_and_down_gives_a_segment_with_boundaries_halfway_between_samples():
    (segment,) = one_person([0.1] * 6 + [0.9] * 6 + [0.2] * 8)
    assert (segment.start, segment.end) == (5.5, 11.5)
    assert (segment.start_frame, segment.end_frame) == (165, 345)
    assert segment.n_frames == 6 and segment.mean_probability == pytest.approx(0.9)


def test_a_segment_at_either_end_of_the_video_ends_at_its_first_or_last_sample():
    first, last = one_person([0.8] * 3 + [0.1] * 10 + [0.7] * 4)
    assert (first.start, first.end, last.start, last.end) == (0.0, 2.5, 12.5, 16.0)


def test_one_stray_sample_neither_makes_nor_breaks_a_segment():
    assert one_person([0.1] * 5 + [0.99] + [0.1] * 5) == []
    (segment,) = one_person([0.9] * 5 + [0.05] + [0.9] * 5)
    assert (segment.start, segment.end, segment.n_frames) == (0.0, 10.0, 11)
    assert segment.mean_probability == pytest.approx((0.9 * 10 + 0.05) / 11)


def test_segments_need_a_minimum_length_and_nothing_above_threshold_gives_none():
    assert len(one_person([0.1] * 4 + [0.9] * 2 + [0.1] * 4)) == 1
    times = np.arange(10.0)
    short = find_segments([0] * 10, times, times, [0.1] * 4 + [0.9] * 2 + [0.1] * 4, 0.5,
                          min_samples=3)  # fmt: skip
    assert short == []
    assert one_person([0.49] * 20) == []


def test_each_person_gets_its_own_segments_in_order_of_time():
    times = np.arange(10.0)
    faces = [0] * 10 + [1] * 10
    scores = [0.1] * 6 + [0.9] * 4 + [0.9] * 4 + [0.1] * 6
    found = find_segments(faces, [*times, *times], [*times, *times], scores, 0.5)
    assert [(s.face_index, s.start, s.end) for s in found] == [(1, 0.0, 3.5), (0, 5.5, 9.0)]


def test_segment_times_read_as_a_clock():
    assert [clock(s) for s in (0, 59.6, 130, 3725)] == ["00:00", "01:00", "02:10", "1:02:05"]
    segments = [Segment(face, 130 + 60 * face, 165 + 60 * face, 0, 1, 0.9, 3) for face in range(5)]
    assert describe(segments[:1]) == "02:10-02:45, face 0"
    assert describe(segments).endswith("04:10-04:45, face 2 (and 2 more)")


def test_the_verdict_names_the_segments_that_drove_it():
    segment = Segment(1, 130, 165, 3900, 4950, 0.91, 4)
    fake = VideoPrediction("a.mp4", "ok", probability=0.7, verdict="FAKE", segments=[segment])
    assert fake.summary == "FAKE: 02:10-02:45, face 1"
    real = VideoPrediction("a.mp4", "ok", probability=0.2, verdict="REAL", segments=[segment])
    assert real.summary == "REAL (fake-looking: 02:10-02:45, face 1)"
    assert VideoPrediction("a.mp4", "ok", probability=0.2, verdict="REAL").summary == "REAL"
    assert VideoPrediction("a.mp4", "no_face").summary == "could not score (no_face)"


# --- streaming ---------------------------------------------------------------------------------


def test_frames_are_let_go_as_soon_as_they_are_cropped(tmp_path, monkeypatch):
    """However long the video, extract_faces holds the frame it crops and no other."""
    alive: list[weakref.ref] = []
    most_alive = 0
    sample_frames = crops_module.sample_frames

    def watched(*args: object, **kwargs: object):
        info, frames = sample_frames(*args, **kwargs)

        def each():
            nonlocal most_alive
            for frame in frames:
                most_alive = max(most_alive, sum(ref() is not None for ref in alive))
                alive.append(weakref.ref(frame))
                yield frame

        return info, each()

    monkeypatch.setattr(crops_module, "sample_frames", watched)
    faces = extract_faces(face_clip(tmp_path / "a.mp4", seconds=2), CropConfig(crop_size=64))
    assert len(alive) == faces.n_frames_sampled == 20
    assert most_alive <= 1


def test_crops_are_scored_batch_by_batch_and_kept_only_when_asked(tmp_path):
    clip = face_clip(tmp_path / "a.mp4", seconds=2)
    config = CropConfig(crop_size=64, frames_per_video=10)
    batches: list[int] = []

    def score(crops: np.ndarray) -> np.ndarray:
        batches.append(len(crops))
        return crops.reshape(len(crops), -1).mean(axis=1)

    kept = extract_faces(clip, config)
    scored = extract_faces(clip, config, score=score, keep_crops=False, batch_size=4)
    assert scored.crops is None and kept.scores is None
    assert batches == [4, 4, 2] and scored.records == kept.records
    assert np.allclose(scored.scores, kept.crops.reshape(10, -1).mean(axis=1))


# --- a long clip manipulated in its middle -----------------------------------------------------


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("long")
    return {
        "middle": partly_blended_clip(root / "middle.mp4", FPS, SECONDS, BLENDED),
        "clean": partly_blended_clip(root / "clean.mp4", FPS, SECONDS, (0.0, 0.0)),
    }


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    """meso4 trained on stage-1 crops of a real clip and of the same face self-blended
    (other camera seeds than the clips judged), with the threshold at 0.5."""
    root = tmp_path_factory.mktemp("blend-model")
    (root / "crops" / "faces").mkdir(parents=True)
    rows = []
    for label in (0, 1):
        clip = partly_blended_clip(root / f"{label}.mp4", FPS, 12, (0, 99 * label), seed=label + 1)
        config = CropConfig(crop_size=64, frames_per_video=60, face_detector="dlib")  # as below
        crops = extract_faces(clip, config).crops
        for part, chunk in enumerate(np.array_split(crops, 10)):
            video_id = f"{label}_{part}"
            np.save(root / "crops" / "faces" / f"{video_id}.npy", chunk)
            rows.append({"video_id": video_id, "label": label, "group": video_id,
                         "split": "val" if part >= 7 else "train",
                         "npy_path": f"faces/{video_id}.npy", "n_crops": len(chunk),
                         "status": "ok"})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "crops" / "metadata.csv", index=False)
    settings = {"parameters": {"crop_size": 64, "margin": 0.3, "face_detector": "dlib"}}
    (root / "crops" / "preprocess.json").write_text(json.dumps(settings))
    config = TrainConfig(
        train=root / "crops", output_dir=root / "run", max_epochs=6, monitor="val_loss",
        lr=3e-3, batch_size=16, crops_per_video=6, val_crops_per_video=6, image_size=64,
        augment="none", progress=False,
    )  # fmt: skip
    run_training(config)
    return Predictor(root / "run", device="cpu", frames=8, every=EVERY, threshold=0.5)


@pytest.fixture(scope="module")
def middle(predictor, clips) -> VideoPrediction:
    return predictor.predict(clips["middle"], keep_crops=True)


def test_sampling_by_time_covers_the_whole_long_video(middle):
    times = np.array(middle.sample_times)
    assert middle.video["frames_sampled"] == len(times) == SECONDS / EVERY + 1
    assert times[0] == 0 and times[-1] == SECONDS - 1 / FPS
    assert np.diff(times).max() <= EVERY + 1e-9


def test_a_manipulated_middle_is_one_segment_within_a_sampling_interval_of_the_truth(middle):
    interval = float(np.median(np.diff(middle.sample_times)))
    assert middle.status == "ok"
    (segment,) = middle.segments
    assert abs(segment.start - BLENDED[0]) <= interval
    assert abs(segment.end - BLENDED[1]) <= interval
    assert segment.face_index == 0 and segment.mean_probability >= 0.5
    assert describe([segment]) in middle.summary


def test_a_video_with_no_part_above_the_threshold_reports_no_segment(predictor, clips):
    clean = predictor.predict(clips["clean"])
    assert clean.status == "ok" and clean.verdict == "REAL"
    assert clean.segments == [] and clean.summary == "REAL"


def test_progress_counts_time_processed_out_of_the_duration(predictor, clips):
    seen: list[tuple[float, float]] = []
    predictor.predict(clips["clean"], on_progress=lambda done, total: seen.append((done, total)))
    assert len(seen) == SECONDS / EVERY + 1
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert all(total == pytest.approx(SECONDS) for _, total in seen)


def cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "deepfake_detect", *args]
    return subprocess.run(command, capture_output=True, text=True)


def test_json_csv_report_and_annotation_carry_the_segments(predictor, clips, middle, tmp_path):
    out = tmp_path
    result = cli(
        "predict", str(clips["middle"]), "--model", str(predictor.model_path), "--frames", "8",
        "--every", str(EVERY), "--threshold", "0.5", "--json", str(out / "v.json"),
        "--csv", str(out / "v.csv"), "--report", str(out / "r.html"),
        "--annotate", str(out / "segments.mp4"), "--annotate-segments",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (segment,) = middle.segments
    video = json.loads((out / "v.json").read_text())["videos"][0]
    assert video["segments"] == [vars(segment)] and video["summary"] == middle.summary
    assert pd.read_csv(out / "v.csv").segments[0] == describe([segment])
    rows = pd.read_csv(out / "v_segments.csv")
    assert rows.to_dict("records") == [{"path": str(clips["middle"])} | vars(segment)]
    report = (out / "r.html").read_text()
    assert "Fake-looking segments" in report and describe([segment]) in report
    _, annotated = read_frames(out / "segments.mp4", sampling_rate=1)
    assert len(annotated) == segment.end_frame - segment.start_frame + 1


def test_the_serve_api_returns_the_segments(predictor, clips, middle, tmp_path):
    with TestClient(create_app(predictor, work_dir=tmp_path), base_url=BASE_URL) as client:
        data = clips["middle"].read_bytes()
        job = client.post("/api/jobs", files={"file": ("middle.mp4", data, "video/mp4")}).json()
        while job["state"] not in {"done", "failed"}:
            job = client.get(f"/api/jobs/{job['id']}").json()
        assert job["state"] == "done", job["error"]
        result = job["result"]
        assert result["segments"] == [vars(s) for s in middle.segments]
        assert result["summary"] == middle.summary.replace(str(clips["middle"]), "middle.mp4")
        assert len(result["sample_times"]) == SECONDS / EVERY + 1
        page = client.get("/").text
        assert 'id="segments"' in page and "showSegments(result)" in page


def test_predict_refuses_frames_over_max_pixels_naming_the_size(predictor, clips, tmp_path):
    output = tmp_path / "v.json"
    result = CliRunner().invoke(app, [
        "predict", str(clips["clean"]), "--model", str(predictor.model_path),
        "--max-pixels", str(160 * 160 - 1), "--json", str(output),
    ])  # fmt: skip
    assert result.exit_code == 1
    (video,) = json.loads(output.read_text())["videos"]
    assert video["status"] == "decode_error" and video["probability"] is None
    assert video["error"] == f"{clips['clean']}: 160x160 frames exceed --max-pixels (25599)"
