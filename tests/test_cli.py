"""Every subcommand on broken input ends with one line naming the problem, never a traceback:
exit 2 for bad input or options (the project's errors), 1 for a file the system could not
read or write."""

from __future__ import annotations

import inspect
import json
import shutil
from dataclasses import fields
from pathlib import Path

import click
import pytest
from media import face_clip
from typer.main import get_command
from typer.testing import CliRunner

from deepfake_detect.cli import app
from deepfake_detect.crops import CropConfig
from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.inference import Predictor
from deepfake_detect.preprocess import VideoDataProcessor
from deepfake_detect.scoring import known_rules
from deepfake_detect.train_config import TrainConfig

UNWRITABLE = "/proc/no-such-folder"  # no one, not even root, can create anything here


@pytest.fixture(scope="module")
def inputs(tiny_model: Path, tmp_path_factory) -> dict[str, str]:
    """A face clip, a model, and broken things: a model.json with a word for its threshold, a
    CSV with an unknown label, a training config that is not YAML."""
    root = tmp_path_factory.mktemp("cli")
    broken_model = shutil.copytree(tiny_model / "model", root / "broken-model")
    document = json.loads((broken_model / "model.json").read_text())
    (broken_model / "model.json").write_text(json.dumps(document | {"threshold": "high"}))
    (root / "labels.csv").write_text("path,label\nclip.mp4,maybe\n")
    (root / "train.yaml").write_text("train: [unclosed\n")
    return {"clip": str(face_clip(root / "clip.mp4")), "model": str(tiny_model),
            "broken_model": str(broken_model), "csv": str(root / "labels.csv"),
            "config": str(root / "train.yaml"), "missing": str(root / "missing"),
            "out": str(root / "out")}  # fmt: skip


BROKEN = [
    # (command line, exit code, what the line names)
    ("preprocess {missing} --output-dir {out}/p", 2, "{missing}: no videos found"),
    ("preprocess {csv} --output-dir {out}/p", 2, "label 'maybe' is not 0, 1, real or fake"),
    ("preprocess {clip} --output-dir {out}/p --dataset-format csv", 2, "{clip}: not a .csv file"),
    ("synth --output-dir {out}/s --faces {missing}.jpg", 2, "{missing}.jpg"),
    (f"synth --output-dir {UNWRITABLE}/s --videos 1", 1, UNWRITABLE),
    ("train --train {missing} --output-dir {out}/t", 2, "{missing}: no metadata.csv"),
    ("train --config {config}", 2, "{config}: cannot read config"),
    ("predict {clip} --model {missing}", 2, "{missing}: no model.json here"),
    ("predict {clip} --model {broken_model}", 2, "threshold: Input should be a valid number"),
    ("predict {clip} --model {model} --backend onnx", 2, "no model.onnx; run `deepfake-detect"),
    ("predict {clip} --model {model} --frames 2 --annotate {out}/boxes.txt", 2,
     "{out}/boxes.txt: not a video file name"),
    ("predict {clip} --model {model} --frames 2 --annotate {out}/boxes.webm", 2,
     "{out}/boxes.webm: not a video file name for H.264"),
    ("predict {clip} --model {model} --frames 2 --annotate {clip}", 2,
     "{clip}: the annotated video would overwrite its source"),
    (f"predict {{clip}} --model {{model}} --frames 2 --annotate {UNWRITABLE}/boxes.mp4", 1,
     UNWRITABLE),
    (f"predict {{clip}} --model {{model}} --frames 2 --json {UNWRITABLE}/v.json", 1, UNWRITABLE),
    ("evaluate {missing} --model {model} --output-dir {out}/e", 2, "{missing}: no videos found"),
    (f"evaluate {{csv}} --model {{model}} --output-dir {UNWRITABLE}/e", 1, UNWRITABLE),
    ("export {missing} --onnx", 2, "{missing}: no model.json here"),
    ("serve --model {missing}", 2, "{missing}: no model.json here"),
    ("serve --model {model} --host 0.0.0.0", 2, "refusing to listen on 0.0.0.0 without --token"),
    (f"demo --quick --output-dir {UNWRITABLE}/demo", 1, UNWRITABLE),
]  # fmt: skip


@pytest.mark.parametrize(("command", "code", "named"), BROKEN, ids=[c for c, _, _ in BROKEN])
def test_broken_input_ends_in_one_line_and_exit_code(inputs, command, code, named):
    result = CliRunner().invoke(app, command.format(**inputs).split())
    assert isinstance(result.exception, SystemExit), f"not caught: {result.exception!r}"
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output
    assert lines[-1].startswith("error: ") and named.format(**inputs) in lines[-1], lines[-1]
    assert sum(line.startswith("error:") for line in lines) == 1


def test_every_project_error_shares_the_one_base_class():
    from deepfake_detect import (
        artifact,
        backends,
        crops,
        dataset_layouts,
        export,
        extras,
        inference,
        models,
        preprocess,
        report,
        serve,
        synth,
        training,
        training_data,
        video,
    )

    errors = [artifact.ArtifactError, backends.BackendError, crops.CropSettingsError,
              dataset_layouts.DatasetError, export.ExportError, extras.MissingExtraError,
              inference.PredictError, models.ModelError, preprocess.PreprocessError,
              report.ReportError, serve.ServeError, synth.SynthError, training.TrainError,
              training_data.DataError, video.VideoError]  # fmt: skip
    assert all(issubclass(error, DeepfakeDetectError) for error in errors)


def _options(command: str) -> dict[str, click.Parameter]:
    return {param.name: param for param in get_command(app).commands[command].params}


def _signature_defaults(function: object) -> dict[str, object]:
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize(
    ("command", "config"), [("preprocess", CropConfig), ("train", TrainConfig)]
)
def test_cli_defaults_and_help_are_the_settings_dataclass_own(command, config):
    options = _options(command)
    shared = [field for field in fields(config) if field.name in options]
    assert len(shared) >= 10, "the command declares the dataclass's fields"
    for field in shared:
        assert options[field.name].default == field.default, field.name
        assert options[field.name].help == field.metadata["help"], field.name


@pytest.mark.parametrize("command", ["predict", "evaluate", "train"])
def test_aggregation_help_names_every_rule_that_scoring_knows(command):
    # train_config.RULES lists them by hand, to keep scikit-learn out of the CLI's start-up
    help_text = _options(command)["aggregation"].help
    assert all(rule in help_text for rule in known_rules()), help_text


@pytest.mark.parametrize(
    ("command", "api"),
    [("predict", Predictor), ("evaluate", Predictor), ("preprocess", VideoDataProcessor)],
)
def test_cli_defaults_equal_the_python_api_defaults(command, api):
    options, defaults = _options(command), _signature_defaults(api)
    shared = sorted(set(options) & set(defaults))
    assert len(shared) >= 5
    for name in shared:
        if name != "every" or command == "predict":  # evaluate samples exactly --frames
            assert options[name].default == defaults[name], name
