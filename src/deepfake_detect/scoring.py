"""The one rule that scores a video from its crops, for validation, checkpoint choice, threshold
and calibration fitting, `evaluate` and `predict` alike.

A video's crops are grouped into persons (face tracks, stage 1's `face_index`); each person's
crop probabilities become the person's score with the aggregation rule (metrics.AGGREGATIONS),
and the video takes the highest score of the persons that count (tracks at least
MIN_TRACK_SHARE as long as the longest). A frame rule (metrics.FRAME_RULES) instead reads the
faces of each frame together. The model artifact records the rule (`aggregation`), so a
threshold and a temperature fitted under it are applied under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from deepfake_detect.metrics import AGGREGATIONS, FRAME_RULES

# A face track shorter than this share of the main person's is reported but not used for the
# verdict: one-frame tracks are mostly false detections.
MIN_TRACK_SHARE = 0.25


@dataclass
class PersonScore:
    """One person (face track): the aggregated probability over its frames."""

    face_index: int
    probability: float
    n_frames: int
    counted: bool


@dataclass
class VideoScore:
    """A video's persons and its probability under the rule; `longest` is the main person's
    number of crops."""

    persons: list[PersonScore]
    probability: float
    longest: int


def known_rules() -> list[str]:
    return [*AGGREGATIONS, *FRAME_RULES]


def check_rule(rule: str) -> str:
    if rule not in AGGREGATIONS and rule not in FRAME_RULES:
        raise ValueError(f"unknown aggregation {rule!r}; known: {', '.join(known_rules())}")
    return rule


def score_video(
    probabilities: ArrayLike,
    face_indices: ArrayLike | None = None,
    frame_indices: ArrayLike | None = None,
    rule: str = "mean",
) -> VideoScore:
    """Score one video from its crops' fake probabilities (finite, at least one).

    Args:
        probabilities: each crop's P(fake), already calibrated.
        face_indices: each crop's person (face track); None: one person.
        frame_indices: each crop's frame, for frame rules; None: each crop its own frame.
        rule: a name in metrics.AGGREGATIONS (per person, then the highest counted person)
            or metrics.FRAME_RULES (over the counted persons' crops, frame by frame; persons
            then get the mean).
    """
    check_rule(rule)
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if p.size == 0:
        raise ValueError("a video needs at least one scored crop")
    faces = np.zeros(p.size, np.int64) if face_indices is None else np.asarray(face_indices)
    per_person = AGGREGATIONS.get(rule, AGGREGATIONS["mean"])
    tracks = {int(face): p[faces == face] for face in np.unique(faces)}
    longest = max(len(scores) for scores in tracks.values())
    persons = [
        PersonScore(
            face, float(per_person(scores)), len(scores), len(scores) >= MIN_TRACK_SHARE * longest
        )
        for face, scores in sorted(tracks.items())
    ]
    if rule in FRAME_RULES:
        counted = np.isin(faces, [person.face_index for person in persons if person.counted])
        frames = np.arange(p.size) if frame_indices is None else np.asarray(frame_indices)
        probability = FRAME_RULES[rule](frames[counted], p[counted])
    else:
        probability = max(person.probability for person in persons if person.counted)
    return VideoScore(persons, float(probability), longest)


def score_videos(
    video_ids: Sequence[object],
    labels: ArrayLike,
    probabilities: ArrayLike,
    face_indices: ArrayLike | None = None,
    frame_indices: ArrayLike | None = None,
    rule: str = "mean",
) -> pd.DataFrame:
    """One row per video (in order of first appearance) under `score_video`'s rule.

    Returns columns video_id, label, probability, n_frames.
    """
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    ids = pd.Series(list(video_ids))
    if not len(ids) == y.size == p.size:
        raise ValueError(f"{len(ids)} video ids, {y.size} labels, {p.size} probabilities")
    faces = None if face_indices is None else np.asarray(face_indices)
    frames = None if frame_indices is None else np.asarray(frame_indices)
    rows = []
    for video_id, where in ids.groupby(ids, sort=False).indices.items():
        if np.unique(y[where]).size > 1:
            raise ValueError(f"crops of video {video_id} carry both labels")
        score = score_video(
            p[where],
            None if faces is None else faces[where],
            None if frames is None else frames[where],
            rule,
        )
        rows.append((video_id, int(y[where][0]), score.probability, len(where)))
    return pd.DataFrame(rows, columns=["video_id", "label", "probability", "n_frames"])


@dataclass(frozen=True)
class CropTracks:
    """Each video's face index and frame index per crop (in crop order), from crops.csv."""

    faces: dict[str, np.ndarray]
    frames: dict[str, np.ndarray]

    def of(self, video_id: str, n_crops: int) -> tuple[np.ndarray, np.ndarray]:
        """A video's (face, frame) per crop; without matching rows each crop is its own frame
        of one person (crops.csv that does not match the npy cannot say who is who)."""
        faces, frames = self.faces.get(video_id), self.frames.get(video_id)
        if faces is None or len(faces) != n_crops:
            return np.zeros(n_crops, np.int64), np.arange(n_crops)
        return faces, frames


def read_tracks(crops_csv: Path) -> CropTracks:
    """crops.csv's face and frame index of every crop (a crop its own frame where the file has
    no frame_index); empty without the file."""
    if not crops_csv.is_file():
        return CropTracks({}, {})
    wanted = {"video_id", "crop_index", "frame_index", "face_index"}
    crops = pd.read_csv(crops_csv, usecols=lambda c: c in wanted, dtype={"video_id": str})
    if "frame_index" not in crops:
        crops["frame_index"] = crops.crop_index
    crops = crops.sort_values(["video_id", "crop_index"])
    by_video = crops.groupby("video_id")
    return CropTracks(
        {v: g.face_index.to_numpy(np.int64) for v, g in by_video},
        {v: g.frame_index.to_numpy(np.int64) for v, g in by_video},
    )


@dataclass(frozen=True)
class VideoCrops:
    """A labelled set's crops grouped by video, to be scored under one rule many times (each
    epoch, each temperature tried).

    Args:
        video_ids: each crop's video.
        labels: each crop's label (one per video).
        face_indices, frame_indices: each crop's person and frame (scoring.score_video).
        rule: the video rule.
    """

    video_ids: list[object]
    labels: np.ndarray
    groups: list[np.ndarray]
    faces: np.ndarray
    frames: np.ndarray
    rule: str

    @classmethod
    def of(
        cls,
        video_ids: Sequence[object],
        labels: ArrayLike,
        face_indices: ArrayLike,
        frame_indices: ArrayLike,
        rule: str = "mean",
    ) -> VideoCrops:
        check_rule(rule)
        ids = pd.Series(list(video_ids))
        y = np.asarray(labels).reshape(-1)
        indices = ids.groupby(ids, sort=False).indices
        groups = [np.asarray(where) for where in indices.values()]
        return cls(
            list(indices),
            np.array([int(y[g[0]]) for g in groups]),
            groups,
            np.asarray(face_indices),
            np.asarray(frame_indices),
            rule,
        )

    def scores(self, probabilities: ArrayLike) -> np.ndarray:
        """Each video's probability (in `video_ids` order) from its crops' probabilities."""
        p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        return np.array(
            [
                score_video(p[g], self.faces[g], self.frames[g], self.rule).probability
                for g in self.groups
            ]
        )
