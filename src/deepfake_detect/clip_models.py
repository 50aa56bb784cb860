"""CLIP vision transformers with an L2-normalised linear head, the architecture of GenD
(Yermakov et al., WACV 2026): the class token's features on the unit sphere, then one logit.

The vision transformers are timm's builds of OpenAI's CLIP encoders (QuickGELU, pre-norm);
the head is defined here. Weights come from `published.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# OpenAI CLIP encoders by their Hugging Face name -> timm's build of the same network.
CLIP_VISION_MODELS = {
    "openai/clip-vit-large-patch14": "vit_large_patch14_clip_quickgelu_224",
    "openai/clip-vit-base-patch16": "vit_base_patch16_clip_quickgelu_224",
    "openai/clip-vit-base-patch32": "vit_base_patch32_clip_quickgelu_224",
}
# This project's name for each encoder with GenD's normalised head.
GEND_MODELS = {
    "gend_clip_vit_l14": "vit_large_patch14_clip_quickgelu_224",
    "gend_clip_vit_b16": "vit_base_patch16_clip_quickgelu_224",
    "gend_clip_vit_b32": "vit_base_patch32_clip_quickgelu_224",
}


class NormalisedLinearHead(nn.Module):
    """One logit from a backbone's pooled features scaled to unit length (GenD's LinearNorm).

    Args:
        backbone: a network returning pooled features (B, D).
        features: D.
    """

    def __init__(self, backbone: nn.Module, features: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.normalize(self.backbone(x), dim=1)).squeeze(1)


def clip_with_normalised_head(architecture: str, drop_rate: float) -> NormalisedLinearHead:
    """A timm CLIP vision transformer (its class token after the final norm) and the head."""
    import timm  # here, not at the top: importing timm adds about 1.6 s to every command

    backbone = timm.create_model(architecture, pretrained=False, num_classes=0, drop_rate=drop_rate)
    return NormalisedLinearHead(backbone, backbone.num_features)
