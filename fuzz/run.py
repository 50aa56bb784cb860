"""Fuzz one target with atheris (libFuzzer) for a bounded time.

    .venv/bin/python fuzz/run.py TARGET [--seconds 60] [LIBFUZZER_ARGS_OR_FILES...]

The corpus grows in .fuzz/TARGET/corpus (seeded from the target's valid files); an input
that fails is saved as .fuzz/TARGET/crash-* and the run stops with exit code 1. libFuzzer's
closing lines say how many inputs were tried (stat::number_of_executed_units). Given files
(a crash-* file, say), it runs just those inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["deepfake_detect", "python_multipart", "starlette"]):
    from targets import TARGETS

ROOT = Path(__file__).resolve().parents[1] / ".fuzz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--seconds", type=int, default=60, help="Stop after this long.")
    args, extra = parser.parse_known_args()
    folder = ROOT / args.target
    corpus, scratch = folder / "corpus", folder / "scratch"
    for path in (corpus, scratch):
        path.mkdir(parents=True, exist_ok=True)
    one_input, seeds = TARGETS[args.target](scratch)
    for seed in seeds:
        (corpus / hashlib.sha1(seed, usedforsecurity=False).hexdigest()).write_bytes(seed)
    fuzzer_args = [sys.argv[0], f"-max_total_time={args.seconds}", "-timeout=30",
                   "-rss_limit_mb=3072", "-max_len=262144", "-print_final_stats=1",
                   f"-artifact_prefix={folder}/", *(extra or [str(corpus)])]  # fmt: skip
    atheris.Setup(fuzzer_args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
