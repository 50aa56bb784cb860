"""Stage 1 and batch prediction on Ray against the local process pool (issue 16).

On the same clips made by the project's synth (`generate_dataset`): `preprocess` with the
local pool of N workers, with Ray tasks on a local Ray instance of N CPUs and of 1 CPU
(Ray's start-up timed apart: a cluster is started once for many runs); then the per-video
cost of 10 s 1080p clips (the size of most DFDC videos) on Ray, from which a DFDC estimate
(119,154 videos, about 470 GB) is printed for 1, 8 and 64 nodes; then batch prediction
videos/s with one local Predictor against Ray actors (one per CPU). Each figure comes with
the share of the CPUs that other processes used meanwhile (bench/machine_load.py).

    .venv/bin/python bench/distributed.py [--videos 24] [--cpus 2] [--workdir DIR]
        [--hd-clips 4] [--node-cpus 32] [--node-price 1.36]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine_load import cpu_snapshot, other_share

DFDC_VIDEOS = 119_154
DFDC_GB = 470
STAGE1 = {"progress": False}  # default crop settings: 32 frames, dlib, 256 px


def timed(run: Callable[[], Any]) -> tuple[float, float, float]:
    """(wall seconds, other processes' CPU share, CPU seconds of this process and its
    children, Ray's workers included) of one call."""
    start = cpu_snapshot()
    run()
    end = cpu_snapshot()
    return end[0] - start[0], other_share(start, end), end[2] - start[2]


def preprocess_run(data: Path, out: Path, **options: Any) -> Callable[[], Any]:
    from deepfake_detect.preprocess import VideoDataProcessor

    def run() -> Any:
        shutil.rmtree(out, ignore_errors=True)
        return VideoDataProcessor([data], out, **STAGE1 | options).run()

    return run


def start_ray(cpus: int) -> float:
    """Seconds to start a local Ray instance of `cpus` CPUs (after stopping any other)."""
    import ray

    from deepfake_detect.ray_executor import connect

    ray.shutdown()
    start = time.perf_counter()
    connect(num_cpus=cpus)
    seconds = time.perf_counter() - start
    print(f"  (local Ray instance of {ray.cluster_resources()['CPU']:g} CPUs: {seconds:.1f} s)")
    return seconds


def line(name: str, videos: int, wall: float, load: float, cpu: float) -> float:
    rate = videos / wall
    print(f"  {name:<34} {wall:7.1f} s  {rate:6.2f} videos/s  {cpu / videos:5.2f} CPU s/video"
          f"  other load {load:4.0%}", flush=True)  # fmt: skip
    return rate


def bench_stage1(data: Path, work: Path, videos: int, cpus: int) -> None:
    print(f"\nstage 1: {videos} clips, default settings, {cpus} CPUs", flush=True)
    pool = line(f"local pool, {cpus} workers", videos,
                *timed(preprocess_run(data, work / "pool", num_workers=cpus)))  # fmt: skip
    startup = start_ray(cpus)
    ray_n = line(f"ray, {cpus} CPUs", videos,
                 *timed(preprocess_run(data, work / "ray", executor="ray")))  # fmt: skip
    same = all(
        (work / "pool" / "faces" / p.name).read_bytes() == p.read_bytes()
        for p in (work / "ray" / "faces").glob("*.npy")
    )
    start_ray(1)
    ray_1 = line("ray, 1 CPU", videos,
                 *timed(preprocess_run(data, work / "ray1", executor="ray")))  # fmt: skip
    with_startup = videos / (videos / ray_n + startup)
    print(f"  ray {cpus} CPUs / local pool: {ray_n / pool:.2f}x (target >= 0.9x); "
          f"with Ray's start-up counted: {with_startup / pool:.2f}x")  # fmt: skip
    print(f"  ray {cpus} CPUs / ray 1 CPU: {ray_n / ray_1:.2f}x (target >= 1.7x)")
    print(f"  ray output byte-identical to the pool's: {same}")


def bench_hd_cost(work: Path, clips: int, cpus: int, node_cpus: int, price: float) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from preprocess import make_dataset

    data, _ = make_dataset(Path.home() / ".cache" / "deepfake-detect" / "bench", "1080p", clips,
                           10.0)  # fmt: skip
    start_ray(cpus)
    wall, load, cpu = timed(preprocess_run(data, work / "hd", executor="ray"))
    line(f"1080p 10 s clips on ray, {cpus} CPUs", clips, wall, load, cpu)
    per_video = cpu / clips  # CPU seconds actually used per video, Ray's own included
    print(f"\nper-video cost: {per_video:.2f} CPU s per 10 s 1080p clip "
          f"({wall * cpus / clips:.2f} s wall x CPUs; other load {load:.0%})")  # fmt: skip
    print(f"DFDC estimate ({DFDC_VIDEOS:,} videos, {DFDC_GB} GB), nodes of {node_cpus} CPUs at "
          f"${price:.2f}/h, 90% of ideal scaling assumed:")  # fmt: skip
    for nodes in (1, 8, 64):
        hours = DFDC_VIDEOS * per_video / (nodes * node_cpus * 0.9) / 3600
        read = DFDC_GB / (hours * 3600)
        print(f"  {nodes:>2} nodes: {hours:6.2f} h, ${hours * nodes * price:7.2f}, "
              f"reading {read:.2f} GB/s from the shared filesystem")  # fmt: skip


def tiny_model(folder: Path) -> Path:
    """An untrained meso4 artifact: prediction's cost is decoding, detection and the rule."""
    from deepfake_detect.artifact import ModelArtifact, save_artifact
    from deepfake_detect.models import create_model

    network, config = create_model("meso4", image_size=256)
    save_artifact(folder, network, ModelArtifact(model=config))
    return folder


def bench_predict(data: Path, work: Path, cpus: int) -> None:
    import torch

    from deepfake_detect.inference import Predictor, collect_videos
    from deepfake_detect.ray_executor import RayPredictors

    model = tiny_model(work / "model")
    videos = collect_videos([str(data)])
    options = {"frames": 32, "every": None, "device": "cpu"}
    print(f"\nbatch prediction: {len(videos)} clips, 32 frames each, meso4 at 256 px, "
          f"torch threads {torch.get_num_threads()}", flush=True)  # fmt: skip
    local = Predictor(model, **options)
    rate_local = line("local Predictor (one process)", len(videos),
                      *timed(lambda: list(local.predict_all(videos))))  # fmt: skip
    start_ray(cpus)
    pool = RayPredictors(model, options)
    list(pool.predict_all(videos[:cpus]))  # every actor has loaded its model
    rate_ray = line(f"ray, {cpus} actors", len(videos),
                    *timed(lambda: list(pool.predict_all(videos))))  # fmt: skip
    print(f"  ray actors / local: {rate_ray / rate_local:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--hd-clips", type=int, default=4)
    parser.add_argument("--node-cpus", type=int, default=32)
    parser.add_argument("--node-price", type=float, default=1.36)
    parser.add_argument("--skip", nargs="*", default=[], choices=["stage1", "hd", "predict"])
    parser.add_argument("--repeat", type=int, default=1, help="stage-1 comparisons, repeated")
    args = parser.parse_args()
    from deepfake_detect.synth import generate_dataset

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    data = work / "clips"
    if not (data / "manifest.csv").exists():
        print(f"generating {args.videos} clips in {data} ...", flush=True)
        generate_dataset(data, videos=args.videos, seed=0, size=384, fps=25, seconds=4.0)
    for _ in range(args.repeat if "stage1" not in args.skip else 0):
        bench_stage1(data, work, args.videos, args.cpus)
    if "hd" not in args.skip:
        bench_hd_cost(work, args.hd_clips, args.cpus, args.node_cpus, args.node_price)
    if "predict" not in args.skip:
        bench_predict(data, work, args.cpus)


if __name__ == "__main__":
    main()
