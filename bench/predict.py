"""Stage-3 benchmark: predict on a 10 s, a 3-minute and a 10-minute 1080p clip, on CPU.

Generates the clips once and keeps them in --workdir (default: ~/.cache/deepfake-detect/bench)
so a rerun measures at once: the 10 s clip is a virtual camera filming a portrait (H.264,
x264's defaults: medium preset, GOP up to 250 frames); the longer ones loop its first two
seconds back and forth (no jump, so no extra keyframe), coded with x264 superfast and a fixed
250-frame GOP with B-frames. An untrained model artifact per model stands in (speed does not
depend on the weights).

For each clip, side by side in one run: decode-all (PyAV decoding every frame, nothing else),
sampling alone (`video.sample_frames`, 32 frames: seeks to the keyframe before each where
that pays, decoding on from there), and per model predict end to end (`Predictor.predict`
with 32 frames, keeping crops, plus `write_report`), split into decode, detection, model and
report, each the best of --repeats after one warm-up. Then, once per clip: predict with the
default sampling (one frame a second, at least 32, at most 600), and the peak RSS of a fresh
process that predicts the clip and writes the report, with 32 frames and with the default.

Targets: the 10-minute clip predicts (32 frames, meso4) in at most 0.2x its decode-all; the
10 s clip is no slower than before seeking (1.95x decode-all, the last figure); peak memory
with 32 frames is flat in video length (10-minute peak within 10% of the 10 s one).

    .venv/bin/python bench/predict.py [--models meso4 efficientnet_b0] [--repeats 2]
        [--clips 10s 3min 10min] [--threads N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import av
import torch
from _common import decode_all, untrained_artifact
from av.video.frame import PictureType
from machine_load import OtherCpu

from deepfake_detect.crops import CropConfig
from deepfake_detect.files import atomic_path
from deepfake_detect.inference import Predictor, VideoPrediction
from deepfake_detect.report import write_report
from deepfake_detect.video import frame_table, sample_frames, sample_indices

SIZE = (1920, 1080)
FPS = 30
CLIPS = {"10s": 10.0, "3min": 180.0, "10min": 600.0}
LOOP_FRAMES = 60  # the long clips loop the short one's first two seconds back and forth
LONG_CODING = {"preset": "superfast", "x264-params": "keyint=250:min-keyint=250:scenecut=0"}
PHOTO = "grace_hopper"  # the packaged photo whose face dlib finds in these framings
INPUT_SIZES = {"meso4": 256, "efficientnet_b0": 224}
FRAMES = 32
TARGET_MODEL = "meso4"
MAX_LONG_RATIO = 0.2  # 10-minute clip: predict <= 0.2x decode-all
MAX_SHORT_RATIO = 1.95  # 10 s clip: predict + report no slower than before seeking
MAX_MEMORY_GROWTH = 1.10  # 10-minute peak RSS within 10% of the 10 s one
DEFAULT_CACHE = Path.home() / ".cache" / "deepfake-detect" / "bench"


@dataclass
class Run:
    """One timed prediction and report of a clip."""

    predict: float
    report: float
    decode: float
    detect: float
    model: float

    @property
    def total(self) -> float:
        return self.predict + self.report


@dataclass
class ClipResult:
    """Everything measured on one clip."""

    name: str
    n_frames: int
    decode_all: float
    sampling: float
    seeks: int
    runs: dict[str, Run] = field(default_factory=dict)
    default_predict: float = 0.0
    default_samples: int = 0
    peak_mb: float = 0.0
    default_peak_mb: float = 0.0
    other_cpu: float = 0.0


# --- inputs ------------------------------------------------------------------------------------


def _written(path: Path, write: Callable[[Path], object]) -> Path:
    """Write under a temporary name and rename, so the cache never holds half a clip."""
    if path.exists():
        return path
    print(f"generating {path} ...", flush=True)
    start = time.perf_counter()
    with atomic_path(path) as tmp:
        write(tmp)
    print(f"  written in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def make_clips(workdir: Path, names: list[str]) -> dict[str, Path]:
    """The 10 s camera clip, and the longer ones looped from its start; cached."""
    from deepfake_detect.synth import packaged_faces, write_camera_clip

    short = _written(
        workdir / f"clip_{SIZE[1]}p_10s.mp4",
        lambda tmp: write_camera_clip(
            packaged_faces()[PHOTO], tmp, size=SIZE, fps=FPS, seconds=CLIPS["10s"]
        ),
    )
    clips = {"10s": short}
    for name in names:
        if name != "10s":
            path = workdir / f"clip_{SIZE[1]}p_{name}.mp4"
            clips[name] = _written(path, lambda tmp, name=name: _loop(short, tmp, CLIPS[name]))
    return {name: clips[name] for name in names}


def _loop(source: Path, target: Path, seconds: float) -> None:
    """The source's first LOOP_FRAMES frames played forwards then backwards, over and over."""
    with av.open(str(source)) as container:
        frames = [f for _, f in zip(range(LOOP_FRAMES), container.decode(video=0), strict=False)]
    for frame in frames:  # a decoded keyframe would force a keyframe each time it comes round
        frame.pict_type = PictureType.NONE
    cycle = frames + frames[-2:0:-1]
    with av.open(str(target), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options=LONG_CODING)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for index in range(round(seconds * FPS)):
            frame = cycle[index % len(cycle)]
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def make_artifact(workdir: Path, name: str) -> Path:
    """An untrained artifact for `name` with the stage-1 default crop parameters."""
    crops = CropConfig(face_detector="dlib", frames_per_video=32, crop_size=256, margin=0.3)
    return untrained_artifact(workdir / "models" / name, name, crops, INPUT_SIZES.get(name))


# --- measurements ------------------------------------------------------------------------------


def sample_only(path: Path) -> int:
    """The 32 sampled frames, decoded and converted to RGB as predict gets them."""
    _, frames = sample_frames(path, frames_per_video=FRAMES)
    return sum(1 for _ in frames)


def best_time(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def timed_run(predictor: Predictor, clip: Path, report: Path) -> tuple[Run, VideoPrediction]:
    """One prediction (keeping crops, as a report needs them) and its HTML report."""
    start = time.perf_counter()
    prediction = predictor.predict(clip, keep_crops=True)
    predicted = time.perf_counter()
    if not prediction.scored:
        raise RuntimeError(f"{clip}: not scored ({prediction.status}: {prediction.error})")
    write_report([prediction], predictor, report)
    t = prediction.timings
    run = Run(predicted - start, time.perf_counter() - predicted, t["decode"], t["detect"],
              t["model"])  # fmt: skip
    return run, prediction


def peak_rss_mb(model_dir: str, clip: str, frames: int, max_frames: int, report: str) -> float:
    """In a fresh process: predict the clip, write the report, return the peak RSS (MB).

    The peak is the kernel's high-water mark of this process's own memory (VmHWM):
    getrusage's ru_maxrss would also count the parent's memory before the exec.
    """
    predictor = Predictor(Path(model_dir), device="cpu", frames=frames, max_frames=max_frames)
    prediction = predictor.predict(Path(clip), keep_crops=True)
    write_report([prediction], predictor, Path(report))
    status = Path("/proc/self/status").read_text().splitlines()
    (high_water,) = [line.split()[1] for line in status if line.startswith("VmHWM:")]
    return int(high_water) * 1024 / 1e6


def fresh_process_peak(*args: Any) -> float:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(peak_rss_mb, *args).result()


def main_model(predictors: dict[str, Predictor]) -> Predictor:
    """The target's model, or the first one asked for: it also times default sampling."""
    return predictors.get(TARGET_MODEL) or next(iter(predictors.values()))


def bench_clip(
    name: str, clip: Path, predictors: dict[str, Predictor], workdir: Path, repeats: int
) -> ClipResult:
    decode_all(clip)  # the page cache and PyAV's lazy start-up, for every measurement alike
    wanted = sample_indices(len(frame_table(clip)), FRAMES)
    seeks = sum(anchor is not None for anchor, _ in frame_table(clip).plan(wanted))
    with OtherCpu() as other:
        n_frames = decode_all(clip)
        result = ClipResult(name, n_frames, best_time(repeats, lambda: decode_all(clip)),
                            best_time(repeats, lambda: sample_only(clip)), seeks)  # fmt: skip
        report = workdir / f"report_{name}.html"
        for model, predictor in predictors.items():
            runs = [timed_run(predictor, clip, report)[0] for _ in range(repeats)]
            result.runs[model] = min(runs, key=lambda r: r.total)
        default = Predictor(main_model(predictors).model_path, device="cpu")
        start = time.perf_counter()
        result.default_samples = default.predict(clip).video["frames_sampled"]
        result.default_predict = time.perf_counter() - start
    result.other_cpu = other.share
    model_dir = str(main_model(predictors).model_path)
    result.peak_mb = fresh_process_peak(model_dir, str(clip), FRAMES, FRAMES, str(report))
    result.default_peak_mb = fresh_process_peak(model_dir, str(clip), 32, 600, str(report))
    print(f"  {name}: done; other processes used {other.share:.0%} of the CPUs", flush=True)
    return result


# --- output ------------------------------------------------------------------------------------


def machine_lines() -> list[str]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return [
        f"machine: {platform.platform()}, cpu_count {os.cpu_count()}, usable cpus {affinity}, "
        f"torch threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})",
        f"versions: torch {torch.__version__}, av {av.__version__}, python "
        f"{platform.python_version()}",
    ]


def print_tables(results: list[ClipResult]) -> None:
    header = (f"{'clip':<7}{'frames':>7}{'dec-all':>9}{'sample32':>9}{'ratio':>7}{'seeks':>6}"
              f"  {'model':<16}{'decode':>8}{'detect':>8}{'model':>7}{'report':>8}"
              f"{'predict':>9}{'/dec-all':>9}{'+report':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in results:
        lead = (f"{r.name:<7}{r.n_frames:>7}{r.decode_all:>9.2f}{r.sampling:>9.2f}"
                f"{r.sampling / r.decode_all:>6.3f}x{r.seeks:>6}")  # fmt: skip
        for model, run in r.runs.items():
            print(f"{lead}  {model:<16}{run.decode:>8.2f}{run.detect:>8.2f}{run.model:>7.2f}"
                  f"{run.report:>8.2f}{run.predict:>9.2f}{run.predict / r.decode_all:>8.3f}x"
                  f"{run.total / r.decode_all:>8.3f}x")  # fmt: skip
            lead = " " * len(lead)
    print(f"\n{'clip':<7}{'default sampling':>18}{'predict':>9}{'/dec-all':>9}"
          f"{'peak RSS 32 frames':>20}{'peak RSS default':>18}{'other CPU':>11}")  # fmt: skip
    for r in results:
        print(f"{r.name:<7}{r.default_samples:>11} frames{r.default_predict:>9.2f}"
              f"{r.default_predict / r.decode_all:>8.3f}x{r.peak_mb:>17.0f} MB"
              f"{r.default_peak_mb:>15.0f} MB{r.other_cpu:>11.0%}")  # fmt: skip


def print_targets(results: list[ClipResult]) -> None:
    by_name = {r.name: r for r in results}
    print("\ntargets:")
    if "10min" in by_name and TARGET_MODEL in by_name["10min"].runs:
        r = by_name["10min"]
        ratio = r.runs[TARGET_MODEL].predict / r.decode_all
        verdict = "PASS" if ratio <= MAX_LONG_RATIO else "FAIL"
        print(f"  10-minute clip, {TARGET_MODEL} predict <= {MAX_LONG_RATIO}x decode-all: "
              f"{ratio:.3f}x  {verdict}")  # fmt: skip
    if "10s" in by_name and TARGET_MODEL in by_name["10s"].runs:
        r = by_name["10s"]
        ratio = r.runs[TARGET_MODEL].total / r.decode_all
        verdict = "PASS" if ratio <= MAX_SHORT_RATIO else "FAIL"
        print(f"  10 s clip, {TARGET_MODEL} predict + report <= {MAX_SHORT_RATIO}x decode-all "
              f"(before seeking): {ratio:.2f}x  {verdict}")  # fmt: skip
    if "10s" in by_name and "10min" in by_name:
        growth = by_name["10min"].peak_mb / by_name["10s"].peak_mb
        verdict = "PASS" if growth <= MAX_MEMORY_GROWTH else "FAIL"
        print(f"  peak RSS flat in length (10-minute / 10 s <= {MAX_MEMORY_GROWTH}): "
              f"{growth:.2f}  {verdict}")  # fmt: skip


# --- entry point -------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_CACHE,
                        help="clips, artifacts and reports are kept here")  # fmt: skip
    parser.add_argument("--models", nargs="+", default=list(INPUT_SIZES))
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measurement")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    for line in machine_lines():
        print(line)
    clips = make_clips(args.workdir, args.clips)
    predictors = {
        name: Predictor(
            make_artifact(args.workdir, name), device="cpu", frames=FRAMES, max_frames=FRAMES
        )
        for name in args.models
    }
    warm_up = clips[args.clips[0]]
    for predictor in predictors.values():  # first-call overheads (imports, caches)
        timed_run(predictor, warm_up, args.workdir / "report_warm_up.html")
    results = [
        bench_clip(name, clip, predictors, args.workdir, args.repeats)
        for name, clip in clips.items()
    ]
    print()
    print_tables(results)
    print(
        f"\nseconds; best of {args.repeats} runs. sample32 = sampling alone, 32 frames "
        "decoded and converted to RGB; seeks = how many of them start with a seek. predict = "
        "Predictor.predict wall time (32 frames, crops kept); +report adds write_report. "
        "default sampling = one frame a second, at least 32, at most 600, one run."
    )
    print_targets(results)


if __name__ == "__main__":
    main()
