"""Self-blending on real footage: train on real clips only, test on real deepfakes.

Uses the real sample media in `../shared/samples` (read in place, never copied) when that
folder exists, and exits with a reason (status 0) when it does not.

Protocol:
  train   real clips only (GRID speakers, FF++ originals, the DFDC real clip); the trainer's
          `self_blend` turns half of every epoch into self-blended pseudo-fakes of them.
  val     held-out GRID reals plus self-blended copies of their crops, made here with the
          project's own SelfBlendSource: model selection, threshold and calibration never see
          a real deepfake.
  test    held-out reals (GRID speakers and one FF++ original) against every FF++ and DFDC
          fake: the AUC printed is as measured, however low, with its bootstrap 95% interval.
  corpus  with --corpus-clips N, N more real training clips that `synth` films of the shipped
          corpus and packaged photos (synth.py: 15 people; the held-out GRID speakers' clips
          are dropped), so training sees 5 more people and moving-camera takes of the rest.

    .venv/bin/python bench/self_blend_real.py                    # about 3-4 min on 2 cores
    .venv/bin/python bench/self_blend_real.py --corpus-clips 60  # + the shipped corpus, filmed
    .venv/bin/python bench/self_blend_real.py --max-epochs 30 --workdir /tmp/sbr --keep

Everything is printed to stdout; work goes to a temporary folder unless `--workdir` is given
(a given workdir is kept, and its face crops are reused by the next run).
"""

from __future__ import annotations

import argparse
import math
import random
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import quiet_lightning
from rich.console import Console

from deepfake_detect.blend import SelfBlendSource
from deepfake_detect.crops import LANDMARK_COLUMNS
from deepfake_detect.dataset_layouts import ADAPTERS
from deepfake_detect.evaluate import evaluate
from deepfake_detect.inference import Predictor
from deepfake_detect.metrics import binary_metrics
from deepfake_detect.preprocess import VideoDataProcessor
from deepfake_detect.training import TrainConfig, run_training
from deepfake_detect.training_data import self_blend_guides

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLES = REPO.parent / "shared" / "samples"
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
# NeuralTextures 004_982 re-renders 004's own face (only the mouth changes): holding out 004
# removes the strongest identity leak; 519_515 and 634_660 paste another face into the scene
# of an original that stays in training.
DEFAULT_TEST_ORIGINAL = "004"
GRID_TEST, GRID_VAL = 3, 2
MARGIN = 0.3  # stage 1's face margin; the val self-blends need it to find the face
VAL_BLENDS = 3  # pseudo-fake videos per val real: finer steps of a val AUC over few videos
CSV_COLUMNS = ["path", "label", "split", "group", "method"]


@dataclass(frozen=True)
class Clip:
    """One row of the experiment's CSV dataset."""

    path: Path
    label: int
    split: str
    group: str
    method: str = ""
    source: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples",
        type=Path,
        default=DEFAULT_SAMPLES,
        help="the real sample media (default: <repo>/../shared/samples)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="crops, run and evaluation go here (default: a temporary folder)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    parser.add_argument("--model", default="meso4")
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early-stopping patience (default: max epochs, no early stop)",
    )
    parser.add_argument("--crops-per-video", type=int, default=16)
    parser.add_argument("--frames-per-video", type=int, default=16)
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=2, help="stage-1 processes")
    parser.add_argument(
        "--test-original",
        default=DEFAULT_TEST_ORIGINAL,
        choices=("004", "519", "634"),
        help="the FF++ original held out as a test real (004, 519 or 634)",
    )
    parser.add_argument("--seed", type=int, default=0, help="GRID hold-out draw and training")
    parser.add_argument("--face-detector", default="yunet", help="stage 1's detector")
    parser.add_argument("--align", action="store_true", help="stage 1's --align")
    parser.add_argument(
        "--ellipse-masks",
        action="store_true",
        help="self-blend under an ellipse in the box, not the landmarks' face region",
    )
    parser.add_argument(
        "--corpus-clips",
        type=int,
        default=0,
        help="real training clips filmed by synth from the shipped corpus (0: none)",
    )
    return parser.parse_args(argv)


# --- the dataset ---------------------------------------------------------------------------------


def grid_clips(samples: Path, seed: int) -> list[Clip]:
    """GRID: one speaker per clip (10 clips, 10 different faces); a seeded draw of speakers
    is held out for test and val."""
    paths = sorted((samples / "grid").glob("*.mpg"))
    random.Random(seed).shuffle(paths)
    splits = ["test"] * GRID_TEST + ["val"] * GRID_VAL
    return [
        Clip(p, 0, splits[i] if i < len(splits) else "train", f"grid_{p.stem}", source="grid")
        for i, p in enumerate(paths)
    ]


def ffpp_clips(samples: Path, test_original: str) -> list[Clip]:
    """FF++ originals (one held out for test) and every manipulated clip (test); a fake
    `target_source` is grouped with its target."""
    root = samples / "ffpp"
    originals = sorted((root / "original_sequences/youtube/c23/videos").glob("*.mp4"))
    clips = [
        Clip(p, 0, "test" if p.stem == test_original else "train", f"ffpp_{p.stem}",
             source="ffpp")
        for p in originals
    ]  # fmt: skip
    for method in FFPP_METHODS:
        for p in sorted((root / "manipulated_sequences" / method / "c23/videos").glob("*.mp4")):
            target = p.stem.split("_")[0]
            clips.append(Clip(p, 1, "test", f"ffpp_{target}", method, source="ffpp"))
    return clips


def dfdc_clips(samples: Path) -> list[Clip]:
    """DFDC clips on disk, read by stage 1's DFDC adapter (labels and originals from each
    part's metadata.json): reals train, fakes test."""
    items = [item for item in ADAPTERS["dfdc"](samples / "dfdc") if not item.unavailable()]
    return [
        Clip(
            item.path,
            item.label,
            "test" if item.label else "train",
            f"dfdc_{item.group}",
            item.method if item.label else "",
            source="dfdc",
        )
        for item in sorted(items, key=lambda item: item.path)
    ]


def build_clips(samples: Path, test_original: str, seed: int) -> list[Clip]:
    return [*grid_clips(samples, seed), *ffpp_clips(samples, test_original), *dfdc_clips(samples)]


def corpus_clips(clips: list[Clip], count: int, folder: Path, seed: int) -> list[Clip]:
    """`count` real clips of the shipped corpus and packaged photos, filmed by synth; those of
    GRID speakers held out for val or test are dropped, the rest train."""
    from deepfake_detect.synth import default_face_sources, generate_dataset

    held_out = {c.group: c.split for c in clips if c.source == "grid" and c.split != "train"}
    people = [source.identity for source in default_face_sources()]
    splits = {person: held_out.get(person, "train") for person in people}
    manifest = generate_dataset(folder, videos=count, seed=seed, size=256, fps=25, seconds=2.0,
                                fake_fraction=0.0, identity_splits=splits)  # fmt: skip
    return [
        Clip(folder / row.path, 0, "train", row.group, source="corpus")
        for row in manifest.itertuples(index=False)
        if row.split == "train"
    ]


def write_csv(clips: list[Clip], path: Path) -> Path:
    """The csv adapter's input: absolute paths into the samples folder, nothing copied."""
    rows = [{"path": str(c.path.resolve()), "label": c.label, "split": c.split,
             "group": c.group, "method": c.method} for c in clips]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=CSV_COLUMNS).to_csv(path, index=False)
    return path


def identity_leaks(clips: list[Clip]) -> list[str]:
    """Test fakes whose target (an FF++ original) is a training real."""
    trained = {c.group for c in clips if c.split == "train"}
    return [
        f"{c.method} {c.path.stem}: its scene and target {c.group.removeprefix('ffpp_')} "
        "are in training"
        for c in clips
        if c.split == "test" and c.label == 1 and c.group in trained
    ]


# --- stage 1 and the val set -----------------------------------------------------------------


def preprocess(csv: Path, crops_dir: Path, args: argparse.Namespace) -> pd.DataFrame:
    processor = VideoDataProcessor(
        [csv], crops_dir, dataset_format="csv", frames_per_video=args.frames_per_video,
        crop_size=args.crop_size, margin=MARGIN, num_workers=args.num_workers, progress=False,
        face_detector=args.face_detector, align=args.align,
        allow_outside_root=True,  # the CSV lists the samples folder's clips by absolute path
    )  # fmt: skip
    return processor.run()


def with_source(metadata: pd.DataFrame, clips: list[Clip]) -> pd.DataFrame:
    """metadata.csv rows with the clip's file name and source dataset beside them."""
    by_path = {str(c.path.resolve()): c for c in clips}
    return metadata.assign(
        name=[Path(p).stem for p in metadata.path],
        source=[by_path[p].source if p in by_path else "" for p in metadata.path],
    )


def write_train_table(metadata: pd.DataFrame, crops_dir: Path) -> Path:
    """The training rows only, as a metadata table beside the crops (npy paths stay valid)."""
    path = crops_dir / "train_metadata.csv"
    metadata[metadata.split == "train"].to_csv(path, index=False)
    return path


def write_val_table(metadata: pd.DataFrame, crops_dir: Path, margin: float, seed: int) -> Path:
    """Val reals plus VAL_BLENDS self-blended pseudo-fake videos per real (each a self-blend of
    every crop, with its own seed, its mask shaped by the crop's landmarks as in training),
    written beside the crops."""
    _, landmarks = self_blend_guides(crops_dir)
    blend_dir = crops_dir / "selfblend_val"
    blend_dir.mkdir(exist_ok=True)
    reals = metadata[(metadata.split == "val") & (metadata.status == "ok")]
    fakes = []
    for index, row in enumerate(reals.itertuples(index=False)):
        crops = np.load(crops_dir / row.npy_path, allow_pickle=False)
        points = landmarks.get(str(row.video_id), np.full((len(crops), 5, 2), np.nan))
        for copy in range(VAL_BLENDS):
            blender = SelfBlendSource(seed=seed * 1000 + index * VAL_BLENDS + copy, margin=margin)
            blended = np.stack(
                [
                    blender(np.ascontiguousarray(crop), None if np.isnan(p).any() else p)
                    for crop, p in zip(crops, points, strict=True)
                ]
            )
            name = f"{row.video_id}__selfblend{copy}"
            np.save(blend_dir / f"{name}.npy", blended, allow_pickle=False)
            fake = row._asdict() | {"video_id": name, "label": 1, "method": "self-blend",
                                    "npy_path": f"{blend_dir.name}/{name}.npy"}  # fmt: skip
            fakes.append(fake)
    path = crops_dir / "val_metadata.csv"
    pd.concat([reals, pd.DataFrame(fakes)], ignore_index=True).to_csv(path, index=False)
    return path


# --- output ----------------------------------------------------------------------------------


def fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def print_protocol(clips: list[Clip], args: argparse.Namespace) -> None:
    print("protocol")
    print("  train: real clips only; self_blend=0.5 makes half of each epoch pseudo-fakes")
    print(f"  val:   held-out GRID reals + {VAL_BLENDS} self-blended copies of each (no real fake")
    print("         is used for model selection, threshold or calibration)")
    print("  test:  held-out reals against every FF++ and DFDC fake")
    for split in ("train", "val", "test"):
        for label, kind in ((0, "real"), (1, "fake")):
            names = [c.path.stem for c in clips if c.split == split and c.label == label]
            if names:
                print(f"  {split:5s} {kind}: {len(names):2d}  {' '.join(names)}")
    print(f"  held-out FF++ original: {args.test_original}")
    leaks = identity_leaks(clips)
    for leak in leaks:
        print(f"  identity leak left: {leak}")
    if not leaks:
        print("  identity leak left: none among the FF++ fakes")
    print("  DFDC: the one real clip trains (its person differs from the three fakes'), so the")
    print("        'dfdc' AUC measures DFDC fakes against GRID/FF++ reals (dataset confound)")
    print()


def print_stage1(metadata: pd.DataFrame, seconds: float) -> None:
    ok = metadata.status == "ok"
    print(f"stage 1: {len(metadata)} videos, {int(ok.sum())} ok, "
          f"{int(metadata.n_crops.fillna(0).sum())} crops, {seconds:.1f} s")  # fmt: skip
    for row in metadata[~ok].itertuples(index=False):
        print(f"  not usable: {row.name} ({row.split}, label {row.label}): {row.status}: "
              f"{row.error}")  # fmt: skip
    print()


def print_training(
    history: pd.DataFrame, metrics: dict[str, float], val_table: Path, seconds: float
) -> None:
    labels = pd.read_csv(val_table).label
    print(f"training: {len(history)} epochs, {seconds:.1f} s")
    print(f"  val videos: {int((labels == 0).sum())} real, {int((labels == 1).sum())} self-blended")
    print("  epoch  train_loss  val_loss  val_video_auc (val fakes = self-blends)")
    for row in history.itertuples(index=False):
        print(f"  {row.epoch:5d}  {fmt(row.train_loss):>10s}  {fmt(row.val_loss):>8s}  "
              f"{fmt(row.val_video_auc):>13s}")  # fmt: skip
    print(f"  best checkpoint on val: video AUC {fmt(metrics['auc'])}")
    print()


def print_videos(videos: pd.DataFrame, temperature: float) -> None:
    print(
        f"test videos: P(fake), mean of a video's crops, temperature {temperature:.3g} (fit on val)"
    )
    for row in videos.sort_values(["label", "probability"]).itertuples(index=False):
        kind = "fake" if row.label == 1 else "real"
        print(f"  {kind}  {row.source:5s} {row.method or '-':15s} {row.name:12s} "
              f"{fmt(row.probability, 5)}  {row.status}")  # fmt: skip
    print()


def auc_against(videos: pd.DataFrame, source: str) -> tuple[float, int, int]:
    """Video AUC of every fake against the reals of one source dataset."""
    subset = videos[(videos.label == 1) | (videos.source == source)]
    subset = subset[subset.probability.notna()]
    auc = binary_metrics(subset.label.astype(int), subset.probability)["auc"]
    return auc, int((subset.label == 0).sum()), int((subset.label == 1).sum())


def print_evaluation(summary: dict[str, Any], videos: pd.DataFrame, seconds: float) -> None:
    counts, video, frame = summary["counts"], summary["video"], summary["frame"]
    print(f"test ({counts['real']} real, {counts['fake']} fake videos scored of "
          f"{counts['videos']}; {counts['frames']} frames; {seconds:.1f} s)")  # fmt: skip
    low, high = video["auc_interval"]
    print(f"  video AUC {fmt(video['auc'])} (bootstrap 95% interval {fmt(low)}-{fmt(high)})   "
          f"frame AUC {fmt(frame['auc'])}")  # fmt: skip
    print(f"  video ECE {fmt(video['ece'])}   Brier {fmt(video['brier'])}")
    print(f"  video AP  {fmt(video['ap'])}   frame AP  {fmt(frame['ap'])}")
    print(f"  video EER {fmt(video['eer'])}   frame EER {fmt(frame['eer'])}")
    print(f"  threshold {summary['threshold']:.3f} (chosen on val): accuracy "
          f"{fmt(video['accuracy'])}, balanced {fmt(video['balanced_accuracy'])}, "
          f"{video['confusion']}")  # fmt: skip
    print("  per method (its fakes against all test reals):")
    for method, metrics in summary["per_method"].items():
        print(f"    {method:15s} fakes {metrics['n_fake']}  AUC {fmt(metrics['auc'])}  "
              f"AP {fmt(metrics['ap'])}")  # fmt: skip
    print("  all fakes against the reals of one dataset (a domain check):")
    for source in ("grid", "ffpp"):
        auc, n_real, n_fake = auc_against(videos, source)
        print(f"    {source:5s} reals {n_real}, fakes {n_fake}: AUC {fmt(auc)}")
    for note in summary["notes"]:
        print(f"  note: {note}")
    print()


def command_line() -> str:
    python = Path(sys.executable)
    with suppress(ValueError):
        python = python.relative_to(REPO)
    return shlex.join([str(python), "bench/self_blend_real.py", *sys.argv[1:]])


@contextmanager
def workdir(args: argparse.Namespace) -> Iterator[Path]:
    """The given workdir (kept), or a temporary one (removed unless --keep)."""
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        yield args.workdir.resolve()
        return
    folder = Path(tempfile.mkdtemp(prefix="self_blend_real_"))
    try:
        yield folder
    finally:
        if args.keep:
            print(f"workdir kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


# --- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> None:
    clips = build_clips(args.samples, args.test_original, args.seed)
    if args.corpus_clips:
        clips += corpus_clips(clips, args.corpus_clips, work / "corpus", args.seed)
    print_protocol(clips, args)
    crops_dir = work / "crops"
    start = time.monotonic()
    metadata = preprocess(write_csv(clips, work / "dataset.csv"), crops_dir, args)
    metadata = with_source(metadata, clips)
    print_stage1(metadata, time.monotonic() - start)
    if args.ellipse_masks:  # without landmarks in crops.csv, self-blends fall back to ellipses
        crops_csv = crops_dir / "crops.csv"
        table = pd.read_csv(crops_csv)
        table.drop(columns=list(LANDMARK_COLUMNS)).to_csv(crops_csv, index=False)

    config = TrainConfig(
        train=write_train_table(metadata, crops_dir),
        val=write_val_table(metadata, crops_dir, margin=MARGIN, seed=args.seed),
        output_dir=work / "run", model=args.model, image_size=args.crop_size,
        self_blend=0.5, augment="light", max_epochs=args.max_epochs,
        patience=args.patience or args.max_epochs,
        crops_per_video=args.crops_per_video, accelerator="cpu", devices="1",
        seed=args.seed, progress=False,
    )  # fmt: skip
    shutil.rmtree(config.output_dir, ignore_errors=True)
    start = time.monotonic()
    result = run_training(config, console=Console(stderr=True))
    print_training(result.history, result.metrics, config.val, time.monotonic() - start)

    start = time.monotonic()
    predictor = Predictor(result.artifact_dir, device="cpu")
    evaluation = evaluate(crops_dir, predictor, work / "eval", split="test", progress=False)
    scored = evaluation.videos.merge(metadata[["video_id", "name", "source"]], on="video_id")
    print_videos(scored, predictor.artifact.temperature)
    print_evaluation(evaluation.summary, scored, time.monotonic() - start)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    samples = args.samples.resolve()
    missing = [f"{name}/" for name in ("grid", "ffpp", "dfdc") if not (samples / name).is_dir()]
    if missing:
        print(f"skipped: no real sample media at {samples} (missing {', '.join(missing)}); "
              "pass --samples to point at them")  # fmt: skip
        return 0
    args.samples = samples
    quiet_lightning()
    print(f"self-blend on real footage: {args.model}, {args.max_epochs} epochs max, "
          f"{args.frames_per_video} frames x {args.crop_size} px per video, CPU; "
          f"{args.face_detector}{', aligned' if args.align else ''}")  # fmt: skip
    print(f"samples: {samples}")
    print()
    start = time.monotonic()
    with workdir(args) as work:
        run(args, work)
    print(f"total: {time.monotonic() - start:.1f} s")
    print(f"reproduce (from the repo root): {command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
