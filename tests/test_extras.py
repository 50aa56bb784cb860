"""Optional parts (pip extras): a missing one is named in one line with its install command."""

import importlib.util

import pytest
from typer.testing import CliRunner

from deepfake_detect import extras
from deepfake_detect.cli import app


@pytest.fixture
def without_fastapi(monkeypatch):
    """Make `fastapi` look uninstalled to the extras check."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        extras.importlib.util, "find_spec", lambda name: None if name == "fastapi" else real(name)
    )


def test_a_missing_extra_is_named_with_the_pip_command(without_fastapi):
    with pytest.raises(extras.MissingExtraError) as error:
        extras.require_extra("serve", "deepfake-detect serve")
    message = str(error.value)
    assert "missing: fastapi" in message
    assert "pip install 'deepfake-detect[serve]'" in message


def test_an_installed_extra_passes():
    extras.require_extra("onnx", "ONNX export")
    assert extras.import_extra("onnxruntime", "onnx", "ONNX inference").__name__ == "onnxruntime"


def test_serve_without_its_extra_exits_2_with_one_line(without_fastapi, tmp_path):
    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "[serve] extra" in lines[0]
