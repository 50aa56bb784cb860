"""How well the demo does on people it never saw, over seeds: `deepfake-detect demo --fresh
--seed N` for each seed, timed, with the machine's load alongside (a shared machine slows every
figure silently).

Per seed it prints the wall time, the other processes' share of the CPUs meanwhile, the test
split's people, the test video AUC with its bootstrap 95% interval, ECE (10 bins), Brier, the
share of test videos called UNCERTAIN, and the showcase's two verdicts (the held-out real clip
should be REAL, the held-out fake FAKE).

    .venv/bin/python bench/demo_accuracy.py                       # seeds 0 1 2, about 3 min each
    .venv/bin/python bench/demo_accuracy.py --seeds 0 --workdir /tmp/demo-bench --keep
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_load import OtherCpu

REPO = Path(__file__).resolve().parents[1]
TIME_TARGET_S = 300


def run_seed(seed: int, output_dir: Path) -> dict:
    command = [sys.executable, "-m", "deepfake_detect", "demo", "--fresh", "--seed", str(seed),
               "--output-dir", str(output_dir)]  # fmt: skip
    with OtherCpu() as load:
        start = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True,
                              env=os.environ | {"COLUMNS": "160"})  # fmt: skip
        wall = time.monotonic() - start
    if done.returncode != 0:
        return {"seed": seed, "error": done.stderr.strip().splitlines()[-1:], "wall_s": wall}
    summary = json.loads((output_dir / "evaluation" / "evaluation.json").read_text())
    showcase = json.loads((output_dir / "showcase.json").read_text())["videos"]
    metadata = _read_csv(output_dir / "crops" / "metadata.csv")
    test_people = sorted({row["group"] for row in metadata if row["split"] == "test"})
    video = summary["video"]
    return {
        "seed": seed, "wall_s": round(wall, 1), "other_load": round(load.share, 2),
        "test_people": test_people, "n_real": video["n_real"], "n_fake": video["n_fake"],
        "auc": video["auc"], "auc_interval": video["auc_interval"], "ece": video["ece"],
        "brier": video["brier"], "uncertain_share": summary["uncertain"]["share"],
        "accuracy_on_rest": summary["uncertain"]["accuracy_on_rest"],
        "showcase": [{"clip": Path(v["path"]).name, "verdict": v["verdict"],
                      "probability": v["probability"]} for v in showcase],
    }  # fmt: skip


def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, help="keep the demo folders here")
    parser.add_argument("--keep", action="store_true", help="keep a temporary workdir")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="demo-accuracy-"))
    results = []
    try:
        for seed in args.seeds:
            result = run_seed(seed, workdir / f"seed{seed}")
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(
        "| seed | test people | video AUC (95% CI) | ECE | Brier | UNCERTAIN | showcase "
        "(real, fake) | time | other load |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['seed']} | failed: {r['error']} | | | | | | {r['wall_s']:.0f} s | |")
            continue
        low, high = r["auc_interval"]
        verdicts = ", ".join(f"{s['verdict']} {s['probability']:.2f}" for s in r["showcase"])
        print(f"| {r['seed']} | {', '.join(r['test_people'])} | {r['auc']:.3f} "
              f"({low:.3f}-{high:.3f}) | {r['ece']:.3f} | {r['brier']:.3f} | "
              f"{r['uncertain_share']:.0%} | {verdicts} | {r['wall_s']:.0f} s "
              f"{'(over 5 min)' if r['wall_s'] > TIME_TARGET_S else ''}| "
              f"{r['other_load']:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
