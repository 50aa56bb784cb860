"""Model registry: small MesoNet-style CNNs defined here, and any timm backbone by name.

Every network maps a normalised float batch (B, 3, S, S) to one logit per image, shape (B,),
positive meaning fake. `create_model` returns it with a `ModelConfig` (input size, mean, std)
that drives the transforms, so normalisation follows the model.
"""

from __future__ import annotations

import difflib
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from types import ModuleType
from typing import Annotated, Any

import cv2
import numpy as np
import torch
from huggingface_hub import constants as hub_constants
from pydantic import AfterValidator, BeforeValidator, Field
from torch import nn

from deepfake_detect.clip_models import (
    CLIP_MEAN,
    CLIP_STD,
    GEND_MODELS,
    clip_with_normalised_head,
)
from deepfake_detect.ensemble import MeanProbabilityEnsemble
from deepfake_detect.errors import DeepfakeDetectError

RGB = tuple[float, float, float]

HALF: RGB = (0.5, 0.5, 0.5)
HUB_PROBE_TIMEOUT_S = 3.0


class ModelError(DeepfakeDetectError, ValueError):
    """A model that cannot be built as asked; the message is one line saying what to do."""


def _timm() -> ModuleType:
    """timm, imported on first use: it adds about 1.6 s to the start of every command (it
    imports torchvision and torch._dynamo), and a meso net never needs it."""
    import timm
    import timm.data

    return timm


def _known_model(name: str) -> str:
    if name in LOCAL_MODELS or _timm().is_model(name):
        return name
    raise _unknown_model(name)


def _one_per_channel(values: object) -> tuple:
    """A JSON list of one value per RGB channel, as a tuple (each value is checked after)."""
    if not isinstance(values, list | tuple) or len(values) != 3:
        raise ValueError(f"expected 3 numbers, one per RGB channel, got {values!r}")
    return tuple(values)


# ModelConfig's field types, with the constraints the artifact schema checks on reading a file.
ModelName = Annotated[str, AfterValidator(_known_model)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
ChannelMeans = Annotated[tuple[Finite, Finite, Finite], BeforeValidator(_one_per_channel)]
ChannelStds = Annotated[tuple[Positive, Positive, Positive], BeforeValidator(_one_per_channel)]


@dataclass(frozen=True)
class ModelConfig:
    """What the rest of the pipeline needs to know about a network; saved in the model artifact.

    Attributes:
        name: registry name (local) or timm model name.
        input_size: side of the square input crops, in pixels.
        mean: per-channel mean, for images scaled to [0, 1].
        std: per-channel standard deviation, for images scaled to [0, 1].
        drop_rate: dropout rate the network was built with.
        members: how many networks of this architecture it averages (an imported ensemble,
            `ensemble.MeanProbabilityEnsemble`); 1 for a single network.
    """

    name: ModelName
    input_size: Annotated[int, Field(ge=32, le=4096)]
    mean: ChannelMeans
    std: ChannelStds
    drop_rate: Annotated[float, Field(ge=0, lt=1)]
    members: Annotated[int, Field(ge=1)] = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """The inverse of `to_dict`, also after a JSON round trip (lists back to tuples)."""
        return cls(
            name=str(data["name"]),
            input_size=int(data["input_size"]),
            mean=_triple(data["mean"]),
            std=_triple(data["std"]),
            drop_rate=float(data["drop_rate"]),
            members=int(data.get("members", 1)),
        )


def _triple(values: Sequence[float]) -> RGB:
    if len(values) != 3:
        raise ModelError(f"expected one value per RGB channel, got {list(values)}")
    red, green, blue = (float(v) for v in values)
    return red, green, blue


# --- local registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalModel:
    """A registered factory (taking the drop rate) and the input it expects by default."""

    build: Callable[[float], nn.Module]
    input_size: int
    mean: RGB
    std: RGB


LOCAL_MODELS: dict[str, LocalModel] = {}


def register_model(
    name: str, *, input_size: int, mean: RGB, std: RGB
) -> Callable[[Callable[[float], nn.Module]], Callable[[float], nn.Module]]:
    """Record a factory under `name` in `LOCAL_MODELS`.

    Args:
        name: the name `create_model` accepts.
        input_size: default input side in pixels.
        mean: normalisation mean the network expects.
        std: normalisation standard deviation the network expects.
    """

    def record(build: Callable[[float], nn.Module]) -> Callable[[float], nn.Module]:
        if name in LOCAL_MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        LOCAL_MODELS[name] = LocalModel(build, input_size, mean, std)
        return build

    return record


# --- MesoNet family (Afchar et al. 2018) -------------------------------------------------------


def conv_block(in_channels: int, out_channels: int, kernel_size: int, pool: int) -> nn.Sequential:
    """Convolution, ReLU, batch norm and max pooling, in MesoNet's order."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding="same"),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(out_channels),
        nn.MaxPool2d(pool),
    )


def _conv_relu(
    in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1
) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding="same", dilation=dilation)
    return nn.Sequential(conv, nn.ReLU(inplace=True))


class InceptionBlock(nn.Module):
    """MesoInception's module: parallel 1x1, 3x3, and 3x3 dilated by 2 and by 3 branches.

    Each 3x3 branch starts with a 1x1 reduction. The branches are concatenated,
    batch-normalised and max-pooled by 2; the dilated ones see wider context at the cost of a
    3x3 kernel.
    """

    def __init__(self, in_channels: int, out_1x1: int, out_3x3: int, out_dil2: int, out_dil3: int):
        super().__init__()
        self.branches = nn.ModuleList(
            [
                _conv_relu(in_channels, out_1x1, 1),
                nn.Sequential(_conv_relu(in_channels, out_3x3, 1), _conv_relu(out_3x3, out_3x3, 3)),
                nn.Sequential(
                    _conv_relu(in_channels, out_dil2, 1),
                    _conv_relu(out_dil2, out_dil2, 3, dilation=2),
                ),
                nn.Sequential(
                    _conv_relu(in_channels, out_dil3, 1),
                    _conv_relu(out_dil3, out_dil3, 3, dilation=3),
                ),
            ]
        )
        out_channels = out_1x1 + out_3x3 + out_dil2 + out_dil3
        self.norm_pool = nn.Sequential(nn.BatchNorm2d(out_channels), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_pool(torch.cat([branch(x) for branch in self.branches], dim=1))


class MesoNet(nn.Module):
    """Four downsampling blocks (x32 overall, 16 channels out) and a small dense head.

    Args:
        features: the four blocks, ending with 16 channels.
        drop_rate: dropout before each of the two dense layers.
    """

    # 8x8 is the feature map of the paper's 256-pixel input; pooling to it adaptively keeps
    # the dense head valid at any input size from 32 pixels up.
    GRID = 8

    def __init__(self, features: nn.Sequential, drop_rate: float):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(self.GRID)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(drop_rate),
            nn.Linear(16 * self.GRID * self.GRID, 16),
            nn.LeakyReLU(0.1),
            nn.Dropout(drop_rate),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x))).squeeze(1)


@register_model("meso4", input_size=256, mean=HALF, std=HALF)
def meso4(drop_rate: float) -> MesoNet:
    """Meso-4: four convolution blocks (about 28k parameters)."""
    features = nn.Sequential(
        conv_block(3, 8, 3, pool=2),
        conv_block(8, 8, 5, pool=2),
        conv_block(8, 16, 5, pool=2),
        conv_block(16, 16, 5, pool=4),
    )
    return MesoNet(features, drop_rate)


@register_model("mesoinception4", input_size=256, mean=HALF, std=HALF)
def mesoinception4(drop_rate: float) -> MesoNet:
    """MesoInception-4: Meso-4 with its first two blocks replaced by inception blocks."""
    features = nn.Sequential(
        InceptionBlock(3, 1, 4, 4, 2),
        InceptionBlock(11, 2, 4, 4, 2),
        conv_block(12, 16, 5, pool=2),
        conv_block(16, 16, 5, pool=4),
    )
    return MesoNet(features, drop_rate)


# --- GenD: CLIP vision transformers with an L2-normalised head (clip_models.py) ---------------

for _name, _architecture in GEND_MODELS.items():
    register_model(_name, input_size=224, mean=CLIP_MEAN, std=CLIP_STD)(
        partial(clip_with_normalised_head, _architecture)
    )


# --- timm backbones ----------------------------------------------------------------------------


class SingleLogit(nn.Module):
    """Turns a classifier with one output, shape (B, 1), into one returning shape (B,)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).squeeze(1)


def _create_timm_model(
    name: str, pretrained: bool, image_size: int | None, drop_rate: float
) -> tuple[nn.Module, ModelConfig]:
    backbone = _create_timm_backbone(name, pretrained, drop_rate)
    data_config = _timm().data.resolve_model_data_config(backbone)
    config = ModelConfig(
        name=name,
        input_size=image_size if image_size is not None else data_config["input_size"][-1],
        mean=_triple(data_config["mean"]),
        std=_triple(data_config["std"]),
        drop_rate=drop_rate,
    )
    return SingleLogit(backbone), config


# --- pretrained weights: timm fetches them from the Hugging Face hub -----------------------------


def _create_timm_backbone(name: str, pretrained: bool, drop_rate: float) -> nn.Module:
    # Without network the hub backs off and retries for about 45 s before failing; in its
    # offline mode it answers from the cache at once, so cached weights still load.
    offline = pretrained and not _hub_reachable()
    try:
        with _hub_offline_mode() if offline else nullcontext():
            return _timm().create_model(
                name, pretrained=pretrained, num_classes=1, drop_rate=drop_rate
            )
    except OSError as err:  # the hub's errors, URLError and connection errors all derive from it
        raise ModelError(
            f"the weights for {name} could not be downloaded (offline?) ({type(err).__name__}); "
            "train without them with --no-pretrained, or fetch them once on a machine with "
            "network into the Hugging Face cache (HF_HOME) and set HF_HUB_OFFLINE=1"
        ) from err


def _hub_reachable() -> bool:
    if _env_offline() or hub_constants.is_offline_mode():
        return False
    request = urllib.request.Request(hub_constants.ENDPOINT, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except urllib.error.HTTPError:
        return True  # the hub answered, even if not with 200
    except OSError:
        return False


def _env_offline() -> bool:
    """HF_HUB_OFFLINE as set now; huggingface_hub itself reads it only when imported."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


@contextmanager
def _hub_offline_mode() -> Iterator[None]:
    previous = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


# --- public entry points -----------------------------------------------------------------------


def known_models() -> list[str]:
    """The local model names, then a reminder that any timm model name works too."""
    return [*LOCAL_MODELS, "any timm model name (timm.list_models())"]


def create_model(
    name: str = "meso4",
    *,
    pretrained: bool = False,
    image_size: int | None = None,
    drop_rate: float = 0.5,
) -> tuple[nn.Module, ModelConfig]:
    """Build a network giving one logit per image (fake > 0), and the config of its input.

    Args:
        name: a local model ("meso4", "mesoinception4") or any timm model name.
        pretrained: load ImageNet weights through timm (local models have none).
        image_size: input side in pixels; default: the model's own (256 for meso nets,
            the pretrained config's for timm models).
        drop_rate: dropout rate of the classifier head.

    Raises:
        ModelError: unknown name, or pretrained weights that are missing or unreachable.
    """
    if name in LOCAL_MODELS:
        return _create_local_model(name, pretrained, image_size, drop_rate)
    if _timm().is_model(name):
        return _create_timm_model(name, pretrained, image_size, drop_rate)
    raise _unknown_model(name)


def build_network(config: ModelConfig) -> nn.Module:
    """The untrained network a config describes (an ensemble when it has several members),
    for weights to be loaded into: nothing is downloaded."""

    def one() -> nn.Module:
        size, drop_rate = config.input_size, config.drop_rate
        return create_model(config.name, image_size=size, drop_rate=drop_rate)[0]

    if config.members == 1:
        return one()
    return MeanProbabilityEnsemble([one() for _ in range(config.members)])


def _create_local_model(
    name: str, pretrained: bool, image_size: int | None, drop_rate: float
) -> tuple[nn.Module, ModelConfig]:
    if pretrained:
        raise ModelError(f"{name} has no pretrained weights; train it with --no-pretrained")
    spec = LOCAL_MODELS[name]
    input_size = image_size if image_size is not None else spec.input_size
    config = ModelConfig(name, input_size, spec.mean, spec.std, drop_rate)
    return spec.build(drop_rate), config


def _unknown_model(name: str) -> ModelError:
    close = difflib.get_close_matches(name, [*LOCAL_MODELS, *_timm().list_models()], n=5)
    suggestion = f"; close matches: {', '.join(close)}" if close else ""
    return ModelError(
        f"unknown model {name!r}: local models are {', '.join(LOCAL_MODELS)}, or any timm "
        f"model (search with timm.list_models('*pattern*')){suggestion}"
    )


def gradcam_layer(model: nn.Module) -> nn.Module:
    """The layer whose activations Grad-CAM should use: the last spatial feature map.

    For timm models, the module named by the last entry of their `feature_info`; otherwise
    (meso nets) the last convolution.
    """
    for module in model.modules():
        feature_info = getattr(module, "feature_info", None)
        if feature_info:
            return module.get_submodule(feature_info[-1]["module"])
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convolutions:
        raise ModelError(f"{type(model).__name__} has no convolution to hook for Grad-CAM")
    return convolutions[-1]


def to_model_input(crops: np.ndarray, config: ModelConfig) -> np.ndarray:
    """uint8 crops (N, S, S, 3) -> the float32 NCHW batch the network takes: resized to the
    model's input size and normalised with its mean and std (training, prediction and
    Grad-CAM all go through here, so they see the same pixels)."""
    size = config.input_size
    if crops.shape[1] != size or crops.shape[2] != size:
        crops = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
    mean = np.array(config.mean, np.float32).reshape(1, 3, 1, 1) * 255
    std = np.array(config.std, np.float32).reshape(1, 3, 1, 1) * 255
    return np.ascontiguousarray((crops.transpose(0, 3, 1, 2).astype(np.float32) - mean) / std)
