"""Convolutional encoders for image observations: uint8 [B, C, H, W] (or [B, H, W, C]) in,
scaled to [0, 1] on the device, features [B, F] out.

- `NatureCNN`: the DQN paper's encoder (Mnih et al. 2015): three conv layers and a
  512-unit linear layer.
- `ImpalaCNN`: the IMPALA paper's ResNet encoder (Espeholt et al. 2018): three stages
  of conv, max-pool and two residual blocks, then a 256-unit linear layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from networks.init import HIDDEN_GAIN, orthogonal_init


def is_image_space(space: gym.Space) -> bool:
    """A uint8 Box of rank 3 (or rank 2: one grayscale channel) holds images."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) in (2, 3)


def channels_first_shape(shape: Sequence[int]) -> tuple[tuple[int, int, int], bool]:
    """(C, H, W) of an image space's shape, and whether it must be permuted from HWC.
    As Stable-Baselines3 decides: the smallest of the first and last dimension is the channel."""
    if len(shape) == 2:
        return (1, *shape), False
    if shape[0] <= shape[-1]:
        return tuple(shape), False
    return (shape[-1], shape[0], shape[1]), True


class ImageInput(nn.Module):
    """uint8 images -> float [B, C, H, W] in [0, 1]."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.chw, self.permute = channels_first_shape(shape)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        if x.dim() == 3:  # grayscale [B, H, W]
            x = x.unsqueeze(1)
        elif self.permute:
            x = x.permute(0, 3, 1, 2)
        return x.float() / 255.0 if obs.dtype == torch.uint8 else x.float()


def _conv_out_dim(body: nn.Module, chw: tuple[int, int, int]) -> int:
    with torch.no_grad():
        return int(body(torch.zeros(1, *chw)).shape[1])


class NatureCNN(nn.Module):
    """Conv 32x8x8/4, 64x4x4/2, 64x3x3/1, then Linear(512), all ReLU."""

    def __init__(self, shape: Sequence[int], features: int = 512, ortho_init: bool = True):
        super().__init__()
        self.input = ImageInput(shape)
        channels = self.input.chw[0]
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(_conv_out_dim(self.body, self.input.chw), features), nn.ReLU())
        self.out_dim = features
        if ortho_init:
            self.apply(orthogonal_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(self.input(obs)))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ImpalaCNN(nn.Module):
    """Stages of (conv 3x3, max-pool 3x3/2, two residual blocks) with 16, 32, 32 channels,
    then ReLU and Linear(256) with ReLU."""

    def __init__(
        self, shape: Sequence[int], channels: Sequence[int] = (16, 32, 32), features: int = 256, ortho_init: bool = True
    ):
        super().__init__()
        self.input = ImageInput(shape)
        layers: list[nn.Module] = []
        last = self.input.chw[0]
        for out in channels:
            layers += [
                nn.Conv2d(last, out, 3, padding=1),
                nn.MaxPool2d(3, stride=2, padding=1),
                ResidualBlock(out),
                ResidualBlock(out),
            ]
            last = out
        layers += [nn.ReLU(), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(_conv_out_dim(self.body, self.input.chw), features), nn.ReLU())
        self.out_dim = features
        if ortho_init:
            self.apply(lambda m: orthogonal_init(m, HIDDEN_GAIN))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(self.input(obs)))


CNNS: dict[str, type[nn.Module]] = {"nature-cnn": NatureCNN, "impala-cnn": ImpalaCNN}
