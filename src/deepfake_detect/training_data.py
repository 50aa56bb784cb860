"""Stage 2's data: stage-1 tables in, verified, augmented, balanced batches out.

Samples are keys `(video, crop, blend, seed)` drawn by `EpochSampler` each epoch; the
dataset turns a key into an image. Keeping every random choice in the key (which crop,
whether to self-blend it, the augmentation seed) makes an epoch a pure function of the
seed and the epoch number, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from deepfake_detect.blend import SelfBlendSource
from deepfake_detect.crops import LANDMARK_COLUMNS, CropConfig, landmarks_in_crops
from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.models import ModelConfig, to_model_input
from deepfake_detect.status import Status

AUGMENTATIONS = ("none", "light", "strong")


class DataError(DeepfakeDetectError, ValueError):
    """Training data that cannot be used; lists every problem found, with file names."""


class SampleKey(NamedTuple):
    """Everything random about one training sample, fixed by the sampler."""

    video: int
    crop: int
    blend: bool
    seed: int


@dataclass(frozen=True)
class VideoTable:
    """The usable videos of one split: stage-1 rows with status ok, and where their crops are."""

    rows: pd.DataFrame
    root: Path

    @property
    def labels(self) -> np.ndarray:
        return self.rows.label.to_numpy(dtype=np.int64)

    @property
    def crop_counts(self) -> np.ndarray:
        return self.rows.n_crops.to_numpy(dtype=np.int64)

    def npy_path(self, video: int) -> Path:
        return self.root / self.rows.npy_path.iloc[video]


def read_metadata(source: Path) -> tuple[pd.DataFrame, Path]:
    """A stage-1 folder or its metadata.csv -> (table, the folder npy paths are relative to)."""
    path = source / "metadata.csv" if source.is_dir() else source
    if not path.is_file():
        raise DataError(f"{source}: no metadata.csv (is it a `deepfake-detect preprocess` output?)")
    try:
        table = pd.read_csv(path, keep_default_na=False, dtype={"video_id": str, "group": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV ({' '.join(str(error).split())})") from None
    needed = {"video_id", "label", "group", "split", "npy_path", "n_crops", "status"}
    if missing := needed - set(table.columns):
        raise DataError(f"{path}: missing columns {', '.join(sorted(missing))}")
    return table, path.parent


def select_split(table: pd.DataFrame, root: Path, split: str | None) -> VideoTable:
    """The rows with status ok (and of `split`, when given)."""
    rows = table[table.status == Status.OK]
    if split is not None:
        rows = rows[rows.split == split]
    return VideoTable(rows.reset_index(drop=True), root)


def _read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an npy header, reading no data (so nothing can be unpickled)."""
    with open(path, "rb") as handle:
        major, _ = np.lib.format.read_magic(handle)
        read_header = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(handle)
    return shape, dtype


def npy_problem(path: Path, n_crops: int) -> tuple[str | None, tuple[int, ...] | None]:
    """Check a stage-1 npy file's header (never its data); return (problem, crop shape)."""
    if not path.is_file():
        return f"{path}: npy file missing", None
    try:
        shape, dtype = _read_npy_header(path)
    except (ValueError, OSError, EOFError) as error:
        return f"{path}: not a readable npy, refused (never unpickled): {error}", None
    if dtype.hasobject:
        return f"{path}: holds pickled objects; refused (never unpickled)", None
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or shape[1] != shape[2]:
        return f"{path}: expected uint8 crops (N, S, S, 3), found {dtype} {shape}", None
    if shape[0] != n_crops:
        return f"{path}: holds {shape[0]} crops but metadata says n_crops={n_crops}", None
    return None, tuple(shape[1:])


def verify(
    train: VideoTable, val: VideoTable, *, allow_leakage: bool = False, real_only_ok: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """Check the data before training; return a summary table and every problem found.

    Problems: empty splits, a missing class, labels outside {0, 1}, missing, unreadable or
    pickled npy files, crop shapes that differ, and groups present in both train and val.
    """
    problems: list[str] = []
    shapes: dict[tuple[int, ...], Path] = {}
    for name, table in (("train", train), ("val", val)):
        if table.rows.empty:
            problems.append(f"{name}: no usable videos (status ok) in {table.root}")
            continue
        bad = sorted(set(table.rows.label) - {0, 1})
        if bad:
            problems.append(f"{name}: labels outside {{0, 1}}: {bad} in {table.root}/metadata.csv")
        classes = set(table.rows.label) & {0, 1}
        single_ok = name == "train" and real_only_ok and classes == {0}
        if len(classes) < 2 and not single_ok:
            absent = "fake" if 0 in classes else "real"
            problems.append(f"{name}: no {absent} videos in {table.root} (both classes needed)")
        for video in range(len(table.rows)):
            path = table.npy_path(video)
            problem, shape = npy_problem(path, int(table.rows.n_crops.iloc[video]))
            if problem:
                problems.append(problem)
            elif shape is not None:
                shapes.setdefault(shape, path)
    if len(shapes) > 1:
        examples = "; ".join(f"{shape} e.g. {path}" for shape, path in shapes.items())
        problems.append(f"crops of different shapes: {examples}")
    shared = sorted(set(train.rows.group) & set(val.rows.group))
    if shared and not allow_leakage:
        problems.append(
            f"{len(shared)} groups are in both train and val (leakage), e.g. {shared[:5]}; "
            "split by group or pass --allow-leakage"
        )
    return _summary(train, val), problems


def _summary(train: VideoTable, val: VideoTable) -> pd.DataFrame:
    rows = []
    for name, table in (("train", train), ("val", val)):
        for label, group in table.rows.groupby("label"):
            kind = {0: "real", 1: "fake"}.get(int(label), str(label))
            rows.append(
                {
                    "split": name,
                    "label": kind,
                    "videos": len(group),
                    "crops": int(group.n_crops.sum()),
                }
            )
    return pd.DataFrame(rows, columns=["split", "label", "videos", "crops"])


def build_augmentation(preset: str) -> A.Compose | None:
    """Training augmentations: none, light (flip, mild colour and JPEG), or strong (the DFDC
    winners' mix: JPEG 30-100, downscale, blurs, noise, colour, flip, affine, cutout)."""
    if preset not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {preset!r}; known: {', '.join(AUGMENTATIONS)}")
    if preset == "none":
        return None
    light = [
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.0, p=0.3),
        A.ImageCompression(quality_range=(70, 100), p=0.3),
    ]
    if preset == "light":
        return A.Compose(light)
    strong = [
        A.ImageCompression(quality_range=(30, 100), p=0.5),
        A.Downscale(scale_range=(0.5, 0.9), p=0.2),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 7)), A.MotionBlur(blur_limit=(3, 7))], p=0.2),
        A.GaussNoise(std_range=(0.02, 0.08), p=0.2),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10), p=0.5),
        A.CoarseDropout(
            num_holes_range=(1, 3),
            hole_height_range=(0.1, 0.25),
            hole_width_range=(0.1, 0.25),
            p=0.3,
        ),
    ]
    return A.Compose(strong)


@lru_cache(maxsize=256)
def _mapped_crops(path: Path) -> np.ndarray:
    """Memory-map a video's crops; a bounded cache keeps open files few on huge datasets."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


@lru_cache(maxsize=8)
def self_blend_guides(root: Path) -> tuple[float, dict[str, np.ndarray]]:
    """What self-blends of a stage-1 folder's crops go by: the crops' margin, and each video's
    crops' 5 landmarks in crop pixels (crop index x 5 x 2, NaN where none). Landmarks are
    optional: a folder without them in crops.csv (older, or a detector that gives none)
    gets ellipse masks."""
    try:
        config = CropConfig.read(root)
        path = root / "crops.csv"
        if not path.is_file() or not set(LANDMARK_COLUMNS) <= set(pd.read_csv(path, nrows=0)):
            return config.margin, {}
        columns = ["video_id", "crop_index", "x0", "y0", "x1", "y1", *LANDMARK_COLUMNS]
        records = pd.read_csv(path, usecols=columns, dtype={"video_id": str})
        points = landmarks_in_crops(records, config)
    except (OSError, ValueError, pd.errors.ParserError):
        return CropConfig().margin, {}
    crop_index = records.crop_index.to_numpy(np.int64)
    landmarks = {}
    for video_id, rows in records.groupby("video_id").indices.items():
        per_crop = np.full((crop_index[rows].max() + 1, 5, 2), np.nan, np.float32)
        per_crop[crop_index[rows]] = points[rows]
        landmarks[str(video_id)] = per_crop
    return config.margin, landmarks


class CropDataset(Dataset):
    """Face crops read from memory-mapped npy files, turned into normalised CHW tensors.

    Items are SampleKeys; each returns (image, label, video index, crop index). A key with
    `blend` set becomes a self-blended pseudo-fake of a real crop, labelled fake, its mask
    shaped by the crop's landmarks when crops.csv has them.
    """

    def __init__(
        self,
        table: VideoTable,
        model_config: ModelConfig,
        augmentation: A.Compose | None = None,
    ) -> None:
        self.table = table
        self.model_config = model_config
        self.augmentation = augmentation

    def __len__(self) -> int:
        return int(self.table.crop_counts.sum())

    def _crop(self, video: int, crop: int) -> np.ndarray:
        return np.asarray(_mapped_crops(self.table.npy_path(video))[crop])

    def _self_blend(self, image: np.ndarray, key: SampleKey) -> np.ndarray:
        margin, landmarks = self_blend_guides(self.table.root)
        per_crop = landmarks.get(str(self.table.rows.video_id.iloc[key.video]))
        points = None
        if per_crop is not None and key.crop < len(per_crop):
            points = None if np.isnan(per_crop[key.crop]).any() else per_crop[key.crop]
        return SelfBlendSource(seed=key.seed, margin=margin)(image, points)

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        image = self._crop(key.video, key.crop)
        label = int(self.table.labels[key.video])
        if key.blend:
            image, label = self._self_blend(image, key), 1
        if self.augmentation is not None:
            self.augmentation.set_random_seed(key.seed)
            image = self.augmentation(image=image)["image"]
        tensor = torch.from_numpy(to_model_input(image[None], self.model_config)[0])
        return tensor, torch.tensor(label, dtype=torch.float32), key.video, key.crop


class EpochSampler(Sampler[SampleKey]):
    """Each epoch, `crops_per_video` random crops of every video, classes balanced, plus
    self-blended pseudo-fakes from real crops; deterministic in (seed, epoch).

    Under data parallelism (`num_replicas` > 1) every rank makes one; each epoch the videos of
    each class are shuffled alike on all ranks (seeded by the epoch) and dealt out, so the
    ranks draw from disjoint videos, each with the class balance and the same length (the
    quota of each class divided by the ranks, rounded up). A class with fewer videos than
    ranks is shared.

    Args:
        labels, crop_counts: per video.
        crops_per_video: samples drawn from each video per epoch.
        balance: repeat videos of the smaller class until both classes give as many samples.
        self_blend: share of the epoch's samples that are pseudo-fakes made from real crops.
        seed: base of every random choice.
        num_replicas, rank: how many ranks share the epoch, and which one this is.
    """

    def __init__(
        self,
        labels: np.ndarray,
        crop_counts: np.ndarray,
        crops_per_video: int,
        *,
        balance: bool = True,
        self_blend: float = 0.0,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not 0 <= self_blend < 1:
            raise ValueError(f"self_blend must be in [0, 1), got {self_blend}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.labels, self.crop_counts = labels, crop_counts
        self.crops_per_video, self.balance, self.self_blend = crops_per_video, balance, self_blend
        self.seed, self.epoch = seed, 0
        self.num_replicas, self.rank = num_replicas, rank
        self._videos_per_class = {
            label: -(-quota // num_replicas) for label, quota in self._class_quota().items()
        }
        base = sum(self._videos_per_class.values()) * crops_per_video
        self._n_blends = round(base * self_blend / (1 - self_blend)) if (labels == 0).any() else 0
        self._length = base + self._n_blends

    def _class_quota(self) -> dict[int, int]:
        """How many videos each class contributes per epoch."""
        counts = {label: int((self.labels == label).sum()) for label in (0, 1)}
        counts = {label: n for label, n in counts.items() if n}
        if self.balance and len(counts) == 2:
            return dict.fromkeys(counts, max(counts.values()))
        return counts

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self._length

    def _shares(self) -> tuple[dict[int, np.ndarray], np.random.Generator]:
        """This rank's videos of each class this epoch, and the generator of its draws."""
        rng = np.random.default_rng([self.seed, self.epoch])
        members = {label: np.flatnonzero(self.labels == label) for label in (0, 1)}
        if self.num_replicas == 1:
            return members, rng
        for label, videos in members.items():
            dealt = rng.permutation(videos)  # the same on every rank
            mine = dealt[self.rank :: self.num_replicas]
            members[label] = mine if len(mine) else dealt
        return members, np.random.default_rng([self.seed, self.epoch, self.rank])

    def __iter__(self) -> Iterator[SampleKey]:
        members, rng = self._shares()
        videos = []
        for label, quota in self._videos_per_class.items():
            repeats, extra = divmod(quota, len(members[label]))
            chosen = rng.choice(members[label], extra, replace=False)
            videos += [*np.tile(members[label], repeats), *chosen]
        picks = [(v, self._crops(rng, v)) for v in videos]
        keys = [(v, int(c), False) for v, crops in picks for c in crops]
        reals = members[0]
        for v in rng.choice(reals, self._n_blends) if self._n_blends else []:
            keys.append((int(v), int(rng.integers(self.crop_counts[v])), True))
        seeds = rng.integers(0, 2**31 - 1, len(keys))
        for i in rng.permutation(len(keys)):
            video, crop, blend = keys[i]
            yield SampleKey(int(video), crop, blend, int(seeds[i]))

    def _crops(self, rng: np.random.Generator, video: int) -> np.ndarray:
        count = int(self.crop_counts[video])
        return rng.choice(count, self.crops_per_video, replace=count < self.crops_per_video)


def evaluation_keys(table: VideoTable, crops_per_video: int) -> list[SampleKey]:
    """Up to `crops_per_video` evenly spaced crops of every video, in a fixed order."""
    keys = []
    for video, count in enumerate(table.crop_counts):
        picks = np.unique(np.linspace(0, count - 1, min(count, crops_per_video)).round())
        keys += [SampleKey(video, int(c), False, 0) for c in picks]
    return keys


class CropVideo(NamedTuple):
    """One video's crops, as `write_crops_folder` stores them."""

    video_id: str
    label: int
    split: str
    crops: np.ndarray


def write_crops_folder(root: Path, videos: Iterable[CropVideo]) -> Path:
    """A stage-1 output folder written directly, without videos (faces/<id>.npy, then
    metadata.csv last so that a folder with the table is whole): what benchmarks and tests of
    stage 2 train on. Each video is its own group."""
    (root / "faces").mkdir(parents=True, exist_ok=True)
    rows = []
    for video in videos:
        np.save(root / "faces" / f"{video.video_id}.npy", video.crops)
        rows.append({"video_id": video.video_id, "label": video.label, "group": video.video_id,
                     "split": video.split, "npy_path": f"faces/{video.video_id}.npy",
                     "n_crops": len(video.crops), "status": Status.OK.value})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root
