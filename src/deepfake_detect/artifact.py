"""The model artifact `predict` loads: safetensors weights plus one JSON file.

The JSON carries everything needed to use the weights the way they were trained: the
architecture and its normalisation, the stage-1 parameters (so faces are cropped the same
way), the decision threshold and calibration temperature chosen on validation, the
validation metrics and the library versions. Nothing in it is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any, TypeVar

import torch
from pydantic import AfterValidator, Field, TypeAdapter, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from deepfake_detect import __version__
from deepfake_detect.crops import CropConfig
from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.files import atomic_path
from deepfake_detect.metrics import AGGREGATIONS, FRAME_RULES
from deepfake_detect.models import ModelConfig, build_network
from deepfake_detect.schema import check_field_types

FORMAT = "deepfake-detect-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"


SHORT_HASH = 12
Schema = TypeVar("Schema")


class ArtifactError(DeepfakeDetectError, ValueError):
    """A file that is not a usable model artifact; one line naming it and the problem."""


def _known_aggregation(name: str) -> str:
    if name not in AGGREGATIONS | FRAME_RULES:
        known = ", ".join([*AGGREGATIONS, *FRAME_RULES])
        raise ValueError(f"unknown aggregation {name!r}; known: {known}")
    return name


def _ordered_band(band: tuple[float, float] | None) -> tuple[float, float] | None:
    if band is not None and not 0 < band[0] <= band[1] < 1:
        raise ValueError(f"must be two probabilities low <= high inside (0, 1), got {list(band)}")
    return band


Probability = Annotated[float, Field(allow_inf_nan=False)]


@dataclass(frozen=True)
class ArtifactHeader:
    """The keys that say what a model.json is: the format's name and version."""

    format: str
    format_version: Annotated[int, Field(ge=1)]


@dataclass
class SourceFile:
    """A file an imported model was converted from, as its authors published it."""

    name: str
    sha256: str
    size: int

    def __post_init__(self) -> None:
        check_field_types(self)


@dataclass
class Provenance:
    """Where an imported model comes from, and how far this pipeline matches its authors'.

    Attributes:
        source: the published detector (paper, authors, year).
        url: where its authors publish code and weights.
        files: the checkpoint files it was converted from, with their SHA-256.
        licence: the terms its authors attach to the weights, in one line.
        citation: the paper to cite.
        reported: the accuracy its authors report (theirs, not measured here).
        authors_crop: how the authors find and crop faces (detector, margin, shape...).
        differences: what this project's pipeline still does differently.
    """

    source: str
    url: str
    files: list[SourceFile]
    licence: str
    citation: str
    reported: str = ""
    authors_crop: dict[str, str] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_field_types(self)


@dataclass
class ModelArtifact:
    """What the JSON file of an artifact holds (`provenance` only for imported models).

    `aggregation` is the video rule (scoring.py) that `threshold`, `temperature` and
    `uncertain_band` were fitted under; `uncertain_band` (low, high): a video whose probability
    lies strictly between gets the verdict UNCERTAIN (absent in older files: no band).
    `warnings` says what went wrong in fitting them (a temperature at its bound).

    The field types are the file's schema: `read_artifact` checks every field against its type
    and constraints (nested dataclasses included), so a typed field added here is checked too.
    """

    model: ModelConfig
    preprocessing: CropConfig = field(default_factory=CropConfig)
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    temperature: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    aggregation: Annotated[str, AfterValidator(_known_aggregation)] = "mean"
    uncertain_band: Annotated[
        tuple[Probability, Probability] | None, AfterValidator(_ordered_band)
    ] = None
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    provenance: Provenance | None = None

    def to_json(self) -> str:
        body = asdict(self) | {"model": self.model.to_dict()}  # preprocessing: a plain mapping
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        return json.dumps(header | body, indent=2, default=str) + "\n"


def library_versions() -> dict[str, str]:
    import lightning
    import timm

    return {
        "deepfake_detect": __version__,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "timm": timm.__version__,
    }


def save_artifact(directory: Path, network: torch.nn.Module, artifact: ModelArtifact) -> Path:
    """Write model.safetensors and model.json (each to a temporary name, then renamed)."""
    weights = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(weights, str(tmp))
    with atomic_path(directory / CONFIG_FILE) as tmp:
        tmp.write_text(artifact.to_json(), encoding="utf-8")
    return directory / CONFIG_FILE


def _config_path(path: Path) -> Path:
    """Accept the artifact folder, its model.json, a training run folder or its weights."""
    for candidate in (path, path / CONFIG_FILE, path / "model" / CONFIG_FILE):
        if candidate.is_file() and candidate.suffix == ".json":
            return candidate
    if path.suffix == ".safetensors" and (path.parent / CONFIG_FILE).is_file():
        return path.parent / CONFIG_FILE
    if path.suffix in {".ckpt", ".pt", ".pth", ".pkl", ".bin"}:
        raise ArtifactError(
            f"{path}: a pickle-based file is not a model artifact and is never unpickled; "
            f"give the run folder or its {CONFIG_FILE}"
        )
    raise ArtifactError(f"{path}: no {CONFIG_FILE} here; not a deepfake-detect model artifact")


def read_artifact(path: Path) -> tuple[ModelArtifact, Path]:
    """Parse an artifact's JSON and check all of it against the schema, once; return it and
    the weights path beside it.

    Raises:
        ArtifactError: not an artifact, a newer format, or a field of the wrong type or out of
            range (the line names the field and what was expected).
    """
    config_path = _config_path(path)
    try:
        text = config_path.read_text(encoding="utf-8")
        raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{config_path}: not valid JSON ({error})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ArtifactError(f"{config_path}: not a deepfake-detect model artifact")
    header = _validated(ArtifactHeader, text, config_path)
    if header.format_version > FORMAT_VERSION:
        raise ArtifactError(
            f"{config_path}: format version {header.format_version} is newer than this "
            f"deepfake-detect understands ({FORMAT_VERSION}); upgrade deepfake-detect"
        )
    return _validated(ModelArtifact, text, config_path), config_path.parent / WEIGHTS_FILE


@cache
def _schema(kind: type[Schema]) -> TypeAdapter[Schema]:
    return TypeAdapter(kind)


def _validated(kind: type[Schema], text: str, config_path: Path) -> Schema:
    """`text` as a `kind`, strictly typed (no "64" for 64), or one line on the first problem."""
    try:
        return _schema(kind).validate_json(text, strict=True)
    except ValidationError as error:
        problems = error.errors()
        first = problems[0]
        where = ".".join(str(part) for part in first["loc"])
        what = first["msg"].removeprefix("Value error, ")
        if first["type"] not in {"missing", "value_error"}:
            what += f", got {repr(first['input'])[:80]}"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ArtifactError(f"{config_path}: {where}: {what}{more}") from None


def short_digest(path: Path) -> str:
    """The first hex digits of a file's SHA-256: names a model's weights without their path."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()[:SHORT_HASH]


def load_artifact(path: Path) -> tuple[torch.nn.Module, ModelArtifact]:
    """Build the network an artifact describes and load its weights (eval mode, on CPU)."""
    artifact, weights_path = read_artifact(path)
    if not weights_path.is_file():
        raise ArtifactError(f"{weights_path}: weights file missing")
    network = build_network(artifact.model)
    try:
        state = load_file(str(weights_path))
        network.load_state_dict(state)
    except (SafetensorError, RuntimeError) as error:
        first = str(error).splitlines()[0]
        message = f"{weights_path}: weights do not fit {artifact.model.name} ({first})"
        raise ArtifactError(message) from None
    return network.eval(), artifact
