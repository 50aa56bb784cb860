"""Stage 3: a trained model and videos in; a calibrated verdict per video and per person out.

`Predictor` loads the model artifact once, crops faces with the artifact's own stage-1
parameters (crops.py), scores them in batches as the frames decode, and aggregates frame
scores per person (face track) and then per video; the stretches where a person looks fake
become segments (segments.py). A video that cannot be scored gets a status and no
probability, never a silent 0.5.
"""

from __future__ import annotations

import glob
import json
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.markup import escape
from rich.table import Table
from scipy.special import expit

from deepfake_detect.artifact import ModelArtifact, load_artifact, read_artifact, short_digest
from deepfake_detect.backends import (
    BACKENDS,
    ONNX_FILE,
    Runner,
    onnx_runner,
    resolve_device,
    torch_runner,
)
from deepfake_detect.crops import (
    LANDMARK_COLUMNS,
    check_detector,
    extract_faces,
    record_landmarks,
)
from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.models import to_model_input
from deepfake_detect.scoring import PersonScore, known_rules, score_video
from deepfake_detect.segments import Segment, describe, find_segments
from deepfake_detect.status import Status, Verdict
from deepfake_detect.video import MAX_PIXELS, VideoError, is_video_file


class PredictError(DeepfakeDetectError, ValueError):
    """Bad usage of predict (unknown option, no videos found); one clear line."""


@dataclass
class FrameScore:
    """One scored face crop: where it is in the video and its calibrated fake probability."""

    crop_index: int
    frame_index: int
    timestamp: float
    face_index: int
    probability: float
    x0: float
    y0: float
    x1: float
    y1: float
    score: float | None = None  # the face detector's confidence
    landmarks: list[list[float]] | None = None  # 5 [x, y] in frame pixels (crops.csv's order)


@dataclass
class Judgement:
    """A video's persons and, when it could be scored, its probability and verdict."""

    persons: list[PersonScore]
    probability: float | None
    verdict: str | None
    status: str
    error: str


@dataclass
class VideoPrediction:
    """The verdict on one video; `probability` and `verdict` are None unless status is ok."""

    path: str
    status: str
    error: str = ""
    probability: float | None = None
    verdict: str | None = None
    threshold: float = 0.5
    aggregation: str = "mean"
    uncertain_band: tuple[float, float] | None = None
    persons: list[PersonScore] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    frames: list[FrameScore] = field(default_factory=list)
    sample_times: list[float] = field(default_factory=list)
    video: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    crops: np.ndarray | None = field(default=None, repr=False)

    @property
    def scored(self) -> bool:
        return self.status == Status.OK

    @property
    def summary(self) -> str:
        """The verdict in words, naming the segments that look fake:
        "FAKE: 02:10-02:45, face 0", or "REAL (fake-looking: ...)" when the video's score
        stays under the threshold although a part of it does not."""
        if not self.scored or not self.verdict:
            return f"could not score ({self.status})"
        if self.verdict == Verdict.UNCERTAIN:
            return f"UNCERTAIN: {self.uncertain_reason}"
        if not self.segments:
            return self.verdict
        if self.verdict == Verdict.FAKE:
            return f"FAKE: {describe(self.segments)}"
        return f"{self.verdict} (fake-looking: {describe(self.segments)})"

    @property
    def uncertain_reason(self) -> str:
        """Why an UNCERTAIN video is not called, in one sentence ("" otherwise)."""
        if self.verdict != Verdict.UNCERTAIN or self.uncertain_band is None:
            return ""
        low, high = self.uncertain_band
        seen = f"; fake-looking: {describe(self.segments)}" if self.segments else ""
        return (
            f"P(fake) {self.probability:.3f} is inside {low:.3f}-{high:.3f}, where the "
            f"model could not call validation videos reliably{seen}"
        )

    def to_dict(self, per_frame: bool = False) -> dict[str, Any]:
        """JSON-ready summary (per-frame scores and sample times only when asked: they can be
        long)."""
        hidden = {"crops", "frames", "sample_times"}
        summary = {k: v for k, v in asdict(self).items() if k not in hidden}
        summary["summary"] = self.summary
        if per_frame:
            summary["frames"] = [asdict(f) for f in self.frames]
            summary["sample_times"] = self.sample_times
        return summary


class Predictor:
    """A loaded model ready to judge videos.

    Args:
        model: the artifact (a training run folder, its model/ folder or model.json).
        device: auto, cpu or cuda.
        backend: torch, or onnx (onnxruntime on CPU; needs `deepfake-detect export --onnx`).
        frames: evenly spaced frames sampled per video, at least.
        every: seconds between samples in a long video (more samples than `frames` give);
            None samples `frames` only.
        max_frames: with `every`, at most this many samples, spread over the whole video.
        aggregation: the video rule (scoring.py): how frame scores become a person's score
            (metrics.AGGREGATIONS), or a rule over each frame's faces (metrics.FRAME_RULES);
            default the artifact's, the rule its threshold and temperature were fitted under.
        threshold: decision threshold on the calibrated probability; default the artifact's.
        uncertain: call UNCERTAIN the videos inside the artifact's uncertain band (when it
            holds the threshold in use); False forces REAL or FAKE.
        batch_size: crops per forward pass.
        min_frames: a video whose main person is seen in fewer frames is too_few_frames.
        max_pixels: videos with larger frames are refused (decode_error).
    """

    # no band unless the artifact has one (set per instance in __init__)
    uncertain_band: tuple[float, float] | None = None

    def __init__(
        self,
        model: Path,
        *,
        device: str = "auto",
        backend: str = "torch",
        frames: int = 32,
        every: float | None = 1.0,
        max_frames: int = 600,
        aggregation: str | None = None,
        threshold: float | None = None,
        uncertain: bool = True,
        batch_size: int = 64,
        min_frames: int = 1,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        if backend not in BACKENDS:
            raise PredictError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        if threshold is not None and not 0 <= threshold <= 1:
            raise PredictError(f"threshold must be between 0 and 1, got {threshold}")
        if every is not None and every <= 0:
            raise PredictError(f"--every must be positive, got {every}")
        if every is not None and frames > max_frames:
            raise PredictError(f"--frames {frames} must not exceed --max-frames {max_frames}")
        self.model_path = Path(model)
        self.network: torch.nn.Module | None = None
        self.device = resolve_device(device) if backend == "torch" else torch.device("cpu")
        self.artifact, self.run_model, self.model_digest = self._load(backend)
        self.crop_config = replace(
            self.artifact.preprocessing,
            frames_per_video=frames,
            frame_sampling_rate=None,
            max_frames=max_frames if every else None,
            every_seconds=every,
        )
        check_detector(self.crop_config)
        self.aggregation = aggregation or self.artifact.aggregation
        if self.aggregation not in known_rules():
            known = ", ".join(known_rules())
            raise PredictError(f"unknown aggregation {self.aggregation!r}; known: {known}")
        self.threshold = self.artifact.threshold if threshold is None else threshold
        band = self.artifact.uncertain_band if uncertain else None
        holds = band is not None and band[0] <= self.threshold <= band[1]
        self.uncertain_band = band if holds else None
        self.batch_size, self.min_frames, self.max_pixels = batch_size, min_frames, max_pixels

    def _load(self, backend: str) -> tuple[ModelArtifact, Runner, str]:
        """The artifact, a runner for it and the short hash of the file it scores with (a
        report names the model by it, never by a path); the torch network is kept for
        Grad-CAM."""
        artifact, weights = read_artifact(self.model_path)
        if backend == "onnx":
            return artifact, onnx_runner(weights.parent), short_digest(weights.parent / ONNX_FILE)
        self.network, artifact = load_artifact(self.model_path)
        return artifact, torch_runner(self.network, self.device), short_digest(weights)

    def score_crops(self, crops: np.ndarray) -> np.ndarray:
        """Logits of uint8 crops (N, S, S, 3), resized to the model's input, in batches."""
        logits = [
            self.run_model(
                to_model_input(crops[start : start + self.batch_size], self.artifact.model)
            )
            for start in range(0, len(crops), self.batch_size)
        ]
        return np.concatenate(logits) if logits else np.zeros(0, np.float32)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated fake probabilities (the artifact's temperature); NaN where the model's
        logit is not finite (NaN or inf), which `judge` turns into a model_error."""
        return np.where(np.isfinite(logits), expit(logits / self.artifact.temperature), np.nan)

    def predict(
        self,
        path: Path,
        keep_crops: bool = False,
        on_progress: Callable[[float, float], None] | None = None,
    ) -> VideoPrediction:
        """Judge one video. Never raises for a bad video: its status and error say why.

        Crops are scored batch by batch as the frames decode, and kept only with
        `keep_crops` (a report shows some); `on_progress` gets each sampled frame's time and
        the video's duration.
        """
        base = {
            "path": str(path),
            "threshold": self.threshold,
            "aggregation": self.aggregation,
            "uncertain_band": self.uncertain_band,
        }
        try:
            faces = extract_faces(
                Path(path),
                self.crop_config,
                max_pixels=self.max_pixels,
                score=lambda crops: self.probabilities(self.score_crops(crops)),
                keep_crops=keep_crops,
                batch_size=self.batch_size,
                on_progress=on_progress,
            )
        except VideoError as error:
            return VideoPrediction(status=error.status, error=str(error), **base)
        except Exception as error:  # a batch of videos goes on past any one of them
            return VideoPrediction(status=Status.ERROR, error=f"{path}: {error}", **base)
        probabilities = faces.scores
        frames = [
            FrameScore(
                **{
                    k: r[k]
                    for k in (
                        "crop_index",
                        "frame_index",
                        "timestamp",
                        "face_index",
                        "x0",
                        "y0",
                        "x1",
                        "y1",
                    )
                },
                probability=float(p),
                landmarks=record_landmarks(r),
                score=r["score"] if np.isfinite(r["score"]) else None,
            )
            for r, p in zip(faces.records, probabilities, strict=True)
        ]
        judgement = self.judge(
            str(path),
            [f.face_index for f in frames],
            probabilities,
            [f.frame_index for f in frames],
        )
        if judgement.status == Status.MODEL_ERROR:
            frames = []  # no score of this model on this video can be trusted, nor shown
        video = faces.info.table_fields() | {"frames_sampled": faces.n_frames_sampled}
        return VideoPrediction(
            status=judgement.status,
            error=judgement.error,
            probability=judgement.probability,
            verdict=judgement.verdict,
            persons=judgement.persons,
            segments=self.segments(frames, judgement.persons) if judgement.verdict else [],
            frames=frames,
            sample_times=faces.sample_times,
            video=video,
            timings=faces.timings,
            crops=faces.crops,
            **base,
        )

    def predict_all(
        self, paths: Sequence[Path], keep_crops: bool = False
    ) -> Iterator[tuple[int, VideoPrediction]]:
        """Judge many videos, yielding `(position in paths, prediction)` as each finishes:
        here in order; a pool of model copies (ray_executor.RayPredictors) has the same
        method and yields in any order."""
        for index, path in enumerate(paths):
            yield index, self.predict(Path(path), keep_crops)

    def probabilities_all(self, npy_paths: Sequence[Path]) -> Iterator[tuple[int, np.ndarray]]:
        """Calibrated probabilities of the crops of stage-1 .npy files, as `predict_all`."""
        for index, path in enumerate(npy_paths):
            crops = np.load(path, mmap_mode="r", allow_pickle=False)
            yield index, self.probabilities(self.score_crops(crops))

    def segments(
        self, frames: Sequence[FrameScore], persons: Sequence[PersonScore]
    ) -> list[Segment]:
        """The fake-looking segments of the persons that count for the verdict."""
        counted = {p.face_index for p in persons if p.counted}
        mine = [f for f in frames if f.face_index in counted]
        return find_segments(
            [f.face_index for f in mine],
            [f.frame_index for f in mine],
            [f.timestamp for f in mine],
            [f.probability for f in mine],
            self.threshold,
        )

    def judge(
        self,
        name: str,
        face_indices: Sequence[int],
        probabilities: Sequence[float],
        frame_indices: Sequence[int] | None = None,
    ) -> Judgement:
        """Score the video with the one rule (scoring.score_video: per person, then the
        highest of the tracks that count, or a frame rule); it needs `min_frames` of its main
        person. A score that is not finite makes the video a model_error: no probability, no
        verdict.
        """
        if not np.isfinite(probabilities).all():
            bad = int(np.count_nonzero(~np.isfinite(probabilities)))
            message = (
                f"{name}: the model gave {bad} of {len(probabilities)} scores that are "
                "not a number (NaN or inf); its weights or input are broken"
            )
            return Judgement([], None, None, Status.MODEL_ERROR, message)
        score = score_video(probabilities, face_indices, frame_indices, self.aggregation)
        persons, probability = score.persons, score.probability
        if score.longest < self.min_frames:
            message = (
                f"{name}: a face in only {score.longest} frames (at least {self.min_frames} needed)"
            )
            return Judgement(persons, None, None, "too_few_frames", message)
        return Judgement(persons, probability, self.verdict(probability), Status.OK, "")

    def verdict(self, probability: float) -> Verdict:
        """FAKE at or above the threshold, else REAL; UNCERTAIN strictly inside the band."""
        band = self.uncertain_band
        if band is not None and band[0] < probability < band[1]:
            return Verdict.UNCERTAIN
        return Verdict.FAKE if probability >= self.threshold else Verdict.REAL


def predict_video(path: Path | str, model: Path | str, **options: Any) -> VideoPrediction:
    """Judge one video with a model artifact (options as for `Predictor`)."""
    return Predictor(Path(model), **options).predict(Path(path))


def collect_videos(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (searched recursively for videos) and glob patterns -> video paths.

    A folder with no video or a pattern matching nothing is an error; a file is taken as
    given whatever its extension (a bad one gets a per-video status, not an error here).
    """
    found: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            videos = sorted(p for p in path.rglob("*") if p.is_file() and is_video_file(p))
            if not videos:
                raise PredictError(f"{path}: no videos found in this folder")
            found += videos
        elif path.exists() or not glob.has_magic(text):
            found.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            if not matches:
                raise PredictError(f"{text}: no file matches this pattern")
            found += matches
    return list(dict.fromkeys(found))


VIDEO_COLUMNS = [
    "path",
    "status",
    "verdict",
    "probability",
    "threshold",
    "n_persons",
    "n_frames_scored",
    "aggregation",
    "segments",
    "error",
    "uncertain_band",
]
SEGMENT_COLUMNS = ["path", *Segment.__dataclass_fields__]


def videos_table(predictions: Sequence[VideoPrediction]) -> pd.DataFrame:
    """One row per video (the --csv schema); `segments` lists the fake-looking ones."""
    rows = [
        {
            "path": p.path,
            "status": p.status,
            "verdict": p.verdict,
            "probability": p.probability,
            "threshold": p.threshold,
            "n_persons": len(p.persons),
            "n_frames_scored": len(p.frames),
            "aggregation": p.aggregation,
            "segments": describe(p.segments, len(p.segments)),
            "error": p.error,
            "uncertain_band": _band_text(p.uncertain_band),
        }
        for p in predictions
    ]
    return pd.DataFrame(rows, columns=VIDEO_COLUMNS)


def _band_text(band: tuple[float, float] | None) -> str:
    return "" if band is None else f"{band[0]:.4f}-{band[1]:.4f}"


def segments_table(predictions: Sequence[VideoPrediction]) -> pd.DataFrame:
    """One row per fake-looking segment (the *_segments.csv schema), times in seconds."""
    rows = [{"path": p.path} | asdict(s) for p in predictions for s in p.segments]
    return pd.DataFrame(rows, columns=SEGMENT_COLUMNS)


def frames_table(predictions: Sequence[VideoPrediction]) -> pd.DataFrame:
    """One row per scored face crop (the --per-frame CSV schema)."""
    columns = ["path", *FrameScore.__dataclass_fields__]
    columns[columns.index("landmarks") : columns.index("landmarks") + 1] = LANDMARK_COLUMNS
    rows = []
    for prediction in predictions:
        for frame in prediction.frames:
            points = np.ravel(frame.landmarks) if frame.landmarks else [None] * 10
            landmarks = dict(zip(LANDMARK_COLUMNS, points, strict=True))
            rows.append({"path": prediction.path} | asdict(frame) | landmarks)
    return pd.DataFrame(rows, columns=columns)


class PredictionWriter:
    """Writes verdicts to JSON and CSV as each video is judged, so a long batch shows its
    results while it runs (with either executor); the files are complete once closed.

    JSON: {"videos": [...]}; CSV: one row per video, `<name>_segments.csv` beside it, and
    with per_frame `<name>_frames.csv`.
    """

    def __init__(
        self, json_path: Path | None = None, csv_path: Path | None = None, per_frame: bool = False
    ) -> None:
        self.per_frame, self.count = per_frame, 0
        self._json = open(json_path, "w", encoding="utf-8") if json_path else None  # noqa: SIM115
        self._tables: list[tuple[Any, Callable[[Sequence[VideoPrediction]], pd.DataFrame]]] = []
        if csv_path:
            csv_path = Path(csv_path)
            tables = {
                csv_path: videos_table,
                csv_path.with_name(f"{csv_path.stem}_segments.csv"): segments_table,
            }
            if per_frame:
                tables[csv_path.with_name(f"{csv_path.stem}_frames.csv")] = frames_table
            for path, table in tables.items():
                handle = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115
                table([]).to_csv(handle, index=False)
                self._tables.append((handle, table))
        if self._json:
            self._json.write('{\n  "videos": [')

    def add(self, prediction: VideoPrediction) -> None:
        if self._json:
            text = json.dumps(prediction.to_dict(self.per_frame), indent=2, allow_nan=False)
            self._json.write(("," if self.count else "") + "\n" + textwrap.indent(text, "    "))
            self._json.flush()
        for handle, table in self._tables:
            table([prediction]).to_csv(handle, index=False, header=False)
            handle.flush()
        self.count += 1

    def close(self) -> None:
        if self._json:
            self._json.write(("\n  ]" if self.count else "]") + "\n}\n")
            self._json.close()
        for handle, _ in self._tables:
            handle.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_json(predictions: Sequence[VideoPrediction], path: Path, per_frame: bool) -> Path:
    """All verdicts in one JSON document: {"videos": [...]}."""
    with PredictionWriter(json_path=path, per_frame=per_frame) as writer:
        for prediction in predictions:
            writer.add(prediction)
    return path


def write_csv(predictions: Sequence[VideoPrediction], path: Path, per_frame: bool) -> Path:
    """Per-video CSV, `<name>_segments.csv` beside it, and with per_frame `<name>_frames.csv`."""
    with PredictionWriter(csv_path=path, per_frame=per_frame) as writer:
        for prediction in predictions:
            writer.add(prediction)
    return path


def verdict_table(predictions: Sequence[VideoPrediction]) -> Table:
    """The terminal summary: one line per video, coloured by verdict."""
    table = Table(title="verdicts")
    for column in ("video", "verdict", "P(fake)", "persons", "frames", "status"):
        table.add_column(column, justify="left" if column in {"video", "status"} else "right")
    # UNCERTAIN in a neutral colour: neither verdict's, nor could-not-score's yellow
    styles = {Verdict.FAKE: "bold red", Verdict.REAL: "bold green", Verdict.UNCERTAIN: "bold blue"}
    for p in predictions:
        verdict = p.summary if p.scored else "could not score"
        table.add_row(
            Path(p.path).name,
            f"[{styles.get(p.verdict or '', 'yellow')}]{escape(verdict)}[/]",
            "-" if p.probability is None else f"{p.probability:.3f}",
            str(len(p.persons)),
            str(len(p.frames)),
            p.status if p.scored else f"{p.status}: {p.error}",
        )
    return table
