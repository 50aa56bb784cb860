"""Ensembles: several networks of one architecture scored as one, as published detectors are.

Each member maps an image batch to one logit per image; the ensemble gives the logit of the
mean of the members' probabilities, so it is one network to the rest of the pipeline
(prediction, Grad-CAM of its first member, ONNX export).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MeanProbabilityEnsemble(nn.Module):
    """The logit of the mean of the members' sigmoid probabilities.

    logit(mean_i sigmoid(z_i)) = log(sum_i sigmoid(z_i)) - log(sum_i sigmoid(-z_i)), with
    log(sigmoid(z)) written as -softplus(-z): finite for members that are very sure, also in
    ONNX (where logsigmoid becomes log(sigmoid(z)), -inf from z = -104 on).

    Args:
        members: networks giving one logit per image, shape (B,).
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([member(x) for member in self.members])
        log_fake, log_real = -F.softplus(-logits), -F.softplus(logits)
        return torch.logsumexp(log_fake, 0) - torch.logsumexp(log_real, 0)
