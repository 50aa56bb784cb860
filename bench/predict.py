"""Stage-3 latency benchmark: end-to-end predict of a 10 s 1080p clip on CPU.

Generates one 10 s 1920x1080 30 fps face clip (cached in --workdir), builds an untrained
model artifact per model (speed does not depend on the weights), and measures:
decode-only with PyAV (every frame, nothing else; best of N), then per model one warm-up
prediction and report followed by N timed `Predictor.predict(clip, keep_crops=True)` +
`write_report` runs, split into decode, detection, model and report. Prints one table with
the ratio of each model's total to decode-only; the target is meso4 under 3x.

    .venv/bin/python bench/predict.py [--models meso4 efficientnet_b0] [--repeats 3]
        [--frames 32] [--threads N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import torch
from machine_load import OtherCpu

from deepfake_detect.artifact import ModelArtifact, save_artifact
from deepfake_detect.crops import CropConfig
from deepfake_detect.inference import Predictor, VideoPrediction
from deepfake_detect.models import create_model
from deepfake_detect.report import write_report

SIZE = (1920, 1080)
FPS = 30
SECONDS = 10.0
PHOTO = "grace_hopper"  # the packaged photo whose face dlib finds in these framings
INPUT_SIZES = {"meso4": 256, "efficientnet_b0": 224}
TARGET_MODEL = "meso4"
MAX_RATIO = 3.0  # meso4 predict + report under 3x decode-only


@dataclass
class Run:
    """One timed prediction and report of the clip."""

    predict: float
    report: float
    decode: float
    detect: float
    model: float

    @property
    def total(self) -> float:
        return self.predict + self.report

    @property
    def other(self) -> float:
        """Predict time outside decode/detect/model: tracking, cropping, judging."""
        return self.predict - self.decode - self.detect - self.model


@dataclass
class ModelResult:
    """A model's load time, best run and the spread of its totals."""

    name: str
    load: float
    runs: list[Run]
    prediction: VideoPrediction

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda r: r.total)

    @property
    def median_total(self) -> float:
        return statistics.median(r.total for r in self.runs)


# --- inputs ------------------------------------------------------------------------------------


def make_clip(workdir: Path) -> Path:
    """The 10 s 1080p clip, written under a temporary name and renamed; reused when cached."""
    path = workdir / f"clip_{SIZE[1]}p_{SECONDS:g}s.mp4"
    if path.exists():
        return path
    from deepfake_detect.synth import packaged_faces, write_camera_clip

    print(f"generating {path} ...", flush=True)
    start = time.perf_counter()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write_camera_clip(packaged_faces()[PHOTO], tmp, size=SIZE, fps=FPS, seconds=SECONDS)
    os.replace(tmp, path)
    print(f"  written in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def make_artifact(workdir: Path, name: str) -> Path:
    """An untrained artifact for `name` with the stage-1 default crop parameters."""
    network, config = create_model(name, image_size=INPUT_SIZES.get(name))
    crops = CropConfig(face_detector="dlib", frames_per_video=32, crop_size=256, margin=0.3)
    artifact = ModelArtifact(model=config, preprocessing=crops)
    return save_artifact(workdir / "models" / name, network, artifact).parent


# --- measurements ------------------------------------------------------------------------------


def decode_all(path: Path) -> int:
    """Decode every frame of the first video stream, nothing else; return the frame count."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def bench_decode(path: Path, repeats: int) -> tuple[float, int, float]:
    """Best wall time of `repeats` full decodes, the frames decoded and the other-CPU share."""
    times, frames = [], 0
    with OtherCpu() as other:
        for _ in range(repeats):
            start = time.perf_counter()
            frames = decode_all(path)
            times.append(time.perf_counter() - start)
    return min(times), frames, other.share


def timed_run(predictor: Predictor, clip: Path, report: Path) -> tuple[Run, VideoPrediction]:
    """One prediction (keeping crops, as a report needs them) and its HTML report."""
    start = time.perf_counter()
    prediction = predictor.predict(clip, keep_crops=True)
    predicted = time.perf_counter()
    if not prediction.scored:
        raise RuntimeError(f"{clip}: not scored ({prediction.status}: {prediction.error})")
    write_report([prediction], predictor, report)
    reported = time.perf_counter()
    t = prediction.timings
    run = Run(predicted - start, reported - predicted, t["decode"], t["detect"], t["model"])
    return run, prediction


def bench_model(name: str, clip: Path, workdir: Path, repeats: int, frames: int) -> ModelResult:
    """Load the model (timed apart), warm up once, then time `repeats` runs."""
    model_dir = make_artifact(workdir, name)
    start = time.perf_counter()
    predictor = Predictor(model_dir, device="cpu", frames=frames)
    load = time.perf_counter() - start
    report = workdir / f"report_{name}.html"
    timed_run(predictor, clip, report)  # warm-up: first-call overheads (imports, caches)
    with OtherCpu() as other:
        results = [timed_run(predictor, clip, report) for _ in range(repeats)]
    runs = [run for run, _ in results]
    totals = ", ".join(f"{r.total:.2f}" for r in runs)
    print(f"  {name}: totals {totals} s; other processes used {other.share:.0%} of the CPUs")
    return ModelResult(name, load, runs, results[-1][1])


# --- output ------------------------------------------------------------------------------------


def machine_lines() -> list[str]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return [
        f"machine: {platform.platform()}, cpu_count {os.cpu_count()}, usable cpus {affinity}, "
        f"torch threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})",
        f"versions: torch {torch.__version__}, av {av.__version__}, python "
        f"{platform.python_version()}",
    ]


def print_table(decode_only: float, results: list[ModelResult]) -> None:
    """One row per model (its best run of predict + report), with the ratio to decode-only."""
    header = (
        f"{'model':<16}{'dec-only':>9}{'decode':>8}{'detect':>8}{'model':>8}{'other':>8}"
        f"{'report':>8}{'total':>8}{'median':>8}{'ratio':>7}{'load':>7}  target"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        b = r.best
        ratio = b.total / decode_only
        verdict = "-"
        if r.name == TARGET_MODEL:
            verdict = f"{'PASS' if ratio < MAX_RATIO else 'FAIL'} (< {MAX_RATIO:g}x)"
        print(
            f"{r.name:<16}{decode_only:>9.2f}{b.decode:>8.2f}{b.detect:>8.2f}{b.model:>8.2f}"
            f"{b.other:>8.2f}{b.report:>8.2f}{b.total:>8.2f}{r.median_total:>8.2f}"
            f"{ratio:>6.2f}x{r.load:>7.3f}  {verdict}"
        )


def print_notes(frames: int, repeats: int, results: list[ModelResult]) -> None:
    video = results[0].prediction.video if results else {}
    print(
        f"\nseconds; best of {repeats} runs (median = median total). total = predict wall + "
        "report; other = predict\nwall - decode - detect - model (tracking, cropping, judging); "
        "load = Predictor() construction,\nexcluded from total, as is one warm-up predict + "
        "report. report includes Grad-CAM (on the\npredictor's own network) and the matplotlib "
        "timeline."
    )
    print(
        f"The predict path decodes all {video.get('n_frames', '?')} frames in order "
        f"(decode-and-skip) and converts only\nthe {video.get('frames_sampled', frames)} "
        "sampled ones to RGB; decode-only decodes every frame and converts none."
    )
    for r in results:
        p = r.prediction
        print(
            f"  {r.name}: {len(p.frames)} crops scored, {len(p.persons)} person(s), "
            f"P(fake) {p.probability:.3f} (untrained weights)"
        )


# --- entry point -------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="keep the clip, artifacts and reports here")
    parser.add_argument("--models", nargs="+", default=list(INPUT_SIZES))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    parser.add_argument("--frames", type=int, default=32, help="frames sampled per video")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    return parser.parse_args()


def run(workdir: Path, args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    for line in machine_lines():
        print(line)
    clip = make_clip(workdir)
    decode_only, n_frames, other = bench_decode(clip, args.repeats)
    rate = n_frames / decode_only
    print(
        f"decode-only: {n_frames} frames in {decode_only:.2f} s ({rate:.0f} fps); "
        f"other processes used {other:.0%} of the CPUs",
        flush=True,
    )
    results = [bench_model(name, clip, workdir, args.repeats, args.frames) for name in args.models]
    print()
    print_table(decode_only, results)
    print_notes(args.frames, args.repeats, results)


def main() -> None:
    args = parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args.workdir, args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        run(Path(tmp), args)


if __name__ == "__main__":
    main()
