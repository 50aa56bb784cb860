"""The model artifact `predict` loads: safetensors weights plus one JSON file.

The JSON carries everything needed to use the weights the way they were trained: the
architecture and its normalisation, the stage-1 parameters (so faces are cropped the same
way), the decision threshold and calibration temperature chosen on validation, the
validation metrics and the library versions. Nothing in it is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from deepfake_detect import __version__
from deepfake_detect.crops import CropConfig
from deepfake_detect.files import atomic_path
from deepfake_detect.models import ModelConfig, build_network
from deepfake_detect.schema import check_field_types

FORMAT = "deepfake-detect-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"


class ArtifactError(ValueError):
    """A file that is not a usable model artifact; one line naming it and the problem."""


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        """The inverse of `dataclasses.asdict`, also after a JSON round trip."""
        return cls(**(data | {"files": [SourceFile(**f) for f in data.get("files", [])]}))


@dataclass
class ModelArtifact:
    """What the JSON file of an artifact holds (`provenance` only for imported models)."""

    model: ModelConfig
    preprocessing: CropConfig = field(default_factory=CropConfig)
    threshold: float = 0.5
    temperature: float = 1.0
    aggregation: str = "mean"
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    provenance: Provenance | None = None

    def to_json(self) -> str:
        body = asdict(self) | {"model": self.model.to_dict()}  # preprocessing: a plain mapping
        header = {"format": FORMAT, "format_version": FORMAT_VERSION,
                  "created": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        return json.dumps(header | body, indent=2, default=str) + "\n"


def library_versions() -> dict[str, str]:
    import lightning
    import timm

    return {"deepfake_detect": __version__, "torch": torch.__version__,
            "lightning": lightning.__version__, "timm": timm.__version__}  # fmt: skip


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
    """Parse and check an artifact's JSON; return it and the weights path beside it."""
    config_path = _config_path(path)
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{config_path}: not valid JSON ({error})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ArtifactError(f"{config_path}: not a deepfake-detect model artifact")
    if raw.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(
            f"{config_path}: format version {raw['format_version']} is newer than this "
            f"deepfake-detect understands ({FORMAT_VERSION}); upgrade deepfake-detect"
        )
    names = ModelArtifact.__dataclass_fields__.keys()
    fields = {k: v for k, v in raw.items() if k in names}
    try:
        fields["model"] = ModelConfig.from_dict(fields["model"])
        fields["preprocessing"] = CropConfig.from_dict(fields.get("preprocessing") or {})
        if fields.get("provenance") is not None:
            fields["provenance"] = Provenance.from_dict(fields["provenance"])
        artifact = ModelArtifact(**fields)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ArtifactError(f"{config_path}: incomplete artifact ({error})") from None
    return artifact, config_path.parent / WEIGHTS_FILE


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
