import json
import os
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # `pytest -m "not slow"` leaves it out; `make test` runs it

SPLITS = ("train", "val", "test")


def demo(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "deepfake_detect", "demo", "--quick", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=os.environ | {"COLUMNS": "200"}
    )


def test_quick_demo_runs_end_to_end_and_reuses_finished_steps(tmp_path):
    first = demo("--output-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    for step in range(1, 7):
        assert f"{step}/6" in first.stderr
    summary = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert summary["split"] == "test" and summary["counts"]["videos"] >= 2
    # the shipped corpus and the packaged photos, split by person: 10 train, 2 val, 3 test
    metadata = pd.read_csv(tmp_path / "crops" / "metadata.csv")
    people = {split: set(metadata.group[metadata.split == split]) for split in SPLITS}
    assert [len(people[split]) for split in SPLITS] == [10, 2, 3]
    assert not (people["train"] & people["val"] or people["train"] & people["test"]
                or people["val"] & people["test"])  # fmt: skip
    assert any(name.startswith("grid_") for name in people["train"])
    manifest = pd.read_csv(tmp_path / "clips" / "manifest.csv", keep_default_na=False)
    swaps = manifest[manifest.method == "face_swap"]
    split_of = dict(zip(manifest.group, manifest.split, strict=True))
    assert all(swaps.source_identity.map(split_of) == swaps.split)
    assert "95% bootstrap interval" in first.stderr.replace("\n", " ")
    assert len(summary["video"]["auc_interval"]) == 2
    assert summary["video"]["ece"] >= 0 and "uncertain" in summary
    showcase = json.loads((tmp_path / "showcase.json").read_text())["videos"]
    assert [v["path"].split("/")[-2] for v in showcase] == ["real", "fake"]
    assert (tmp_path / "report.html").read_text().count("<section") >= 2
    assert (tmp_path / "run" / "model" / "model.json").is_file()
    again = demo("--output-dir", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already done, reused") == 2  # synth and training
    first_manifest = (tmp_path / "clips" / "manifest.csv").read_text()
    fresh = demo("--output-dir", str(tmp_path), "--fresh", "--seed", "1")
    assert fresh.returncode == 0 and "already done" not in fresh.stderr
    assert (tmp_path / "clips" / "manifest.csv").read_text() != first_manifest
    other = pd.read_csv(tmp_path / "crops" / "metadata.csv")
    assert set(other.group[other.split == "test"]) != people["test"]  # the seed chose others
