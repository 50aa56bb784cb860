"""Other libraries' weight names turned into timm's, for networks timm builds identically:
efficientnet_pytorch's EfficientNets and Hugging Face's CLIP vision transformers.

Each function renames (and, where timm stores a tensor differently, reshapes) a state dict;
loading it strictly into the timm model then proves every tensor found its place.
"""

from __future__ import annotations

import timm
import torch

StateDict = dict[str, torch.Tensor]

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
    where = [
        (stage, index)
        for stage, depth in enumerate(_stage_depths(architecture))
        for index in range(depth)
    ]
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
        # a block timm does not have keeps an impossible name: the strict load then names it
        stage, index = where[int(number)] if int(number) < len(where) else (-1, -1)
        renamed[f"blocks.{stage}.{index}.{names.get(layer, layer)}.{tensor}"] = value
    return renamed


_HF_CLIP_LAYER = {
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "self_attn.out_proj": "attn.proj",
}
_HF_CLIP_TOP = {
    "pre_layrnorm": "norm_pre",
    "post_layernorm": "norm",
    "embeddings.patch_embedding": "patch_embed.proj",
}


def hf_clip_vision_to_timm(state: StateDict) -> StateDict:
    """Rename a Hugging Face CLIPVisionTransformer's weights to timm's VisionTransformer.

    The same network: class and position embeddings become timm's (1, ...) parameters, and
    each layer's q, k and v projections are stacked into timm's one qkv projection.

    Raises:
        KeyError: a tensor of CLIP's vision encoder is missing.
    """
    state = dict(state)
    renamed = {
        "cls_token": state.pop("embeddings.class_embedding").reshape(1, 1, -1),
        "pos_embed": state.pop("embeddings.position_embedding.weight").unsqueeze(0),
    }
    state.pop("embeddings.position_ids", None)  # a buffer older versions saved
    layers = sorted({int(key.split(".")[2]) for key in state if key.startswith("encoder.layers.")})
    for layer in layers:
        prefix = f"encoder.layers.{layer}."
        for kind in ("weight", "bias"):
            qkv = [state.pop(f"{prefix}self_attn.{p}_proj.{kind}") for p in "qkv"]
            renamed[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat(qkv)
        for key in [key for key in state if key.startswith(prefix)]:
            module, _, tensor = key.removeprefix(prefix).rpartition(".")
            renamed[f"blocks.{layer}.{_HF_CLIP_LAYER.get(module, module)}.{tensor}"] = state.pop(
                key
            )
    for key in list(state):
        module, _, tensor = key.rpartition(".")
        renamed[f"{_HF_CLIP_TOP.get(module, module)}.{tensor}"] = state.pop(key)
    return renamed
