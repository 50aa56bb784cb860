"""Published deepfake detectors, and their checkpoints converted into this project's artifact.

Each detector is described once in `PUBLISHED`: its authors, licence, citation, the accuracy
they report, how they crop faces, the stage-1 parameters that follow that crop as closely as
this project's detectors allow, and a converter that renames the authors' weights onto the
network `models.build_network` makes for it. The converted weights are loaded strictly, so
a checkpoint that does not fit is refused, never half-loaded. Checkpoints are read by
`checkpoints.read_checkpoint` (never unpickled in full); the artifact holds no pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
from deepfake_detect.clip_models import CLIP_MEAN, CLIP_STD, CLIP_VISION_MODELS, GEND_MODELS
from deepfake_detect.crops import CropConfig
from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.faces import DETECTORS
from deepfake_detect.files import file_sha256
from deepfake_detect.models import ModelConfig, build_network
from deepfake_detect.weight_names import (
    StateDict,
    efficientnet_pytorch_to_timm,
    hf_clip_vision_to_timm,
)

Converter = Callable[[Sequence[Path]], tuple[ModelConfig, StateDict]]

# This project's detectors, closest to the authors' CNN detectors (RetinaFace, MTCNN) first.
STAND_IN_DETECTORS = ("yunet", "dlib")
NO_NORMALISATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


class ConversionError(DeepfakeDetectError):
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
        convert: the checkpoint files -> model config and state dict.
        files: the file names it reads when given a folder (glob patterns).
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
    files: tuple[str, ...] = ("*",)


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


def _convert_sbi(paths: Sequence[Path]) -> tuple[ModelConfig, StateDict]:
    """SBI's `{"model": Detector.state_dict()}`, Detector holding the network as `net`.

    The two outputs fold into one logit z1 - z0, so that sigmoid gives softmax's P(fake).
    """
    if len(paths) != 1:
        raise ConversionError(f"sbi: give one checkpoint file, not {len(paths)}")
    path = paths[0]
    state = _state_dict(read_checkpoint(path), "model", path)
    state = {key.removeprefix("net."): value for key, value in state.items()}
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
    member = {
        f"backbone.{key.removeprefix('encoder.')}": value
        for key, value in state.items()
        if not key.startswith("encoder.classifier.")
    }
    return encoder, member | {
        "backbone.classifier.weight": weight,
        "backbone.classifier.bias": bias,
    }


def _convert_dfdc(paths: Sequence[Path]) -> tuple[ModelConfig, StateDict]:
    """One or several checkpoints of one encoder; several become a mean-probability ensemble."""
    members = [_dfdc_member(read_checkpoint(path), path) for path in paths]
    encoders = {encoder for encoder, _ in members}
    if len(encoders) > 1:
        raise ConversionError(
            f"the checkpoints mix encoders ({', '.join(sorted(encoders))}); an ensemble needs one"
        )
    mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    config = ModelConfig(encoders.pop(), 380, mean, std, drop_rate=0.0, members=len(members))
    if len(members) == 1:
        return config, members[0][1]
    return config, {
        f"members.{i}.{key}": value
        for i, (_, state) in enumerate(members)
        for key, value in state.items()
    }


# --- GenD (WACV 2026): Hugging Face CLIP vision encoder, linear head on its class token ---------


def _gend_files(paths: Sequence[Path]) -> tuple[dict[str, Any], Path]:
    """GenD's config.json (backbone and head) and its model.safetensors."""
    configs = [p for p in paths if p.suffix == ".json"]
    weights = [p for p in paths if p.suffix == ".safetensors"]
    if len(configs) != 1 or len(weights) != 1:
        names = ", ".join(p.name for p in paths)
        raise ConversionError(f"GenD needs its config.json and model.safetensors (got {names})")
    try:
        settings = json.loads(configs[0].read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise ConversionError(f"{configs[0]}: not a readable JSON file ({error})") from None
    if not isinstance(settings, dict):
        raise ConversionError(f"{configs[0]}: expected a JSON object with backbone and head")
    return settings, weights[0]


def _convert_gend(paths: Sequence[Path]) -> tuple[ModelConfig, StateDict]:
    """GenD's Hugging Face model: `feature_extractor.vision_model.*` (CLIP's vision encoder),
    `model.linear` (2 outputs; LinearNorm applies it to the L2-normalised class token)."""
    settings, path = _gend_files(paths)
    backbone, head = settings.get("backbone"), settings.get("head")
    architecture = CLIP_VISION_MODELS.get(backbone)
    if architecture is None or head not in ("linear", "LinearNorm"):
        known = ", ".join(CLIP_VISION_MODELS)
        raise ConversionError(
            f"{paths[0].parent}: GenD with backbone {backbone!r} and head {head!r} is not "
            f"supported (backbones: {known}; heads: linear, LinearNorm)"
        )
    state = _state_dict(read_checkpoint(path), "state_dict", path)
    weight, bias = (
        _take(state, "model.linear.weight", path),
        _take(state, "model.linear.bias", path),
    )
    prefix = "feature_extractor.vision_model."
    vision = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    try:
        encoder = hf_clip_vision_to_timm(vision)
    except KeyError as missing:
        raise ConversionError(f"{path}: no {missing} in the CLIP vision encoder") from None
    logit = {"weight": weight[1:] - weight[:1], "bias": bias[1:] - bias[:1]}
    if head == "LinearNorm":
        name = next(name for name, arch in GEND_MODELS.items() if arch == architecture)
        weights = {f"head.{key}": value for key, value in logit.items()}
    else:
        name, weights = (
            architecture,
            {f"backbone.head.{key}": value for key, value in logit.items()},
        )
    config = ModelConfig(name, 224, CLIP_MEAN, CLIP_STD, drop_rate=0.0)
    return config, weights | {f"backbone.{key}": value for key, value in encoder.items()}


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
    ),
    "gend": PublishedDetector(
        source=(
            "GenD (Yermakov, Cech, Matas and Fritz, WACV 2026): CLIP ViT-L/14 with its "
            "LayerNorms tuned and a linear head on the L2-normalised class token"
        ),
        url="https://github.com/yermandy/GenD (weights: huggingface.co/yermandy/GenD_CLIP_L_14)",
        licence=(
            "none stated in github.com/yermandy/GenD when this importer was written: ask the "
            "authors before any use beyond research; trained on FF++, whose terms allow "
            "research use only"
        ),
        citation=(
            "Yermakov, A., Cech, J., Matas, J., Fritz, M. (2026), Deepfake Detection that "
            "Generalizes Across Benchmarks, WACV; arXiv:2508.06248"
        ),
        reported=(
            "state-of-the-art average cross-dataset AUROC over 14 benchmarks (2019-2025) when "
            "trained on FF++: the per-dataset figures are in the paper's tables"
        ),
        authors_crop={
            "detector": "RetinaFace (the repository's src/retinaface.py), the largest face",
            "alignment": (
                "5 landmarks (eyes, nose tip, mouth corners) mapped by a similarity transform "
                "to fixed points, the eyes at 46% of the height"
            ),
            "margin": "scale 1.3 around the aligned face",
            "shape": "square; CLIP's processor resizes it to 224 (bicubic) and crops the centre",
            "frames": "32 per video",
            "input": "CLIP's mean and std",
        },
        differences=(
            "faces are found by this project's {detector} detector and cropped as a square "
            "around its box with margin 0.3 (about the framing of the authors' scale 1.3), "
            "without the authors' alignment on 5 landmarks",
            "every face is scored, per person, and the video takes the most suspicious person; "
            "the authors keep the largest face of each frame",
            "crops are resized with area interpolation, not CLIP's bicubic",
        ),
        preprocessing=CropConfig(frames_per_video=32, crop_size=224, margin=0.3),
        aggregation="mean",
        convert=_convert_gend,
        files=("config.json", "*.safetensors"),
    ),
}


# --- import ---------------------------------------------------------------------------------------


def stand_in_detector() -> str:
    """The available face detector closest to the published ones (CNNs with wider boxes)."""
    return next(name for name in STAND_IN_DETECTORS if name in DETECTORS)


def checkpoint_files(files: Sequence[Path], patterns: Sequence[str] = ("*",)) -> list[Path]:
    """The files given, a folder standing for its (non-hidden) files matching the patterns."""
    paths = []
    for given in map(Path, files):
        if not given.is_dir():
            paths.append(given)
            continue
        found = {path for pattern in patterns for path in given.glob(pattern)}
        paths += sorted(p for p in found if p.is_file() and not p.name.startswith("."))
    return paths


def import_detector(
    name: str, files: Sequence[Path], output_dir: Path, face_detector: str | None = None
) -> Path:
    """Convert a published detector's checkpoint(s) into a model artifact in `output_dir`.

    Args:
        name: a key of `PUBLISHED`.
        files: the checkpoint files as the authors publish them (several for an ensemble); a
            folder stands for all the files in it.
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
    face_detector = face_detector or stand_in_detector()
    if face_detector not in DETECTORS:
        raise ConversionError(
            f"unknown face detector {face_detector!r}; known: {', '.join(DETECTORS)}"
        )
    paths = checkpoint_files(files, detector.files)
    if not paths:
        raise ConversionError(f"{name}: give the checkpoint file(s) to convert")
    config, state = detector.convert(paths)
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
        preprocessing=replace(detector.preprocessing, face_detector=face_detector),
        aggregation=detector.aggregation,
        versions=library_versions(),
        provenance=Provenance(
            source=detector.source,
            url=detector.url,
            licence=detector.licence,
            citation=detector.citation,
            reported=detector.reported,
            files=[SourceFile(p.name, file_sha256(p), p.stat().st_size) for p in paths],
            authors_crop=detector.authors_crop,
            differences=[d.format(detector=face_detector) for d in detector.differences],
        ),
    )
    return save_artifact(Path(output_dir), network.eval(), artifact)
