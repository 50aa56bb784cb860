"""Published deepfake detectors, and their checkpoints converted into this project's artifact.

Each detector is described once in `PUBLISHED`: its authors, licence, citation, the accuracy
they report, how they crop faces, the stage-1 parameters that follow that crop as closely as
this project's detectors allow, and a converter that renames the authors' weights onto the
network `models.build_network` makes for it. The converted weights are loaded strictly, so
a checkpoint that does not fit is refused, never half-loaded. Checkpoints are read by
`checkpoints.read_checkpoint` (never unpickled in full); the artifact holds no pickle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from deepfake_detect.artifact import (
    ModelArtifact,
    Provenance,
    SourceFile,
    library_versions,
    save_artifact,
)
from deepfake_detect.checkpoints import read_checkpoint
from deepfake_detect.crops import CropConfig
from deepfake_detect.faces import DETECTORS
from deepfake_detect.files import file_sha256
from deepfake_detect.models import ModelConfig, build_network

StateDict = dict[str, torch.Tensor]
Converter = Callable[[Sequence[Any], Sequence[Path]], tuple[ModelConfig, StateDict]]

# This project's detectors, closest to the authors' CNN detectors (RetinaFace, MTCNN) first.
STAND_IN_DETECTORS = ("yunet", "dlib")
NO_NORMALISATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


class ConversionError(ValueError):
    """A checkpoint that does not convert; one line naming the file and what is wrong."""


@dataclass(frozen=True)
class PublishedDetector:
    """A published detector: facts about it, and how to convert its checkpoints.

    Attributes:
        source: the detector (paper, authors, year).
        url: where its authors publish code and weights.
        licence: the terms of its weights, in one line.
        citation: the paper to cite.
        reported: the accuracy its authors report.
        authors_crop: how its authors find and crop faces.
        differences: what this pipeline does differently; `{detector}` is replaced by the
            stand-in face detector's name.
        preprocessing: stage-1 parameters that follow the authors' crop.
        aggregation: the authors' video rule (metrics.AGGREGATIONS or FRAME_RULES).
        convert: checkpoints (as read) and their paths -> model config and state dict.
        ensemble: several checkpoints make one ensemble artifact.
    """

    source: str
    url: str
    licence: str
    citation: str
    reported: str
    authors_crop: dict[str, str]
    differences: tuple[str, ...]
    preprocessing: CropConfig
    aggregation: str
    convert: Converter
    ensemble: bool = False


# --- reading the authors' layouts -----------------------------------------------------------------


def _state_dict(checkpoint: Any, entry: str, path: Path) -> StateDict:
    """The state dict under `entry` (or the checkpoint itself when it is one), with the
    `module.` prefix of (Distributed)DataParallel removed."""
    inside = isinstance(checkpoint, dict) and entry in checkpoint
    state = checkpoint[entry] if inside else checkpoint
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(value, torch.Tensor) for value in state.values())
    ):
        found = ", ".join(map(str, list(state)[:5])) if isinstance(state, dict) else type(state)
        raise ConversionError(
            f"{path}: expected a state dict under {entry!r} or as the whole file; found {found}"
        )
    return {key.removeprefix("module."): value for key, value in state.items()}


def _take(state: StateDict, key: str, path: Path) -> torch.Tensor:
    if key not in state:
        raise ConversionError(f"{path}: no {key!r}: not a checkpoint of this detector")
    return state.pop(key)


# --- Self-Blended Images: efficientnet_pytorch's EfficientNet-B4 with 2 outputs -------------------

SBI_ARCHITECTURE = "tf_efficientnet_b4"
# efficientnet_pytorch's names -> timm's, for the first (depthwise-separable) block type and
# for inverted residual blocks (those with an expansion convolution).
_EFFNET_TOP = {
    "_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
    "_fc": "classifier",
}  # fmt: skip
_SQUEEZE_EXCITE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_EFFNET_SEPARABLE = _SQUEEZE_EXCITE | {
    "_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
}  # fmt: skip
_EFFNET_INVERTED = _SQUEEZE_EXCITE | {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}  # fmt: skip


def _stage_depths(architecture: str) -> list[int]:
    """Blocks per stage of a timm EfficientNet, read from a weightless (meta) instance."""
    with torch.device("meta"):
        return [len(stage) for stage in timm.create_model(architecture).blocks]


def efficientnet_pytorch_to_timm(state: StateDict, architecture: str) -> StateDict:
    """Rename an efficientnet_pytorch EfficientNet's weights to the timm model's names.

    efficientnet_pytorch numbers its blocks 0..N-1 (`_blocks.7._bn1`); timm nests them by
    stage (`blocks.2.1.bn2`), with the same blocks, layers, TF "same" padding and epsilon.
    """
    where = [(stage, index) for stage, depth in enumerate(_stage_depths(architecture))
             for index in range(depth)]  # fmt: skip
    renamed = {}
    for key, value in state.items():
        module, _, rest = key.partition(".")
        if module != "_blocks":
            renamed[f"{_EFFNET_TOP.get(module, module)}.{rest}"] = value
            continue
        number, _, rest = rest.partition(".")
        layer, _, tensor = rest.partition(".")
        names = (
            _EFFNET_INVERTED
            if f"_blocks.{number}._expand_conv.weight" in state
            else _EFFNET_SEPARABLE
        )
        stage, index = where[int(number)] if int(number) < len(where) else (-1, -1)
        renamed[f"blocks.{stage}.{index}.{names.get(layer, layer)}.{tensor}"] = value
    return renamed


def _convert_sbi(
    checkpoints: Sequence[Any], paths: Sequence[Path]
) -> tuple[ModelConfig, StateDict]:
    """SBI's `{"model": Detector.state_dict()}`, Detector holding the network as `net`.

    The two outputs fold into one logit z1 - z0, so that sigmoid gives softmax's P(fake).
    """
    path = paths[0]
    state = {
        k.removeprefix("net."): v for k, v in _state_dict(checkpoints[0], "model", path).items()
    }
    state = efficientnet_pytorch_to_timm(state, SBI_ARCHITECTURE)
    weight, bias = _take(state, "classifier.weight", path), _take(state, "classifier.bias", path)
    if weight.shape[0] != 2:
        raise ConversionError(f"{path}: the classifier has {weight.shape[0]} outputs, SBI's has 2")
    state |= {"classifier.weight": weight[1:] - weight[:1], "classifier.bias": bias[1:] - bias[:1]}
    mean, std = NO_NORMALISATION
    config = ModelConfig(SBI_ARCHITECTURE, 380, mean, std, drop_rate=0.4)
    return config, {f"backbone.{key}": value for key, value in state.items()}


# --- DFDC 1st place: timm tf_efficientnet_*_ns encoder, average pooling, Linear(features, 1) ------

# The classifier's width says which EfficientNet the encoder is (the winner's weights are B7).
DFDC_ENCODERS = {
    1408: "tf_efficientnet_b2", 1536: "tf_efficientnet_b3", 1792: "tf_efficientnet_b4",
    2048: "tf_efficientnet_b5", 2304: "tf_efficientnet_b6", 2560: "tf_efficientnet_b7",
}  # fmt: skip


def _dfdc_member(checkpoint: Any, path: Path) -> tuple[str, StateDict]:
    """One DeepFakeClassifier checkpoint: its encoder and its weights under timm's names.

    The encoder's own ImageNet classifier (encoder.classifier) is unused by the authors'
    forward (forward_features, pooling, dropout, fc) and is left out.
    """
    state = _state_dict(checkpoint, "state_dict", path)
    weight, bias = _take(state, "fc.weight", path), _take(state, "fc.bias", path)
    encoder = DFDC_ENCODERS.get(weight.shape[-1])
    if encoder is None or weight.shape[0] != 1:
        raise ConversionError(
            f"{path}: fc is {tuple(weight.shape)}, not Linear(n, 1) of an EfficientNet"
        )
    stray = [key for key in state if not key.startswith("encoder.")]
    if stray:
        raise ConversionError(f"{path}: unexpected weights {', '.join(stray[:3])}")
    member = {f"backbone.{key.removeprefix('encoder.')}": value for key, value in state.items()
              if not key.startswith("encoder.classifier.")}  # fmt: skip
    return encoder, member | {
        "backbone.classifier.weight": weight,
        "backbone.classifier.bias": bias,
    }


def _convert_dfdc(
    checkpoints: Sequence[Any], paths: Sequence[Path]
) -> tuple[ModelConfig, StateDict]:
    """One or several checkpoints of one encoder; several become a mean-probability ensemble."""
    members = [_dfdc_member(c, p) for c, p in zip(checkpoints, paths, strict=True)]
    encoders = {encoder for encoder, _ in members}
    if len(encoders) > 1:
        raise ConversionError(
            f"the checkpoints mix encoders ({', '.join(sorted(encoders))}); an ensemble needs one"
        )
    mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    config = ModelConfig(encoders.pop(), 380, mean, std, drop_rate=0.0, members=len(members))
    if len(members) == 1:
        return config, members[0][1]
    return config, {f"members.{i}.{key}": value for i, (_, state) in enumerate(members)
                    for key, value in state.items()}  # fmt: skip


PUBLISHED: dict[str, PublishedDetector] = {
    "sbi": PublishedDetector(
        source="Self-Blended Images (Shiohara and Yamasaki, CVPR 2022), EfficientNet-B4",
        url="https://github.com/mapooon/SelfBlendedImages",
        licence=(
            "non-commercial research use only (the authors' licence agreement); commercial use "
            "needs a licence from the authors"
        ),
        citation=(
            "Shiohara, K., Yamasaki, T. (2022), Detecting Deepfakes with Self-Blended Images, "
            "CVPR, 18720-18729"
        ),
        reported=(
            "video AUC of the published weights, trained on FF++ real videos only (authors' "
            "figures): Celeb-DF v2 93.82%, DFD 97.87%, DFDC 73.01%, DFDC-P 85.70%, FFIW 84.52%"
        ),
        authors_crop={
            "detector": "RetinaFace (resnet50_2020-07-20, max_size 2048)",
            "margin": "1/8 of the box's width left and right, 1/8 of its height above and below",
            "shape": "that rectangle, clipped to the frame, stretched to 380x380 (bilinear)",
            "alignment": "none",
            "frames": "32, evenly spaced",
            "faces": "every face at least half as large as the frame's largest",
            "input": "RGB scaled to [0, 1], no mean or std",
        },
        differences=(
            "faces are found by this project's {detector} detector, not RetinaFace; its boxes "
            "are placed differently, so crops frame the face a little differently",
            "a frame's faces smaller than half its largest are not dropped; instead face tracks "
            "seen in fewer than a quarter of the main person's frames are left out of the score",
            "efficientnet_pytorch's EfficientNet-B4 runs as timm's tf_efficientnet_b4 (same "
            "weights, TF 'same' padding); its 2 outputs are folded into one logit z1 - z0",
        ),
        preprocessing=CropConfig(
            frames_per_video=32, crop_size=380, margin=0.125, crop_shape="stretch"
        ),
        aggregation="max_face_mean",
        convert=_convert_sbi,
    ),
    "dfdc": PublishedDetector(
        source="DFDC 1st place (Seferbekov, 2020), EfficientNet-B7 noisy-student ensemble",
        url="https://github.com/selimsef/dfdc_deepfake_challenge",
        licence=(
            "MIT (the repository's licence); the weights were trained on DFDC, whose terms "
            "allow non-commercial research use"
        ),
        citation=(
            "Seferbekov, S. (2020), DFDC 1st place solution, "
            "github.com/selimsef/dfdc_deepfake_challenge; Dolhansky, B. et al. (2020), The "
            "DeepFake Detection Challenge (DFDC) Dataset, arXiv:2006.07397"
        ),
        reported=(
            "private leaderboard log loss 0.42798 on the DFDC test videos for the 7-model "
            "ensemble (Kaggle's figure, 1st place)"
        ),
        authors_crop={
            "detector": "MTCNN (facenet-pytorch, thresholds 0.7, 0.8, 0.8) on frames at half size",
            "margin": "1/3 of the box's width and height on each side",
            "shape": (
                "that rectangle, clipped to the frame, longer side resized to 380 (area down, "
                "bicubic up), centred on black"
            ),
            "alignment": "none",
            "frames": "32, evenly spaced",
            "faces": "every face found",
            "input": "ImageNet mean and std",
        },
        differences=(
            "faces are found by this project's {detector} detector, not MTCNN; its boxes are "
            "placed differently, so crops frame the face a little differently",
            "the ensemble averages its members' frame probabilities and applies the confident "
            "rule once; the authors apply it to each member's and average the results",
            "the rule is applied per person (face track), and the video takes the most "
            "suspicious person; the authors pool every face of the video",
        ),
        preprocessing=CropConfig(
            frames_per_video=32, crop_size=380, margin=1 / 3, crop_shape="pad"
        ),
        aggregation="dfdc_confident",
        convert=_convert_dfdc,
        ensemble=True,
    ),
}


# --- import ---------------------------------------------------------------------------------------


def stand_in_detector() -> str:
    """The available face detector closest to the published ones (CNNs with wider boxes)."""
    return next(name for name in STAND_IN_DETECTORS if name in DETECTORS)


def import_detector(
    name: str, files: Sequence[Path], output_dir: Path, face_detector: str | None = None
) -> Path:
    """Convert a published detector's checkpoint(s) into a model artifact in `output_dir`.

    Args:
        name: a key of `PUBLISHED`.
        files: the checkpoint files as the authors publish them (several for an ensemble).
        output_dir: receives model.safetensors and model.json.
        face_detector: the stage-1 detector to use (default: `stand_in_detector()`).

    Returns:
        The path of the artifact's model.json.

    Raises:
        ConversionError: unknown name, wrong number of files, or weights that do not fit.
        checkpoints.CheckpointError: a file that cannot be read safely.
    """
    if name not in PUBLISHED:
        raise ConversionError(f"unknown published detector {name!r}; known: {', '.join(PUBLISHED)}")
    detector = PUBLISHED[name]
    if not files:
        raise ConversionError(f"{name}: give the checkpoint file(s) to convert")
    if len(files) > 1 and not detector.ensemble:
        raise ConversionError(f"{name}: give one checkpoint file, not {len(files)}")
    face_detector = face_detector or stand_in_detector()
    if face_detector not in DETECTORS:
        raise ConversionError(
            f"unknown face detector {face_detector!r}; known: {', '.join(DETECTORS)}"
        )
    paths = [Path(f) for f in files]
    config, state = detector.convert([read_checkpoint(p) for p in paths], paths)
    network = build_network(config)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = str(error).split("\n\t")[1] if "\n\t" in str(error) else str(error)
        raise ConversionError(
            f"{paths[0]}: weights do not fit {config.name} ({detail.strip()[:300]})"
        ) from None
    artifact = ModelArtifact(
        model=config,
        preprocessing=asdict(replace(detector.preprocessing, face_detector=face_detector)),
        aggregation=detector.aggregation,
        versions=library_versions(),
        provenance=Provenance(
            source=detector.source, url=detector.url, licence=detector.licence,
            citation=detector.citation, reported=detector.reported,
            files=[SourceFile(p.name, file_sha256(p), p.stat().st_size) for p in paths],
            authors_crop=detector.authors_crop,
            differences=[d.format(detector=face_detector) for d in detector.differences],
        ),
    )  # fmt: skip
    return save_artifact(Path(output_dir), network.eval(), artifact)
