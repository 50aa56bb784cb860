"""The web app and REST API of `deepfake-detect serve`, through FastAPI's test client."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from media import audio_only, face_clip, noise_clip, truncated_copy

from deepfake_detect.inference import Predictor
from deepfake_detect.serve import (
    ServeError,
    VideoResult,
    check_listen_address,
    create_app,
    display_name,
    serve,
)

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def predictor(tiny_model: Path) -> Predictor:
    return Predictor(tiny_model, device="cpu", frames=4)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    face = face_clip(root / "face.mp4")
    (root / "notes.txt").write_text("not a video\n")
    (root / "empty.mp4").write_bytes(b"")
    return {
        "face": face,
        "noise": noise_clip(root / "noise.mp4"),
        "text": root / "notes.txt",
        "empty": root / "empty.mp4",
        "audio": audio_only(root / "song.mp4"),
        # mp4 keeps its index at the end: cut, it no longer decodes at all.
        "truncated_mp4": truncated_copy(face, root / "cut.mp4"),
        # Matroska streams: cut, it still opens but holds no whole frame.
        "truncated_mkv": truncated_copy(face_clip(root / "face.mkv"), root / "cut.mkv", 0.3),
    }


@contextmanager
def running_app(predictor, work_dir: Path, **options) -> Iterator[TestClient]:
    """The app with its lifespan (retention sweeps, cleanup on exit) behind a test client."""
    with TestClient(create_app(predictor, work_dir=work_dir, **options)) as client:
        yield client


def upload(client: TestClient, path: Path, name: str | None = None, **headers: str):
    files = {"file": (name or path.name, path.read_bytes(), "application/octet-stream")}
    return client.post("/api/jobs", files=files, headers=headers)


def wait_for_job(client: TestClient, job_id: str, timeout_s: float = 60, **headers: str) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        if job["state"] in {"done", "failed"}:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished after {timeout_s} s")


def check(client: TestClient, path: Path, name: str | None = None) -> dict:
    """Upload a file and wait for its job to end."""
    response = upload(client, path, name)
    assert response.status_code == 202, response.text
    return wait_for_job(client, response.json()["id"])


def job_folders(work_dir: Path) -> list[Path]:
    return [p for p in work_dir.glob("deepfake-detect-*/*") if p.is_dir()]


def test_upload_poll_result_and_report(predictor, clips, tmp_path):
    with running_app(predictor, tmp_path) as client:
        response = upload(client, clips["face"])
        assert response.status_code == 202
        job = response.json()
        assert job["state"] in {"queued", "running"} and job["result"] is None
        assert response.headers["location"] == f"/api/jobs/{job['id']}"
        job = wait_for_job(client, job["id"])
        assert job["state"] == "done" and job["finished"] >= job["submitted"]
        result = job["result"]
        assert result["status"] == "ok" and result["verdict"] in {"REAL", "FAKE"}
        assert 0 <= result["probability"] <= 1 and result["path"] == "face.mp4"
        assert result["persons"][0]["n_frames"] >= 1 and result["frames"]
        same_as_predict = predictor.predict(clips["face"]).to_dict(per_frame=True)
        assert result.keys() == same_as_predict.keys() == VideoResult.model_fields.keys()
        assert result["probability"] == pytest.approx(same_as_predict["probability"])

        report = client.get(f"/api/jobs/{job['id']}/report")
        assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
        assert "Deepfake detection report" in report.text and "Grad-CAM heatmap" in report.text
        assert "script-src" not in report.headers["content-security-policy"]

        (folder,) = job_folders(tmp_path)
        assert [p.name for p in folder.iterdir()] == ["report.html"], "upload not deleted"
        assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
        page = client.get("/")
        assert page.status_code == 200 and 'type="file"' in page.text
    assert not list(tmp_path.glob("deepfake-detect-*")), "files left after shutdown"


def test_health_names_the_model_and_version(predictor, tmp_path):
    with running_app(predictor, tmp_path) as client:
        health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "meso4"
    assert health["input_size"] == 64 and health["version"]
    assert health["token_required"] is False


@pytest.mark.parametrize(
    ("clip", "status", "message"),
    [
        ("text", 415, "notes.txt: not a readable video"),
        ("empty", 415, "empty.mp4: file is empty"),
        ("audio", 415, "song.mp4: has no video stream"),
        ("truncated_mp4", 415, "cut.mp4: not a readable video"),
    ],
)
def test_files_that_do_not_decode_are_refused(predictor, clips, tmp_path, clip, status, message):
    with running_app(predictor, tmp_path) as client:
        response = upload(client, clips[clip])
        assert response.status_code == status
        assert response.json()["detail"].startswith(message)
        assert str(tmp_path) not in response.text, "a server path leaked into the answer"
        assert not job_folders(tmp_path)
        assert check(client, clips["face"])["result"]["status"] == "ok", "server stopped serving"


@pytest.mark.parametrize(
    ("clip", "status", "error"),
    [("noise", "no_face", "noise.mp4: no face found"), ("truncated_mkv", "no_frames", "cut.mkv")],
)
def test_videos_that_cannot_be_scored_end_with_a_status(
    predictor, clips, tmp_path, clip, status, error
):
    with running_app(predictor, tmp_path) as client:
        job = check(client, clips[clip])
        assert job["state"] == "done"
        result = job["result"]
        assert (result["status"], result["verdict"], result["probability"]) == (status, None, None)
        assert result["error"].startswith(error) and str(tmp_path) not in result["error"]
        report = client.get(f"/api/jobs/{job['id']}/report")
        assert report.status_code == 200 and "could not score" in report.text


def test_a_form_without_a_file_is_422(predictor, tmp_path):
    with running_app(predictor, tmp_path, queue=1) as client:
        for response in (client.post("/api/jobs"), client.post("/api/jobs", data={"file": "x"})):
            assert response.status_code == 422
            assert "multipart file field `file`" in response.json()["detail"]
        assert upload(client, Path(__file__)).status_code == 415, "the queue place was not freed"


def test_oversize_uploads_are_413(predictor, clips, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(clips["face"].read_bytes() * 10)
    # Twice the queue: each refusal must give its place back.
    with running_app(predictor, tmp_path, max_upload_mb=0.02, queue=1) as client:
        for path in (big, big, clips["face"], clips["face"]):
            response = upload(client, path)
            assert response.status_code == 413, response.text
            assert response.json()["detail"] == "the upload is larger than the 0.02 MB limit"
        # No Content-Length (chunked): refused as soon as the bytes streamed pass the limit.
        chunks = iter([b"--b\r\n" + b"x" * 50_000] * 3)
        streamed = client.post(
            "/api/jobs", content=chunks, headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert streamed.status_code == 413 and "0.02 MB limit" in streamed.json()["detail"]
        assert not job_folders(tmp_path)
        assert client.get("/healthz").status_code == 200


class GatedPredictor:
    """The real predictor, but each prediction waits until the gate opens."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.gate = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.predictor, name)

    def predict(self, path: Path, keep_crops: bool = False):
        assert self.gate.wait(timeout=60), "test gate never opened"
        return self.predictor.predict(path, keep_crops=keep_crops)


def test_a_full_queue_is_429_with_retry_after_and_every_accepted_job_finishes(
    predictor, clips, tmp_path
):
    gated = GatedPredictor(predictor)
    with running_app(gated, tmp_path, workers=1, queue=2) as client:
        accepted = [upload(client, clips["face"]) for _ in range(2)]
        assert [r.status_code for r in accepted] == [202, 202]
        busy = upload(client, clips["face"])
        assert busy.status_code == 429 and int(busy.headers["retry-after"]) > 0
        assert "busy" in busy.json()["detail"]
        gated.gate.set()
        states = [wait_for_job(client, r.json()["id"])["state"] for r in accepted]
        assert states == ["done", "done"]
        assert check(client, clips["face"])["state"] == "done", "places not given back"


def test_token_is_required_on_every_api_call(predictor, clips, tmp_path):
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with running_app(predictor, tmp_path, token=TOKEN) as client:
        assert client.get("/healthz").json()["token_required"] is True
        assert client.get("/").status_code == 200, "the page must load without the token"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = upload(client, clips["face"], **headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert client.get("/api/jobs/anything", headers=headers).status_code == 401
        response = upload(client, clips["face"], **bearer)
        assert response.status_code == 202
        job_id = response.json()["id"]
        assert wait_for_job(client, job_id, **bearer)["state"] == "done"
        assert client.get(f"/api/jobs/{job_id}/report").status_code == 401
        assert client.get(f"/api/jobs/{job_id}/report", headers=bearer).status_code == 200
        assert client.get("/api/jobs/unknown", headers=bearer).status_code == 404
        schema = client.get("/openapi.json").json()
        assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_exposed_address_without_token_is_refused():
    with pytest.raises(ServeError, match=r"refusing to listen on 0\.0\.0\.0 without --token"):
        serve(Path("no-such-model"), host="0.0.0.0")
    with pytest.raises(ServeError, match="must not be empty"):
        check_listen_address("127.0.0.1", " ")
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        check_listen_address(host, None)
    check_listen_address("0.0.0.0", TOKEN)
    with pytest.raises(ServeError, match="queue must be positive"):
        create_app(object(), queue=0)
    with pytest.raises(ServeError, match="must not be empty"):
        create_app(object(), token="")


def test_client_file_name_never_becomes_a_path(predictor, clips, tmp_path):
    with running_app(predictor, tmp_path) as client:
        job = check(client, clips["face"], name="../../etc/passwd")
        assert job["result"]["path"] == "passwd"
        odd = check(client, clips["face"], name='<img src=x onerror=alert(1)>".mp4')
        report = client.get(f"/api/jobs/{odd['id']}/report").text
        assert "<img src=x" not in report and "&lt;img src=x" in report
        stored = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert {p.name for p in stored} == {"report.html"}
        assert all(len(p.parent.name) == 32 for p in stored), "not under generated names"
    assert display_name("C:\\Users\\me\\clip.mp4") == "clip.mp4"
    assert display_name("") == display_name("..") == "upload"


def test_finished_jobs_are_deleted_after_the_retention_time(predictor, clips, tmp_path):
    with running_app(predictor, tmp_path, retention_s=0.2) as client:
        job = check(client, clips["face"])
        deadline = time.monotonic() + 10
        while client.get(f"/api/jobs/{job['id']}").status_code != 404:
            assert time.monotonic() < deadline, "job not deleted after its retention time"
            time.sleep(0.05)
        assert not job_folders(tmp_path)


def test_openapi_schema_documents_the_api(predictor, tmp_path):
    with running_app(predictor, tmp_path) as client:
        schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) == {"/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/report",
                          "/healthz"}  # fmt: skip
    post = paths["/api/jobs"]["post"]
    assert "file" in post["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"202", "413", "415", "429"} <= post["responses"].keys()
    job = schema["components"]["schemas"]["JobStatus"]
    assert {"id", "state", "submitted", "finished", "result"} <= job["properties"].keys()
    assert "securitySchemes" not in schema.get("components", {})
