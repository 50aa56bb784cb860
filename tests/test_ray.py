"""Stage 1 and batch prediction on Ray (issue 16), on one local Ray instance of 2 CPUs.

Ray is in the `dev` extra, so these tests run wherever `make test` does; they never skip.
Its workers load a sitecustomize that makes some videos kill their worker: `crash*` every
time, `once*` the first time only (a marker file beside the video remembers).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import ray
from test_preprocess import FAST, cli, load_outputs, make_dataset
from typer.testing import CliRunner

from deepfake_detect import extras
from deepfake_detect.cli import app
from deepfake_detect.preprocess import JOURNAL, Journal, VideoDataProcessor

pytestmark = pytest.mark.slow  # `pytest -m "not slow"` leaves it out; `make test` runs it

RAY = FAST | {"executor": "ray"}
LOCAL_POOL = FAST | {"num_workers": 2}

DYING_WORKERS = """
import json
import os
import sys

if sys.argv and sys.argv[0].endswith("default_worker.py"):  # Ray's workers, not its agents
    import deepfake_detect.preprocess as stage

    real_extract_faces = stage.extract_faces

    def extract_or_die(path, *args, **kwargs):
        marker = path.with_suffix(".died")
        if path.stem.startswith("crash") or (path.stem.startswith("once") and not marker.exists()):
            marker.touch()
            os._exit(1)  # as a decoder segfault would
        return real_extract_faces(path, *args, **kwargs)

    stage.extract_faces = extract_or_die
"""


@pytest.fixture(scope="module", autouse=True)
def local_ray(tmp_path_factory):
    """One local Ray instance (2 CPUs) for the module; its workers get DYING_WORKERS."""
    site = tmp_path_factory.mktemp("ray-site")
    (site / "sitecustomize.py").write_text(DYING_WORKERS)
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), *sys.path])
    try:
        from deepfake_detect.ray_executor import connect

        yield connect(num_cpus=2)
    finally:
        ray.shutdown()
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ray-data") / "data", n_real=3, n_fake=3)


@pytest.fixture(scope="module")
def local_run(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    VideoDataProcessor([dataset], out, **LOCAL_POOL).run()
    return out


def assert_same_outputs(expected: Path, got: Path) -> None:
    """Same tables and byte-identical .npy files (the source path column aside)."""
    want, have = load_outputs(expected), load_outputs(got)
    pd.testing.assert_frame_equal(want[0].drop(columns="path"), have[0].drop(columns="path"))
    pd.testing.assert_frame_equal(want[1], have[1])
    assert want[2] == have[2] and len(want[2]) == 6


def test_ray_writes_what_the_local_pool_writes(dataset, local_run, tmp_path):
    VideoDataProcessor([dataset], tmp_path / "ray", **RAY).run()
    assert_same_outputs(local_run, tmp_path / "ray")
    local = pd.read_csv(local_run / "metadata.csv")
    assert (pd.read_csv(tmp_path / "ray" / "metadata.csv").path == local.path).all()


def break_finished_sources(out: Path) -> list[str]:
    """Overwrite the videos the journal says are done: a resume that redid one would record
    a decode_error for it."""
    paths = []
    metadata = pd.read_csv(out / "metadata.csv").set_index("video_id")
    for video_id in Journal(out / JOURNAL).read():
        Path(metadata.path[video_id]).write_bytes(b"garbage")
        paths.append(metadata.path[video_id])
    return paths


@pytest.mark.parametrize(("first", "then"), [(LOCAL_POOL, RAY), (RAY, LOCAL_POOL)])
def test_a_run_resumes_on_the_other_executor(tmp_path, local_run, first, then):
    data = make_dataset(tmp_path / "data", n_real=3, n_fake=3)
    out = tmp_path / "out"
    VideoDataProcessor([data], out, **first).run()
    journal = out / JOURNAL
    journal.write_text("".join(journal.read_text().splitlines(keepends=True)[:3]))
    broken = break_finished_sources(out)
    done = Journal(journal).read()
    for npy in (out / "faces").glob("*.npy"):  # the other executor must make the rest
        if npy.stem not in done:
            npy.unlink()
    VideoDataProcessor([data], out, **then).run()
    assert_same_outputs(local_run, out)
    assert len(broken) == 3 and journal.read_text().count("\n") == 6


def test_a_dead_worker_is_retried_and_one_that_dies_twice_is_a_worker_crash(tmp_path):
    data = make_dataset(tmp_path / "data", n_real=2, n_fake=2)
    face_clip_copy = (data / "real" / "r0.mp4").read_bytes()
    (data / "real" / "crash.mp4").write_bytes(face_clip_copy)
    (data / "fake" / "once.mp4").write_bytes(face_clip_copy)
    metadata = VideoDataProcessor([data], tmp_path / "out", **RAY).run().set_index("video_id")
    assert (data / "fake" / "once.died").exists(), "the once-dying worker did not die"
    status = metadata.status.to_dict()
    assert status.pop("data__real__crash") == "worker_crash"
    assert set(status.values()) == {"ok"} and len(status) == 5
    error = metadata.error["data__real__crash"]
    assert error == f"{data / 'real' / 'crash.mp4'}: the worker decoding it died"


def test_a_driver_killed_9_resumes_without_redoing_finished_videos(tmp_path, local_run):
    data = make_dataset(tmp_path / "data", n_real=3, n_fake=3)
    out = tmp_path / "out"
    args = ["--executor", "ray", "--num-workers", "1", "--frames-per-video", "4",
            "--crop-size", "64", "--quiet"]  # fmt: skip
    process = subprocess.Popen(
        cli("preprocess", str(data), "--output-dir", str(out), *args), start_new_session=True
    )
    journal = out / JOURNAL
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 2:
            break
        time.sleep(0.02)
    # Ray's reaper stops the instance the driver started: raylet, GCS, workers. Its two agents
    # follow on their own once they notice the raylet gone (about a minute), not waited for.
    ray_processes = psutil.Process(process.pid).children(recursive=True)
    core = [p for p in ray_processes if not p.name().endswith("Agent")]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "metadata.csv").exists(), "the run finished before it could be killed"
    _, alive = psutil.wait_procs(core, timeout=30)
    assert not alive, alive
    done = Journal(journal).read()
    assert 2 <= len(done) < 6
    for video_id in done:  # a redone video would now be a decode_error
        relative = video_id.removeprefix("data__").replace("__", "/")
        (data / f"{relative}.mp4").write_bytes(b"garbage")
    VideoDataProcessor([data], out, **RAY).run()
    assert_same_outputs(local_run, out)
    assert journal.read_text().count("\n") == 6


def test_without_ray_the_executor_names_the_extra(monkeypatch, tmp_path):
    real = extras.importlib.util.find_spec
    monkeypatch.setattr(
        extras.importlib.util, "find_spec", lambda name: None if name == "ray" else real(name)
    )
    data = make_dataset(tmp_path / "data", n_real=1, n_fake=1)
    result = CliRunner().invoke(
        app, ["preprocess", str(data), "--output-dir", str(tmp_path / "o"), "--executor", "ray"]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'deepfake-detect[ray]'" in lines[0]


def judged(path: Path) -> list[dict]:
    """The videos of a predict --json, in path order, without their timings."""
    videos = json.loads(path.read_text())["videos"]
    return sorted(({k: v for k, v in video.items() if k != "timings"} for video in videos),
                  key=lambda video: video["path"])  # fmt: skip


def test_predict_on_ray_actors_equals_the_local_run(dataset, tiny_model, tmp_path):
    (dataset.parent / "notes.mp4").write_text("not a video\n")
    results = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        result = CliRunner().invoke(app, [
            "predict", str(dataset), str(dataset.parent / "notes.mp4"), "--model",
            str(tiny_model), "--frames", "4", "--every", "0", "--executor", executor,
            "--json", f"{out}.json", "--csv", f"{out}.csv",
        ])  # fmt: skip
        assert result.exit_code == 1, result.output  # notes.mp4 cannot be scored
        csv = pd.read_csv(f"{out}.csv").sort_values("path", ignore_index=True)
        results[executor] = judged(Path(f"{out}.json")), csv
    assert results["ray"][0] == results["local"][0]
    assert len(results["ray"][0]) == 7
    pd.testing.assert_frame_equal(results["ray"][1], results["local"][1])


@pytest.mark.parametrize("source", ["stage-1 folder", "raw videos"])
def test_evaluate_on_ray_actors_equals_the_local_run(source, dataset, local_run, tiny_model,
                                                     tmp_path):  # fmt: skip
    data = local_run if source == "stage-1 folder" else dataset
    tables = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        result = CliRunner().invoke(app, [
            "evaluate", str(data), "--model", str(tiny_model), "--output-dir", str(out),
            "--frames", "4", "--executor", executor, "--quiet",
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
        tables[executor] = pd.read_csv(out / "videos.csv")
        summary = json.loads((out / "evaluation.json").read_text())
        tables[f"{executor} auc"] = summary["video"]["auc"]
    pd.testing.assert_frame_equal(tables["ray"], tables["local"])
    assert tables["ray auc"] == tables["local auc"] and len(tables["ray"]) == 6


def test_predictions_are_written_as_they_come(tmp_path):
    from deepfake_detect.inference import PredictionWriter, VideoPrediction

    with PredictionWriter(tmp_path / "v.json", tmp_path / "v.csv") as writer:
        writer.add(VideoPrediction(path="a.mp4", status="ok", probability=0.9, verdict="FAKE"))
        assert pd.read_csv(tmp_path / "v.csv").path.tolist() == ["a.mp4"]
        assert '"path": "a.mp4"' in (tmp_path / "v.json").read_text()
        writer.add(VideoPrediction(path="b.mp4", status="no_face", error="b.mp4: no face"))
    assert [v["path"] for v in json.loads((tmp_path / "v.json").read_text())["videos"]] == [
        "a.mp4", "b.mp4"
    ]  # fmt: skip


def test_an_actor_that_cannot_load_its_model_is_one_line(tmp_path, dataset):
    from deepfake_detect.ray_executor import RayError, RayPredictors

    pool = RayPredictors(tmp_path / "absent", {"device": "cpu"}, actors=1)
    with pytest.raises(RayError, match=r"^a Ray actor could not start: .*absent") as error:
        list(pool.predict_all(sorted(dataset.rglob("*.mp4"))))
    assert "\n" not in str(error.value)
    pool.close()


def double(value: int) -> int:
    return 2 * value


def test_tasks_are_submitted_a_bounded_number_at_a_time(local_ray):
    from deepfake_detect.ray_executor import map_tasks

    taken = []

    def items():
        for value in range(20):
            taken.append(value)
            yield value

    results = []
    for value, result in map_tasks(local_ray, double, items(), max_in_flight=3):
        assert len(taken) - len(results) <= 3  # never more than 3 submitted and unfinished
        results.append((value, result))
    assert sorted(results) == [(v, 2 * v) for v in range(20)]
