"""Time `generate_dataset`: how long a synthetic real/fake clip dataset takes to make.

    .venv/bin/python bench/synth.py [--videos 40] [--seconds 2] [--size 256] [--fps 25]

The issue's target: 40 clips of 2 s at 256x256 in under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from deepfake_detect.synth import generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        manifest = generate_dataset(
            Path(folder), args.videos, args.seed, size=args.size, fps=args.fps, seconds=args.seconds
        )
        elapsed = time.perf_counter() - start
    frames = len(manifest) * max(1, round(args.fps * args.seconds))
    fakes = int(manifest.label.sum())
    print(
        f"{len(manifest)} clips ({fakes} fake) of {args.seconds:g} s at {args.size}x{args.size}, "
        f"{args.fps:g} fps on {os.cpu_count()} cores: {elapsed:.1f} s, "
        f"{len(manifest) / elapsed:.2f} clips/s, {frames / elapsed:.0f} frames/s"
    )


if __name__ == "__main__":
    main()
