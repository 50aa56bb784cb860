"""Fuzz targets: arbitrary bytes into each parser that reads untrusted input.

A target passes an input when the parser either accepts it or refuses it with its own one-line
error (VideoError, DatasetError, ArtifactError, an HTTP 4xx); anything else (another
exception, a 500, a crash of the process) is a finding. Each `*_target(work)` returns the
function to call per input and seed inputs that show the fuzzer valid files.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from deepfake_detect.artifact import (
    ArtifactError,
    ModelArtifact,
    load_artifact,
    read_artifact,
    save_artifact,
)
from deepfake_detect.crops import CropConfig
from deepfake_detect.dataset_layouts import (
    DatasetError,
    discover,
    scan_celebdf,
    scan_dfdc,
    scan_ffpp,
    scan_folders,
)
from deepfake_detect.models import create_model
from deepfake_detect.video import VideoError, check_video, read_frames, write_video

OneInput = Callable[[bytes], None]
Target = tuple[OneInput, list[bytes]]
Reader = tuple[Path, Callable[[], object]]
MULTIPART_BOUNDARY = "fuzzboundary"
# What the upload endpoint may answer: accepted, or refused with a reason.
UPLOAD_ANSWERS = frozenset({202, 400, 403, 408, 413, 415, 422, 429})


def _still(size: int = 32) -> np.ndarray:
    rows = np.linspace(0, 255, size, dtype=np.uint8)
    return np.dstack([np.tile(rows, (size, 1))] * 3)


def _seed_videos(work: Path) -> list[bytes]:
    """Tiny videos in the containers and codecs users upload, and a still image."""
    frames = [np.roll(_still(), shift, axis=1) for shift in range(4)]
    kinds = {".mp4": "libx264", ".mkv": "libx264", ".avi": "mpeg4"}
    made = [write_video(work / f"seed{suffix}", frames, 10, codec).read_bytes()
            for suffix, codec in kinds.items()]  # fmt: skip
    return [*made, cv2.imencode(".png", _still())[1].tobytes()]


def video_target(work: Path) -> Target:
    """The probe and decode entry: what serve's upload check and stage 1 run on a file."""
    clip = work / "clip.mp4"

    def one_input(data: bytes) -> None:
        clip.write_bytes(data)
        with contextlib.suppress(VideoError):
            check_video(clip)
            read_frames(clip, frames_per_video=4)

    return one_input, _seed_videos(work)


def _first_byte_picks(readers: list[Reader], refusal: type[Exception]) -> OneInput:
    """Per input: its first byte picks a (file, reader); the rest of the input becomes that
    file, which the reader then reads. `refusal` is the parser's own error."""

    def one_input(data: bytes) -> None:
        if not data:
            return
        file, read = readers[data[0] % len(readers)]
        file.write_bytes(data[1:])
        with contextlib.suppress(refusal):
            read()

    return one_input


def _dataset_file(root: Path, name: str, videos: list[str]) -> Path:
    """`root/name`, to be written per input, beside dummy video files the dataset lists."""
    for video in videos:
        (root / video).parent.mkdir(parents=True, exist_ok=True)
        (root / video).write_bytes(b"x")
    return root / name


def dataset_csv_target(work: Path) -> Target:
    """The adapters' text tables: a CSV dataset (0), a folder's manifest.csv (1), Celeb-DF's
    test list (2)."""
    csv_file = _dataset_file(work / "csv", "list.csv", ["a.mp4"])
    manifest = _dataset_file(work / "folders", "manifest.csv", ["real/a.mp4", "fake/b.mp4"])
    celebdf = ["Celeb-real/id0_0000.mp4", "Celeb-synthesis/id0_id1_0000.mp4"]
    test_list = _dataset_file(work / "celebdf", "List_of_testing_videos.txt", celebdf)
    readers = [(csv_file, lambda: discover(csv_file, "csv")),
               (manifest, lambda: scan_folders(manifest.parent)),
               (test_list, lambda: scan_celebdf(test_list.parent))]  # fmt: skip
    seeds = [b"\x00path,label,split,group,method\na.mp4,real,train,alice,\n../b.mp4,1,,,\n",
             b"\x01path,group,split,method\nfake/b.mp4,alice,test,swap\n",
             b"\x021 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n"]  # fmt: skip
    return _first_byte_picks(readers, DatasetError), seeds


def dataset_json_target(work: Path) -> Target:
    """The adapters' JSON files: a DFDC part's metadata.json (0), FF++'s train.json (1)."""
    dfdc = _dataset_file(work / "dfdc", "metadata.json", ["a.mp4", "b.mp4"])
    ffpp_video = "original_sequences/youtube/c23/videos/000.mp4"
    ffpp = _dataset_file(work / "ffpp", "splits/train.json", [ffpp_video])
    ffpp.parent.mkdir(exist_ok=True)
    for split in ("val", "test"):
        (ffpp.parent / f"{split}.json").write_text("[]")
    readers = [(dfdc, lambda: scan_dfdc(dfdc.parent)),
               (ffpp, lambda: scan_ffpp(ffpp.parents[1], splits_dir=ffpp.parent))]  # fmt: skip
    entries = {"a.mp4": {"label": "REAL", "split": "train"},
               "b.mp4": {"label": "FAKE", "original": "a.mp4", "split": "train"}}  # fmt: skip
    seeds = [b"\x00" + json.dumps(entries).encode(), b'\x01[["000", "001"], ["002", "003"]]']
    return _first_byte_picks(readers, DatasetError), seeds


def tiny_artifact(folder: Path) -> Path:
    """An untrained meso4 at 32 px: the cheapest model artifact there is."""
    network, config = create_model("meso4", image_size=32)
    crops = CropConfig(crop_size=32, frames_per_video=4)
    save_artifact(folder, network, ModelArtifact(model=config, preprocessing=crops))
    return folder


def artifact_target(work: Path) -> Target:
    """The artifact loader: its model.json (0) or its weights (1), each fuzzed in an artifact
    whose other file is sound."""
    config = tiny_artifact(work / "config") / "model.json"
    weights = tiny_artifact(work / "weights") / "model.safetensors"
    readers = [(config, lambda: read_artifact(config.parent)),
               (weights, lambda: load_artifact(weights.parent))]  # fmt: skip
    seeds = [b"\x00" + config.read_bytes(), b"\x01" + weights.read_bytes()]
    return _first_byte_picks(readers, ArtifactError), seeds


def _multipart(name: str, content: bytes) -> bytes:
    head = (f"--{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{name}\"\r\nContent-Type: video/mp4\r\n\r\n")  # fmt: skip
    return head.encode() + content + f"\r\n--{MULTIPART_BOUNDARY}--\r\n".encode()


def upload_target(work: Path) -> Target:
    """The upload path of serve's API: body limits, the multipart parser, the saved file's
    check. An input is `<Content-Type parameters>\\r\\n\\r\\n<body>`, posted to /api/jobs."""
    from fastapi.testclient import TestClient

    from deepfake_detect.inference import Predictor, VideoPrediction
    from deepfake_detect.serve import create_app
    from deepfake_detect.status import Status

    class Unjudged(Predictor):
        """Queued uploads are not judged: the target is the way in, not the model."""

        def predict(self, path: Path, keep_crops: bool = False) -> VideoPrediction:
            return VideoPrediction(str(path), Status.NO_FACE, f"{path}: not judged")

    predictor = Unjudged(tiny_artifact(work / "model"), device="cpu")
    app = create_app(predictor, work_dir=work, max_upload_mb=1, queue=64, retention_s=1)
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    client.__enter__()  # the app's lifespan: its retention sweeps keep the folder small
    gc.freeze()  # as `serve` does: each job's collection then skips torch's objects

    def one_input(data: bytes) -> None:
        head, separator, body = data.partition(b"\r\n\r\n")
        parameters = head.decode("latin-1") if separator and head.isascii() else ""
        if not separator or not parameters.isprintable():
            parameters, body = f"boundary={MULTIPART_BOUNDARY}", data
        content_type = f"multipart/form-data; {parameters}"
        response = client.post("/api/jobs", content=body, headers={"content-type": content_type})
        if response.status_code not in UPLOAD_ANSWERS:
            raise AssertionError(f"/api/jobs answered {response.status_code}: {response.text}")

    prefix = f"boundary={MULTIPART_BOUNDARY}\r\n\r\n".encode()
    files = [*(("clip.mp4", video) for video in _seed_videos(work)), ("notes.txt", b"hello")]
    return one_input, [prefix + _multipart(name, content) for name, content in files]


TARGETS: dict[str, Callable[[Path], Target]] = {
    "video": video_target,
    "dataset_csv": dataset_csv_target,
    "dataset_json": dataset_json_target,
    "artifact": artifact_target,
    "upload": upload_target,
}
