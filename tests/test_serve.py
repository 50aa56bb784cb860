"""The web app and REST API of `deepfake-detect serve`, through FastAPI's test client."""

from __future__ import annotations

import itertools
import re
import socket
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from media import audio_only, face_clip, noise_clip, truncated_copy, unknown_codec_clip
from servers import BASE_URL, live_server

from deepfake_detect.http_guards import host_names
from deepfake_detect.inference import Predictor
from deepfake_detect.models import gradcam_layer
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
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    face = face_clip(root / "face.mp4")
    (root / "notes.txt").write_text("not a video\n")
    (root / "empty.mp4").write_bytes(b"")
    # A still image under a video's name: FFmpeg opens it as a one-frame stream.
    (root / "photo.mp4").write_bytes(cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))[1])
    return {
        "face": face,
        "other_face": face_clip(root / "other.mp4", seed=5, size=160),
        "photo": root / "photo.mp4",
        "unknown_codec": unknown_codec_clip(root / "zzzz.mp4"),
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
    app = create_app(predictor, work_dir=work_dir, **options)
    with TestClient(app, base_url=BASE_URL) as client:
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
        ("truncated_mkv", 415, "cut.mkv: no frame could be decoded"),
        ("photo", 415, "photo.mp4: only 1 decodable frame(s), a video needs 2"),
        ("unknown_codec", 415, "zzzz.mp4: video stream in an unknown codec"),
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


def test_a_video_that_cannot_be_scored_ends_with_a_status(predictor, clips, tmp_path):
    with running_app(predictor, tmp_path) as client:
        job = check(client, clips["noise"])
        assert job["state"] == "done"
        result = job["result"]
        assert (result["status"], result["verdict"], result["probability"]) == ("no_face", None,
                                                                                 None)  # fmt: skip
        assert result["error"].startswith("noise.mp4: no face found")
        assert str(tmp_path) not in result["error"]
        report = client.get(f"/api/jobs/{job['id']}/report")
        assert report.status_code == 200 and "could not score" in report.text


def test_a_model_that_outputs_nan_gives_model_error_not_a_verdict(nonfinite_models, clips,
                                                                  tmp_path):  # fmt: skip
    nan_predictor = Predictor(nonfinite_models["nan"], device="cpu", frames=4)
    with running_app(nan_predictor, tmp_path) as client:
        job = check(client, clips["face"])
        result = job["result"]
        assert job["state"] == "done" and result["status"] == "model_error"
        assert (result["probability"], result["verdict"], result["frames"]) == (None, None, [])
        assert "not a number" in result["error"]
        report = client.get(f"/api/jobs/{job['id']}/report").text
        assert "could not score" in report and "model_error" in report


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


def test_requests_must_name_this_server_and_come_from_its_own_origin(predictor, clips, tmp_path):
    with running_app(predictor, tmp_path) as client:
        job_id = check(client, clips["face"])["id"]
        # DNS rebinding: attacker.example now resolves to 127.0.0.1, and the browser says so.
        for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.nip.io:8000"):
            rebound = client.get(f"/api/jobs/{job_id}", headers={"Host": host})
            assert rebound.status_code == 400, host
            assert "does not name this server" in rebound.json()["detail"]
            assert "result" not in rebound.text
        for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000"):
            assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
        # A form on another site posting here, or a sandboxed frame (Origin: null).
        for origin in ("https://attacker.example", "null", "http://127.0.0.1:9999"):
            refused = upload(client, clips["face"], Origin=origin)
            assert refused.status_code == 403, origin
            assert "cross-origin request" in refused.json()["detail"]
        assert upload(client, clips["face"], Origin=BASE_URL).status_code == 202, "the page's own"
        assert upload(client, clips["face"]).status_code == 202, "curl sends no Origin"
    exposed = {"host": "0.0.0.0", "token": TOKEN, "allowed_hosts": ["deepfake.lan"]}
    with running_app(predictor, tmp_path, **exposed) as client:
        for host, status in {"192.168.1.20:8000": 200, "deepfake.lan": 200, "[fe80::1]": 200,
                             "attacker.example": 400}.items():  # fmt: skip
            assert client.get("/healthz", headers={"Host": host}).status_code == status, host


def test_host_names_follow_the_listen_address():
    loopback = host_names("127.0.0.1")
    assert [loopback(h) for h in ("127.0.0.1", "localhost", "::1", "10.0.0.2", "x.lan")] == [
        True, True, True, False, False]  # fmt: skip
    own_address = host_names("10.0.0.2", ["box.lan"])
    assert [own_address(h) for h in ("10.0.0.2", "box.lan", "10.0.0.3", "localhost")] == [
        True, True, False, False]  # fmt: skip
    everywhere = host_names("::")
    assert everywhere("fe80::1") and everywhere("localhost") and not everywhere("evil.example")


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
    with pytest.raises(ServeError, match="upload_timeout_s must be positive"):
        create_app(object(), upload_timeout_s=0)


class FailingPredictor(GatedPredictor):
    """The real predictor, but judging fails with a message that names server paths."""

    def predict(self, path: Path, keep_crops: bool = False):
        raise RuntimeError(f"cannot read {path} beside /srv/models/secret/model.safetensors")


def test_no_server_path_reaches_a_client(predictor, clips, tmp_path, tiny_model):
    with running_app(predictor, tmp_path) as client:
        job = check(client, clips["face"])
        report = client.get(f"/api/jobs/{job['id']}/report").text
        assert str(tiny_model) not in report and str(tmp_path) not in report
        assert f"meso4 (64 px input), weights sha256 {predictor.model_digest}" in report
        assert re.fullmatch(r"[0-9a-f]{12}", predictor.model_digest)
    with running_app(FailingPredictor(predictor), tmp_path) as client:
        job = check(client, clips["face"])
        assert job["state"] == "failed"
        assert job["error"] == ("face.mp4: cannot read face.mp4 beside <server path>"), job["error"]


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


def upload_request(url: str, video: bytes) -> tuple[bytes, bytes]:
    """The head and body of a multipart upload of `video`, as a client sends them."""
    request = httpx.Request("POST", f"{url}/api/jobs", files={"file": ("clip.mp4", video)})
    body = request.read()
    lines = ["POST /api/jobs HTTP/1.1", f"Host: {request.url.netloc.decode()}",
             f"Content-Type: {request.headers['content-type']}",
             f"Content-Length: {len(body)}"]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body


def slow_client(url: str, pieces: Iterable[bytes], pause_s: float, give_up_s: float):
    """Send `pieces` one per `pause_s` on a raw connection until the server closes it; returns
    how long the server took to close it (None: still open after `give_up_s`) and its answer."""
    host, port = url.removeprefix("http://").split(":")
    start, answer = time.monotonic(), b""
    with socket.create_connection((host, int(port))) as connection:
        connection.settimeout(pause_s)
        for piece in pieces:
            if time.monotonic() - start > give_up_s:
                return None, answer
            try:
                connection.sendall(piece)
                received = connection.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # reset by the server
                return time.monotonic() - start, answer
            if not received:
                return time.monotonic() - start, answer
            answer += received
    return None, answer


def test_slow_clients_cannot_keep_a_normal_upload_out(predictor, clips, tmp_path):
    limits = {"header_timeout_s": 0.3, "max_connections": 16}
    app = create_app(predictor, work_dir=tmp_path, queue=2, upload_timeout_s=3.0,
                     header_timeout_s=limits["header_timeout_s"])  # fmt: skip
    with live_server(app, **limits) as url:
        face = clips["face"].read_bytes()
        head, body = upload_request(url, face)
        tens = [body[at : at + 10] for at in range(0, len(body), 10)]
        tricklers = {
            # two bodies at 100 B/s: under the floor rate, far from the 3 s upload timeout
            "slow body 1": itertools.chain([head], tens),
            "slow body 2": itertools.chain([head], tens),
            "headers, then no body": itertools.chain([head], itertools.repeat(b"")),
            "headers a byte at a time": (bytes([b]) for b in itertools.cycle(b"X-Pad: a\r\n")),
        }
        with ThreadPoolExecutor(len(tricklers)) as pool:
            running = {name: pool.submit(slow_client, url, pieces, 0.1, 5.0)
                       for name, pieces in tricklers.items()}  # fmt: skip
            time.sleep(0.15)  # all four are connected and sending
            normal = httpx.post(f"{url}/api/jobs", files={"file": ("face.mp4", face)})
            assert normal.status_code == 202, normal.text
            outcomes = {name: future.result() for name, future in running.items()}
        for name, (closed_after, answer) in outcomes.items():
            assert closed_after is not None and closed_after < 2.0, f"{name} was never dropped"
            if "body" in name:
                assert answer.startswith(b"HTTP/1.1 408"), (name, answer[:80])
                assert b"too slow" in answer
        job = httpx.get(f"{url}/api/jobs/{normal.json()['id']}").json()
        assert job["state"] in {"queued", "running", "done"}


def test_connections_are_capped_and_idle_ones_dropped(predictor, tmp_path):
    limits = {"header_timeout_s": 0.3, "max_connections": 4}
    app = create_app(predictor, work_dir=tmp_path, header_timeout_s=0.3)
    with live_server(app, **limits) as url:
        host, port = url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(4)]
        try:
            assert httpx.get(f"{url}/healthz").status_code == 503, "no cap on connections"
            for connection in idle:  # each is dropped after the header timeout
                connection.settimeout(2.0)
                assert connection.recv(1) == b""
        finally:
            for connection in idle:
                connection.close()
        assert httpx.get(f"{url}/healthz").status_code == 200


def grad_cam_images(report: str) -> list[str]:
    return re.findall(r'<img src="(data:image/png;base64,[^"]+)" alt="Grad-CAM heatmap', report)


def judged(client: TestClient, job_ids: list[str]) -> list[tuple[dict, list[str]]]:
    """Each job's result and the Grad-CAM images of its report."""
    results = [wait_for_job(client, job_id)["result"] for job_id in job_ids]
    reports = [client.get(f"/api/jobs/{job_id}/report").text for job_id in job_ids]
    return [(result, grad_cam_images(report)) for result, report in zip(results, reports,
                                                                         strict=True)]  # fmt: skip


class PassesInTheWorstOrder:
    """Makes two threads' Grad-CAM passes through `layer` overlap in the order that mixes them
    up: both enter the layer (so each thread's Grad-CAM hook is on it during both passes),
    then one runs all the layer's forward hooks and only when it has moved on to the next
    module does the other run them."""

    def __init__(self, layer: torch.nn.Module, next_module: torch.nn.Module) -> None:
        self.inside, self.first_left = threading.Barrier(2, timeout=30), threading.Event()
        self.turn = threading.local()
        self.handles = [layer.register_forward_pre_hook(self.enter),
                        layer.register_forward_hook(self.wait_for_the_first, prepend=True),
                        next_module.register_forward_pre_hook(self.leave)]  # fmt: skip

    def enter(self, module, inputs) -> None:
        if torch.is_grad_enabled():  # a Grad-CAM pass, not an inference one
            self.turn.first = self.inside.wait() == 0

    def wait_for_the_first(self, module, inputs, output) -> None:
        if torch.is_grad_enabled() and not self.turn.first:
            assert self.first_left.wait(timeout=30)

    def leave(self, module, inputs) -> None:
        if torch.is_grad_enabled() and self.turn.first:
            self.first_left.set()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def test_two_workers_explaining_different_clips_at_once_match_one_worker(
    predictor, clips, tmp_path
):
    names = ["face", "other_face"]
    with running_app(predictor, tmp_path, workers=1) as client:
        alone = judged(client, [check(client, clips[name])["id"] for name in names])
    modules = list(predictor.network.modules())
    layer = gradcam_layer(predictor.network)
    order = PassesInTheWorstOrder(layer, modules[modules.index(layer) + 1])
    try:
        with running_app(predictor, tmp_path, workers=2) as client:
            accepted = [upload(client, clips[name]) for name in names]
            together = judged(client, [response.json()["id"] for response in accepted])
    finally:
        order.remove()
    for (result, heatmaps), (reference, reference_heatmaps) in zip(together, alone, strict=True):
        assert result["probability"] == reference["probability"]
        assert len(heatmaps) == len(reference_heatmaps) > 0
        assert heatmaps == reference_heatmaps, "a worker's Grad-CAM used the other's pass"


@pytest.fixture(scope="module")
def uncertain_model(tiny_model: Path, tmp_path_factory) -> Path:
    """A copy of tiny_model so cooled that every probability is about 0.5, inside its band."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("uncertain-model")
    shutil.copy(tiny_model / "model" / "model.safetensors", folder)
    config = json.loads((tiny_model / "model" / "model.json").read_text())
    config |= {"temperature": 1e6, "logit_shift": 0.0, "threshold": 0.5,
               "uncertain_band": [0.4, 0.6]}  # fmt: skip
    (folder / "model.json").write_text(json.dumps(config))
    return folder


@pytest.mark.slow
def test_uncertain_end_to_end_through_predict_report_and_serve(uncertain_model, clips, tmp_path):
    import json
    import subprocess
    import sys

    import pandas as pd

    from deepfake_detect.report import write_report

    predictor = Predictor(uncertain_model, device="cpu", frames=4)
    prediction = predictor.predict(clips["face"], keep_crops=True)
    assert prediction.verdict == "UNCERTAIN" and prediction.probability is not None
    assert prediction.summary.startswith("UNCERTAIN: P(fake)")
    assert "could not call validation videos reliably" in prediction.summary
    binary = Predictor(uncertain_model, device="cpu", frames=4, uncertain=False)
    assert binary.predict(clips["face"]).verdict in {"REAL", "FAKE"}

    page = write_report([prediction], predictor, tmp_path / "report.html").read_text()
    assert 'class="badge uncertain">UNCERTAIN<' in page and "uncertain-reason" in page
    assert "could not call validation videos reliably" in page

    command = [sys.executable, "-m", "deepfake_detect", "predict", str(clips["face"]),
               "--model", str(uncertain_model), "--frames", "4", "--device", "cpu"]  # fmt: skip
    out = tmp_path / "v"
    done = subprocess.run([*command, "--json", f"{out}.json", "--csv", f"{out}.csv"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (video,) = json.loads(Path(f"{out}.json").read_text())["videos"]
    assert video["verdict"] == "UNCERTAIN" and len(video["uncertain_band"]) == 2
    row = pd.read_csv(f"{out}.csv").iloc[0]
    assert row.verdict == "UNCERTAIN" and "-" in row.uncertain_band
    forced = subprocess.run([*command, "--no-uncertain", "--json", f"{out}2.json"],
                            capture_output=True, text=True)  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    (video,) = json.loads(Path(f"{out}2.json").read_text())["videos"]
    assert video["verdict"] in {"REAL", "FAKE"} and video["uncertain_band"] is None

    with running_app(predictor, tmp_path) as client:
        job = check(client, clips["face"])
        result = job["result"]
        assert result["verdict"] == "UNCERTAIN" and result["summary"].startswith("UNCERTAIN")
        assert result["uncertain_band"] == pytest.approx(list(predictor.uncertain_band))
        report = client.get(f"/api/jobs/{job['id']}/report").text
        assert 'class="badge uncertain"' in report
        page = client.get("/").text
        assert "uncertain-reason" in page and "--uncertain:" in page
