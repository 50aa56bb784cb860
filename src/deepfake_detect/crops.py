"""One video to its face crops: sample frames, detect and track faces, crop them.

Preprocessing and prediction both call `extract_faces`, so a model sees faces cropped
exactly as the faces it was trained on.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.faces import (
    CROP_SHAPES,
    DETECTORS,
    Box,
    FaceDetector,
    create_detector,
    detect_in_frames,
    letterbox,
    track_faces,
)
from deepfake_detect.schema import check_field_types
from deepfake_detect.status import Status
from deepfake_detect.video import Frame, VideoError, VideoInfo, read_frames

STAGE1_SETTINGS = "preprocess.json"


class CropSettingsError(DeepfakeDetectError, ValueError):
    """A stage-1 settings file that cannot be read into a CropConfig; one line naming it."""


@dataclass(frozen=True)
class CropConfig:
    """Every parameter that shapes the crops (saved in preprocess.json and the model artifact)."""

    use_face_detection: bool = True
    face_detector: str = "dlib"
    frames_per_video: int | None = 32
    frame_sampling_rate: int | None = None
    max_frames: int | None = None
    crop_size: int = 256
    margin: float = 0.3
    faces_per_frame: int | None = None
    detect_size: int = 640
    scan_every: int = 8
    crop_shape: str = "square"

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.face_detector not in DETECTORS:
            known = ", ".join(DETECTORS)
            raise ValueError(f"unknown face detector {self.face_detector!r}; known: {known}")
        if self.crop_shape not in CROP_SHAPES:
            known = ", ".join(CROP_SHAPES)
            raise ValueError(f"unknown crop shape {self.crop_shape!r}; known: {known}")
        for name in (
            "frames_per_video", "frame_sampling_rate", "max_frames", "faces_per_frame", "scan_every"
        ):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.frame_sampling_rate is None and self.frames_per_video is None:
            raise ValueError("set frames_per_video or frame_sampling_rate")
        if not 16 <= self.crop_size <= 2048:
            raise ValueError(f"crop_size must be between 16 and 2048, got {self.crop_size}")
        if not 0 <= self.margin <= 2:
            raise ValueError(f"margin must be between 0 and 2, got {self.margin}")
        if self.detect_size < 64:
            raise ValueError(f"detect_size must be at least 64, got {self.detect_size}")

    @classmethod
    def from_dict(cls, parameters: dict[str, Any]) -> CropConfig:
        """From preprocess.json's parameters (keys this version does not know are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in parameters.items() if k in names})

    @classmethod
    def read(cls, folder: Path) -> CropConfig:
        """The crop parameters a stage-1 folder was made with (its preprocess.json), checked.

        A folder without the file (crops made by other tools) gets the defaults.

        Raises:
            CropSettingsError: the file is not JSON, has no `parameters` mapping, or a value
                has the wrong type or range.
        """
        path = folder / STAGE1_SETTINGS
        if not path.is_file():
            return cls()
        try:
            parameters = json.loads(path.read_text(encoding="utf-8"))["parameters"]
            return cls.from_dict(parameters)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CropSettingsError(f"{path}: not a readable settings file ({error})") from None
        except (KeyError, AttributeError):
            raise CropSettingsError(f"{path}: no `parameters` mapping of crop settings") from None
        except (TypeError, ValueError) as error:
            raise CropSettingsError(f"{path}: {error}") from None

    @property
    def sampling(self) -> dict[str, int | None]:
        """Either every Nth frame or N evenly spaced ones; the other is not used."""
        if self.frame_sampling_rate:
            return {"sampling_rate": self.frame_sampling_rate, "max_frames": self.max_frames}
        return {"frames_per_video": self.frames_per_video, "max_frames": self.max_frames}


@dataclass
class FaceCrops:
    """A video's crops (N, S, S, 3) with one record per crop tracing it to its frame and box."""

    info: VideoInfo
    crops: np.ndarray
    records: list[dict[str, Any]]
    n_frames_sampled: int
    timings: dict[str, float]

    @property
    def n_faces(self) -> int:
        return len({r["face_index"] for r in self.records})

    @property
    def n_frames_with_faces(self) -> int:
        return len({r["frame_index"] for r in self.records})


_PER_THREAD = threading.local()


def _detector(name: str) -> FaceDetector:
    """One detector per thread, built on first use: dlib's keeps scratch buffers between
    calls, so two threads sharing one (serve --workers 2) get each other's detections or
    crash."""
    detectors = _PER_THREAD.__dict__.setdefault("detectors", {})
    if name not in detectors:
        detectors[name] = create_detector(name)
    return detectors[name]


def _select_faces(frames: list[Frame], config: CropConfig) -> list[list[Box]]:
    """The boxes to crop in each frame: detected faces (largest first), or the whole frame."""
    if not config.use_face_detection:
        return [[Box(0, 0, f.image.shape[1], f.image.shape[0], float("nan"))] for f in frames]
    return detect_in_frames(
        _detector(config.face_detector),
        [f.image for f in frames],
        config.detect_size,
        config.scan_every,
        config.faces_per_frame,
    )


def extract_faces(path: Path, config: CropConfig, threads: int = 0) -> FaceCrops:
    """Decode the sampled frames, find and track faces, crop each one.

    `threads` decode the video (0: FFmpeg's choice, one per core).

    Raises:
        VideoError: the video cannot be read (its status says why), or no face was found
            (status no_face).
    """
    start = time.perf_counter()
    info, frames = read_frames(path, **config.sampling, threads=threads)
    decoded = time.perf_counter()
    boxes = _select_faces(frames, config)
    detected = time.perf_counter()
    if not any(boxes):
        raise VideoError(Status.NO_FACE, f"{path}: no face found in {len(frames)} frames")
    face_ids = track_faces(boxes)
    crops, records = [], []
    for frame, frame_boxes, frame_ids in zip(frames, boxes, face_ids, strict=True):
        for box, face_index in sorted(zip(frame_boxes, frame_ids, strict=True), key=lambda p: p[1]):
            if config.use_face_detection:
                crop = CROP_SHAPES[config.crop_shape]
                crops.append(crop(frame.image, box, config.margin, config.crop_size))
            else:
                crops.append(letterbox(frame.image, config.crop_size))
            records.append({
                "crop_index": len(records), "frame_index": frame.index,
                "timestamp": round(frame.timestamp, 6), "face_index": face_index,
                "x0": round(box.x0, 2), "y0": round(box.y0, 2), "x1": round(box.x1, 2),
                "y1": round(box.y1, 2), "score": round(box.score, 4),
            })  # fmt: skip
    timings = {"decode": decoded - start, "detect": detected - decoded}
    return FaceCrops(info, np.stack(crops), records, len(frames), timings)
