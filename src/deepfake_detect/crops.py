"""One video to its face crops: sample frames, detect and track faces, crop them.

Preprocessing and prediction both call `extract_faces`, so a model sees faces cropped
exactly as the faces it was trained on. Frames are detected and cropped one at a time as they
are decoded, and crops can be scored batch by batch as they are cut, so memory does not grow
with the video's resolution or length.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.faces import (
    CROP_SHAPES,
    DETECTORS,
    AlignmentSmoother,
    Box,
    FaceDetector,
    alignment,
    create_detector,
    crop_aligned,
    follow_faces,
    letterbox,
    refine_alignment,
    template_points,
)
from deepfake_detect.schema import check_field_types, setting
from deepfake_detect.status import Status
from deepfake_detect.video import MAX_PIXELS, Frame, VideoError, VideoInfo, sample_frames

Item = TypeVar("Item")

STAGE1_SETTINGS = "preprocess.json"
DEFAULT_FRAMES = 32  # sampled per video when neither a count nor a rate is given
# A crop record's landmarks, in frame pixels (empty without a landmark detector): 1 is the
# eye and the mouth corner on the image's left.
LANDMARK_COLUMNS = tuple(
    f"{point}_{axis}" for point in ("eye1", "eye2", "nose", "mouth1", "mouth2") for axis in "xy"
)


class CropSettingsError(DeepfakeDetectError, ValueError):
    """Crop settings out of type or range, or a stage-1 settings file that cannot be read into
    a CropConfig; one line naming the setting (and the file)."""


@dataclass(frozen=True)
class CropConfig:
    """Every parameter that shapes the crops (saved in preprocess.json and the model artifact).

    The single home of their defaults and help: the CLI's options are built from these fields.
    """

    use_face_detection: bool = setting(
        True, "Crop detected faces, or keep whole frames letterboxed."
    )
    face_detector: str = setting("yunet", "Face detector.")
    frames_per_video: int | None = setting(
        None, f"N evenly spaced frames per video ({DEFAULT_FRAMES} when no rate is given)."
    )
    frame_sampling_rate: int | None = setting(
        None, "Keep every Nth frame (instead of evenly spaced)."
    )
    max_frames: int | None = setting(None, "At most this many sampled frames per video.")
    every_seconds: float | None = setting(None, "Seconds between samples in long videos.")
    crop_size: int = setting(256, "Crop side in pixels.")
    margin: float = setting(0.3, "Margin on each side, fraction of the box.")
    faces_per_frame: int | None = setting(None, "Keep at most N faces per frame, largest first.")
    detect_size: int = setting(640, "Longer side of the frame copy the detector sees.")
    scan_every: int = setting(
        8, "Scan whole frames every Nth sampled frame; follow known faces between."
    )
    crop_shape: str = setting(
        "square", "square around the face, or its box stretched or padded to a square."
    )
    # False when absent: artifacts and stage-1 folders made before alignment crop unaligned
    align: bool = setting(
        False, "Warp crops so the 5 landmarks sit on a template (eyes level; needs yunet)."
    )

    def __post_init__(self) -> None:
        try:
            self._check()
        except (TypeError, ValueError) as error:
            raise CropSettingsError(str(error)) from None
        if self.frame_sampling_rate is None and self.frames_per_video is None:
            object.__setattr__(self, "frames_per_video", DEFAULT_FRAMES)  # frozen: set once here

    def _check(self) -> None:
        """Raise TypeError or ValueError naming the first setting out of type or range."""
        check_field_types(self)
        if self.face_detector not in DETECTORS:
            known = ", ".join(DETECTORS)
            raise ValueError(f"unknown face detector {self.face_detector!r}; known: {known}")
        if self.crop_shape not in CROP_SHAPES:
            known = ", ".join(CROP_SHAPES)
            raise ValueError(f"unknown crop shape {self.crop_shape!r}; known: {known}")
        for name in (
            "frames_per_video",
            "frame_sampling_rate",
            "max_frames",
            "faces_per_frame",
            "scan_every",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.frame_sampling_rate and self.frames_per_video:
            raise ValueError("give frame_sampling_rate or frames_per_video, not both")
        if self.every_seconds is not None and self.every_seconds <= 0:
            raise ValueError(f"every_seconds must be positive, got {self.every_seconds}")
        if not 16 <= self.crop_size <= 2048:
            raise ValueError(f"crop_size must be between 16 and 2048, got {self.crop_size}")
        if not 0 <= self.margin <= 2:
            raise ValueError(f"margin must be between 0 and 2, got {self.margin}")
        if self.detect_size < 64:
            raise ValueError(f"detect_size must be at least 64, got {self.detect_size}")
        if self.align:
            with_landmarks = [n for n, d in DETECTORS.items() if getattr(d, "gives_landmarks", 0)]
            if not self.use_face_detection or self.face_detector not in with_landmarks:
                known = ", ".join(with_landmarks)
                raise ValueError(f"align needs a face detector that gives landmarks ({known})")
            if self.crop_shape != "square":
                raise ValueError(f"align makes square crops; crop_shape {self.crop_shape!r} too")

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
    def sampling(self) -> dict[str, int | float | None]:
        """Every Nth frame, or N evenly spaced ones (more for long videos with every_seconds)."""
        if self.frame_sampling_rate:
            return {"sampling_rate": self.frame_sampling_rate, "max_frames": self.max_frames}
        return {
            "frames_per_video": self.frames_per_video,
            "max_frames": self.max_frames,
            "every_seconds": self.every_seconds,
        }


@dataclass
class FaceCrops:
    """A video's crops (N, S, S, 3) with one record per crop tracing it to its frame and box.

    `scores` holds what the scorer gave each crop (None without one); `crops` is None when
    they were not kept. `sample_times` are the times of all sampled frames, with or
    without a face.
    """

    info: VideoInfo
    crops: np.ndarray | None
    records: list[dict[str, Any]]
    sample_times: list[float]
    timings: dict[str, float]
    scores: np.ndarray | None = None

    @property
    def n_frames_sampled(self) -> int:
        return len(self.sample_times)

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


def check_detector(config: CropConfig) -> None:
    """Build the detector once now, so a missing or altered model file stops a run once, in one
    line (DetectorModelError), instead of failing every video."""
    if config.use_face_detection:
        create_detector(config.face_detector)


Faces = list[tuple[int, Box]]


def _select_faces(images: Iterable[np.ndarray], config: CropConfig) -> Iterator[Faces]:
    """The (identity, box) to crop in each frame: detected faces (largest first), followed by
    the detection schedule, or the whole frame."""
    if not config.use_face_detection:
        return ([(0, Box(0, 0, i.shape[1], i.shape[0], float("nan")))] for i in images)
    return follow_faces(
        _detector(config.face_detector),
        images,
        config.detect_size,
        config.scan_every,
        config.faces_per_frame,
    )


def _with_faces(frames: Iterable[Frame], config: CropConfig) -> Iterator[tuple[Frame, Faces]]:
    """Each frame with its boxes. Detection takes one image and yields its boxes before taking
    the next, so the frame handed over is the one held, and the only one."""
    held: deque[Frame] = deque(maxlen=1)

    def images() -> Iterator[np.ndarray]:
        for frame in frames:
            held.append(frame)
            yield frame.image

    for boxes in _select_faces(images(), config):
        yield held.popleft(), boxes


def aligning_transform(
    image: np.ndarray,
    box: Box,
    config: CropConfig,
    smoother: AlignmentSmoother | None = None,
    seconds: float | None = None,
) -> np.ndarray | None:
    """The similarity (2x3, frame -> crop pixels) an aligned crop of this face is cut with:
    fitted to its landmarks, refined on the face seen upright, steadied by its track's
    `smoother` (the frame is `seconds` into the video); None for a box without landmarks."""
    if box.points is None:
        return None
    matrix = alignment(box.points, config.crop_size, config.margin)
    if matrix is None:
        return None
    detector = _detector(config.face_detector)
    matrix = refine_alignment(detector, image, matrix, config.crop_size, config.margin)
    return matrix if smoother is None else smoother(matrix, config.crop_size, seconds)


def _crop(
    frame: Frame, box: Box, config: CropConfig, smoother: AlignmentSmoother | None = None
) -> np.ndarray:
    """One face's crop: aligned with `config.align` (a box without landmarks falls back to
    the crop shape), else the crop shape around the box; or the whole frame."""
    image = frame.image
    if not config.use_face_detection:
        return letterbox(image, config.crop_size)
    matrix = None
    if config.align:
        matrix = aligning_transform(image, box, config, smoother, frame.timestamp)
    if matrix is not None:
        return crop_aligned(image, matrix, config.crop_size)
    return CROP_SHAPES[config.crop_shape](image, box, config.margin, config.crop_size)


def _timed(items: Iterable[Item], timings: dict[str, float], key: str) -> Iterator[Item]:
    """The items, adding the time spent producing each to `timings[key]`."""
    iterator = iter(items)
    while True:
        start = time.perf_counter()
        item = next(iterator, None)
        timings[key] += time.perf_counter() - start
        if item is None:
            return
        yield item


class _CropBatches:
    """Crops gathered as they are cut; each full batch is scored (with a scorer) and kept
    (when asked), so at most one batch of unscored crops is held."""

    def __init__(
        self,
        score: Callable[[np.ndarray], np.ndarray] | None,
        keep: bool,
        size: int,
        timings: dict[str, float],
    ) -> None:
        self.score, self.keep, self.size, self.timings = score, keep, size, timings
        self.pending: list[np.ndarray] = []
        self.kept: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []

    def add(self, crop: np.ndarray) -> None:
        self.pending.append(crop)
        if len(self.pending) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch = np.stack(self.pending)
        self.pending = []
        if self.score is not None:
            start = time.perf_counter()
            self.scores.append(np.asarray(self.score(batch)))
            self.timings["model"] = self.timings.get("model", 0.0) + time.perf_counter() - start
        if self.keep:
            self.kept.append(batch)

    def results(self, order: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The kept crops and the scores, both put in `order`."""
        self.flush()
        crops = np.concatenate(self.kept)[order] if self.keep else None
        scores = np.concatenate(self.scores)[order] if self.score is not None else None
        return crops, scores


def extract_faces(
    path: Path,
    config: CropConfig,
    threads: int = 0,
    *,
    max_pixels: int = MAX_PIXELS,
    score: Callable[[np.ndarray], np.ndarray] | None = None,
    keep_crops: bool = True,
    batch_size: int = 64,
    on_progress: Callable[[float, float], None] | None = None,
) -> FaceCrops:
    """Decode the sampled frames one at a time, find and track faces, crop each one.

    Args:
        path: the video.
        config: sampling, detection and crop parameters.
        threads: decode threads (0: FFmpeg's choice, one per core).
        max_pixels: larger frames are refused (decode_error) before any is decoded.
        score: called on each batch of `batch_size` crops as they are cut (a model); its
            values come back as `FaceCrops.scores`.
        keep_crops: keep the crops in memory (stage 1 saves them; predict needs them only
            for a report).
        on_progress: called after each sampled frame with its time and the video's duration.

    Raises:
        VideoError: the video cannot be read (its status says why), or no face was found
            (status no_face).
    """
    start = time.perf_counter()
    info, frames = sample_frames(path, **config.sampling, threads=threads, max_pixels=max_pixels)
    timings = {"decode": time.perf_counter() - start, "detect": 0.0}
    probed = timings["decode"]
    batches = _CropBatches(score, keep_crops, batch_size, timings)
    faces_per_frame: list[Faces] = []
    sampled: list[tuple[int, float]] = []  # each frame's index and time; its pixels are let go
    found = _timed(_with_faces(_timed(frames, timings, "decode"), config), timings, "detect")
    smoothers: defaultdict[int, AlignmentSmoother] = defaultdict(AlignmentSmoother)
    for frame, faces in found:
        for face, box in faces:
            batches.add(_crop(frame, box, config, smoothers[face]))
        faces_per_frame.append(faces)
        sampled.append((frame.index, frame.timestamp))
        if on_progress is not None:
            on_progress(frame.timestamp, info.duration)
    timings["detect"] -= timings["decode"] - probed  # frames decode while detection waits
    if not any(faces_per_frame):
        raise VideoError(Status.NO_FACE, f"{path}: no face found in {len(sampled)} frames")
    records, order = _records(sampled, _by_prominence(faces_per_frame))
    crops, scores = batches.results(order)
    return FaceCrops(info, crops, records, [t for _, t in sampled], timings, scores)


def _by_prominence(faces_per_frame: list[Faces]) -> list[Faces]:
    """The faces with identities renumbered by mean box area, largest first: face 0 is the
    most prominent person."""
    areas: dict[int, list[float]] = {}
    for faces in faces_per_frame:
        for face, box in faces:
            areas.setdefault(face, []).append(box.area)
    order = sorted(areas, key=lambda face: -float(np.mean(areas[face])))
    rank = {face: position for position, face in enumerate(order)}
    return [[(rank[face], box) for face, box in faces] for faces in faces_per_frame]


def _records(
    frames: list[tuple[int, float]], faces_per_frame: list[Faces]
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """One record per crop, frame by frame and by face index within a frame, and the order
    that puts the crops (cut largest face first) in the records' order."""
    records, order = [], []
    cut = itertools.count()
    for (frame_index, timestamp), faces in zip(frames, faces_per_frame, strict=True):
        numbered = [(face, box, next(cut)) for face, box in faces]
        for face_index, box, position in sorted(numbered, key=lambda face: face[0]):
            order.append(position)
            records.append(
                {
                    "crop_index": len(records),
                    "frame_index": frame_index,
                    "timestamp": round(timestamp, 6),
                    "face_index": face_index,
                    "x0": round(box.x0, 2),
                    "y0": round(box.y0, 2),
                    "x1": round(box.x1, 2),
                    "y1": round(box.y1, 2),
                    "score": round(box.score, 4),
                }
                | _landmark_fields(box)
            )
    return records, np.array(order, np.int64)


def _landmark_fields(box: Box) -> dict[str, float | None]:
    values = np.ravel(box.landmarks) if box.landmarks is not None else [None] * 10
    return {
        name: None if value is None else round(float(value), 2)
        for name, value in zip(LANDMARK_COLUMNS, values, strict=True)
    }


def record_landmarks(record: dict[str, Any]) -> list[list[float]] | None:
    """A crop record's 5 landmarks as [[x, y], ...] in frame pixels, or None."""
    values = [record.get(name) for name in LANDMARK_COLUMNS]
    if any(value is None or not np.isfinite(value) for value in values):
        return None
    return [[float(values[i]), float(values[i + 1])] for i in range(0, 10, 2)]


def landmarks_in_crops(records: pd.DataFrame, config: CropConfig) -> np.ndarray:
    """Each crop's 5 landmarks in its own pixels (N x 5 x 2 float32, NaN where crops.csv has
    none), from crops.csv's rows (frame pixels) and the crop settings that cut them.

    Aligned crops put them on the template (to within a few pixels); the other shapes map
    them by the box's geometry (a stretched or padded crop clipped at the frame's right or
    bottom edge is off by the part clipped).
    """
    points = records[list(LANDMARK_COLUMNS)].to_numpy(np.float64).reshape(-1, 5, 2)
    size = config.crop_size
    if config.align:
        return np.where(np.isnan(points), np.nan, template_points(size, config.margin))
    x0, y0, x1, y1 = (records[c].to_numpy(np.float64)[:, None] for c in ("x0", "y0", "x1", "y1"))
    width, height = x1 - x0, y1 - y0
    if config.crop_shape == "square":
        side = np.maximum(width, height) * (1 + 2 * config.margin)
        left, top = np.round((x0 + x1 - side) / 2), np.round((y0 + y1 - side) / 2)
        scale_x = scale_y = size / np.maximum(1, np.round(side))
        shift_x = shift_y = 0.0
    else:
        left = np.maximum(0, np.floor(x0 - width * config.margin))
        top = np.maximum(0, np.floor(y0 - height * config.margin))
        right, bottom = np.ceil(x1 + width * config.margin), np.ceil(y1 + height * config.margin)
        scale_x, scale_y = size / (right - left), size / (bottom - top)
        shift_x = shift_y = 0.0
        if config.crop_shape == "pad":
            scale_x = scale_y = size / np.maximum(right - left, bottom - top)
            shift_x = (size - np.floor((right - left) * scale_x)) // 2
            shift_y = (size - np.floor((bottom - top) * scale_y)) // 2
    xs = (points[..., 0] - left) * scale_x + shift_x
    ys = (points[..., 1] - top) * scale_y + shift_y
    return np.stack([xs, ys], axis=-1).astype(np.float32)
