"""The one list of per-video statuses that stage 1, predict, evaluate and serve report.

A video that cannot be processed or scored gets one of these instead of crops or a
probability. The README's table of statuses is checked against `STATUS_MEANINGS`.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Why a video has (or has no) result; compares equal to its plain string."""

    OK = "ok"
    NO_FACE = "no_face"
    TOO_FEW_FRAMES = "too_few_frames"
    DECODE_ERROR = "decode_error"
    NO_VIDEO_STREAM = "no_video_stream"
    NO_FRAMES = "no_frames"
    EMPTY_FILE = "empty_file"
    MISSING = "missing"
    READ_ERROR = "read_error"
    WORKER_CRASH = "worker_crash"
    NPY_ERROR = "npy_error"
    MODEL_ERROR = "model_error"
    OUTSIDE_ROOT = "outside_root"
    ERROR = "error"


STATUS_MEANINGS: dict[Status, str] = {
    Status.OK: "processed (stage 1) or scored (predict, evaluate)",
    Status.NO_FACE: "no face found in any sampled frame",
    Status.TOO_FEW_FRAMES: "predict: the main person is seen in fewer than `--min-frames` frames",
    Status.DECODE_ERROR: (
        "the file is not a readable video, decoding failed, or its frames exceed `--max-pixels`"
    ),
    Status.NO_VIDEO_STREAM: "the file holds no video stream (audio only, say)",
    Status.NO_FRAMES: "the video stream holds no decodable frame",
    Status.EMPTY_FILE: "the file is empty (0 bytes)",
    Status.MISSING: "listed by the dataset but not on disk (retried on resume)",
    Status.READ_ERROR: "unreadable (permissions, not a regular file); retried on resume",
    Status.WORKER_CRASH: "decoding it killed the worker, even alone; retried on resume",
    Status.NPY_ERROR: "evaluate: a stage-1 .npy file is missing or unreadable",
    Status.MODEL_ERROR: "predict, evaluate: the model gave a score that is not a number (NaN, inf)",
    Status.OUTSIDE_ROOT: "a CSV dataset row whose path leads outside the CSV's folder "
    "(refused unless `--allow-outside-root`)",
    Status.ERROR: "anything else; `error` says what in one line naming the file",
}


class Verdict(StrEnum):
    """What predict, evaluate, the report and serve call a scored video."""

    REAL = "REAL"
    FAKE = "FAKE"
    UNCERTAIN = "UNCERTAIN"


VERDICT_MEANINGS: dict[Verdict, str] = {
    Verdict.REAL: "the probability is below the threshold (and below the uncertain band)",
    Verdict.FAKE: "the probability is at or above the threshold (and above the uncertain band)",
    Verdict.UNCERTAIN: "the probability lies inside the band around the threshold where, on "
    "validation videos, the model could not call videos reliably (`--no-uncertain` to "
    "force REAL or FAKE)",
}
