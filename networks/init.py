"""Weight initialisation shared by every network."""

from __future__ import annotations

import math

from torch import nn

HIDDEN_GAIN = math.sqrt(2.0)
"""Orthogonal gain for ReLU/tanh hidden layers (Saxe et al. 2014; OpenAI baselines)."""


def orthogonal_init(layer: nn.Module, gain: float = HIDDEN_GAIN, bias: float = 0.0) -> nn.Module:
    """Orthogonal weights with `gain` and constant bias, for Linear and Conv layers; returns the layer."""
    if isinstance(layer, (nn.Linear, nn.Conv2d)):
        nn.init.orthogonal_(layer.weight, gain)
        if layer.bias is not None:
            nn.init.constant_(layer.bias, bias)
    return layer
