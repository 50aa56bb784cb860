"""The model artifact's JSON schema: every field checked once, on load, with one clear line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from deepfake_detect.artifact import ArtifactError, read_artifact, short_digest
from deepfake_detect.crops import CropConfig
from deepfake_detect.models import ModelConfig


@pytest.fixture
def artifact_copy(tiny_model: Path, tmp_path: Path) -> Callable[[Callable[[dict], None]], Path]:
    """Copies tiny_model's model.json after an edit, as a hand-editing user would."""

    def edited(edit: Callable[[dict], None]) -> Path:
        document = json.loads((tiny_model / "model" / "model.json").read_text())
        edit(document)
        (tmp_path / "model.json").write_text(json.dumps(document))
        return tmp_path / "model.json"

    return edited


def test_a_trained_artifact_reads_back_typed(tiny_model: Path):
    artifact, weights = read_artifact(tiny_model)
    assert isinstance(artifact.model, ModelConfig) and artifact.model.mean == (0.5, 0.5, 0.5)
    assert isinstance(artifact.preprocessing, CropConfig) and artifact.preprocessing.crop_size == 64
    assert 0 < artifact.threshold < 1 and artifact.temperature > 0
    assert weights == tiny_model / "model" / "model.safetensors"
    assert len(short_digest(weights)) == 12


def set_in(*keys: str, value: object) -> Callable[[dict], None]:
    def edit(document: dict) -> None:
        *parents, last = keys
        for key in parents:
            document = document[key]
        document[last] = value

    return edit


WRONG_TYPE = "Input should be a valid"
HAND_EDITS = [
    ("format_version", set_in("format_version", value="2"), f"{WRONG_TYPE} integer, got '2'"),
    ("model.input_size", set_in("model", "input_size", value="abc"), f"{WRONG_TYPE} integer"),
    (
        "model.mean",
        set_in("model", "mean", value=[0.5, 0.5]),
        "expected 3 numbers, one per RGB channel, got [0.5, 0.5]",
    ),
    ("model.std.1", set_in("model", "std", value=[0.5, 0, 0.5]), "Input should be greater than 0"),
    ("threshold", set_in("threshold", value="high"), f"{WRONG_TYPE} number, got 'high'"),
    ("threshold", set_in("threshold", value=1), "Input should be less than 1, got 1"),
    ("temperature", set_in("temperature", value=0), "Input should be greater than 0, got 0"),
    ("temperature", set_in("temperature", value=float("inf")), "Input should be a finite number"),
    (
        "preprocessing.crop_size",
        set_in("preprocessing", "crop_size", value="64"),
        f"{WRONG_TYPE} integer, got '64'",
    ),
    (
        "preprocessing",
        set_in("preprocessing", "margin", value=5),
        "margin must be between 0 and 2, got 5",
    ),
    ("model.name", set_in("model", "name", value="mesoX"), "unknown model 'mesoX': local models"),
    ("aggregation", set_in("aggregation", value="sum"), "unknown aggregation 'sum'; known: mean"),
    ("model", set_in("model", value=[1]), "Input should be an object, got [1]"),
    ("model", lambda document: document.pop("model"), "Field required"),
]


@pytest.mark.parametrize(("field", "edit", "message"), HAND_EDITS)
def test_a_hand_edited_field_of_the_wrong_type_or_range_is_one_line_naming_it(
    artifact_copy, field, edit, message
):
    path = artifact_copy(edit)
    with pytest.raises(ArtifactError) as caught:
        read_artifact(path)
    assert str(caught.value).startswith(f"{path}: {field}: {message}")
    assert "\n" not in str(caught.value)


def test_several_problems_are_counted_in_the_one_line(artifact_copy):
    def two_problems(document: dict) -> None:
        document["threshold"], document["temperature"] = "high", -1

    with pytest.raises(ArtifactError, match=r"threshold: .* \(and 1 more\)$"):
        read_artifact(artifact_copy(two_problems))


def test_a_newer_format_asks_for_an_upgrade_and_unknown_keys_are_ignored(artifact_copy):
    with pytest.raises(
        ArtifactError, match=r"format version 9 is newer .* upgrade deepfake-detect"
    ):
        read_artifact(artifact_copy(set_in("format_version", value=9)))
    artifact, _ = read_artifact(artifact_copy(set_in("added_by_a_later_version", value={"x": 1})))
    assert artifact.model.name == "meso4"


def test_an_artifact_without_a_threshold_or_temperature_takes_the_defaults(artifact_copy):
    artifact, _ = read_artifact(artifact_copy(lambda d: [d.pop("threshold"), d.pop("temperature")]))
    assert (artifact.threshold, artifact.temperature) == (0.5, 1.0)


def test_the_weights_file_is_named_by_its_hash_not_its_path(tiny_model, tmp_path):
    copy = shutil.copytree(tiny_model / "model", tmp_path / "elsewhere")
    assert short_digest(copy / "model.safetensors") == short_digest(
        tiny_model / "model" / "model.safetensors"
    )
