import json
import os
import subprocess
import sys


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
    assert (tmp_path / "report.html").read_text().count("<section") >= 2
    assert (tmp_path / "run" / "model" / "model.json").is_file()
    again = demo("--output-dir", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already done, reused") == 2  # synth and training
    first_manifest = (tmp_path / "clips" / "manifest.csv").read_text()
    fresh = demo("--output-dir", str(tmp_path), "--fresh", "--seed", "1")
    assert fresh.returncode == 0 and "already done" not in fresh.stderr
    assert (tmp_path / "clips" / "manifest.csv").read_text() != first_manifest
