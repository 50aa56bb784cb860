"""Where in a video the fake is: stretches where a person's frame scores stay above threshold.

A long recording may be manipulated only in part, and a mean over all its frames hides a
short fake. Each person's (face track's) calibrated frame probabilities are smoothed over a
few samples, and every run of samples whose smoothed score reaches the threshold, at least a
few samples long, becomes a segment with its start, end and mean score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

# A running median over this many samples: one stray high (or low) sample neither makes nor
# breaks a segment, while a step from real to fake keeps its place.
SMOOTHING_SAMPLES = 3
MIN_SEGMENT_SAMPLES = 2
SHOWN_SEGMENTS = 3  # a verdict names at most this many segments


@dataclass(frozen=True)
class Segment:
    """A stretch of the video where one person looks fake.

    `start` and `end` (seconds) and `start_frame`, `end_frame` lie halfway between the first
    (last) sample inside and the sample before (after) it, so each is within half a sampling
    interval of a boundary the samples see; `mean_probability` is over the raw scores of the
    `n_frames` samples inside.
    """

    face_index: int
    start: float
    end: float
    start_frame: int
    end_frame: int
    mean_probability: float
    n_frames: int


def find_segments(
    face_indices: Sequence[int],
    frame_indices: Sequence[int],
    times: Sequence[float],
    probabilities: Sequence[float],
    threshold: float,
    *,
    smoothing: int = SMOOTHING_SAMPLES,
    min_samples: int = MIN_SEGMENT_SAMPLES,
) -> list[Segment]:
    """The segments of every person in one video's scored samples, in order of start time.

    Args:
        face_indices, frame_indices, times, probabilities: one entry per scored face crop.
        threshold: a smoothed score at or above it counts as fake.
        smoothing: samples in the running median (1: none).
        min_samples: shorter runs are not segments.
    """
    faces = np.asarray(face_indices, np.int64)
    segments: list[Segment] = []
    for face in np.unique(faces):
        mine = np.flatnonzero(faces == face)
        mine = mine[np.argsort(np.asarray(times)[mine], kind="stable")]
        segments += _person_segments(
            int(face),
            np.asarray(frame_indices, np.int64)[mine],
            np.asarray(times, float)[mine],
            np.asarray(probabilities, float)[mine],
            threshold,
            smoothing,
            min_samples,
        )
    return sorted(segments, key=lambda segment: (segment.start, segment.face_index))


def _person_segments(
    face: int,
    frames: np.ndarray,
    times: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    smoothing: int,
    min_samples: int,
) -> list[Segment]:
    """One person's runs of smoothed scores at or above the threshold, samples in time order."""
    smoothed = median_filter(probabilities, size=max(1, smoothing), mode="nearest")
    above = np.concatenate([[False], smoothed >= threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    segments = []
    for first, stop in zip(edges[::2], edges[1::2], strict=True):
        last = stop - 1
        if stop - first < min_samples:
            continue
        before, after = max(first - 1, 0), min(last + 1, len(times) - 1)
        segments.append(
            Segment(
                face_index=face,
                start=float((times[before] + times[first]) / 2),
                end=float((times[last] + times[after]) / 2),
                start_frame=int((frames[before] + frames[first]) // 2),
                end_frame=int(-(-(frames[last] + frames[after]) // 2)),
                mean_probability=float(probabilities[first:stop].mean()),
                n_frames=int(stop - first),
            )
        )
    return segments


def clock(seconds: float) -> str:
    """A time as mm:ss, or h:mm:ss from an hour on."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def describe(segments: Sequence[Segment], shown: int = SHOWN_SEGMENTS) -> str:
    """Segments for a person to read: "02:10-02:45, face 0; 05:00-05:12, face 1 (and 2 more)"."""
    parts = [f"{clock(s.start)}-{clock(s.end)}, face {s.face_index}" for s in segments[:shown]]
    more = len(segments) - shown
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
