"""Convolutional encoders for image observations: uint8 [B, C, H, W] (or [B, H, W, C]) in,
scaled to [0, 1] on the device, features [B, F] out.

- `NatureCNN`: the DQN paper's encoder (Mnih et al. 2015): three conv layers and a
  512-unit linear layer.
- `ImpalaCNN`: the IMPALA paper's ResNet encoder (Espeholt et al. 2018): three stages
  of conv, max-pool and two residual blocks, then a 256-unit linear layer.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from networks.init import HIDDEN_GAIN, orthogonal_init
from networks.precision import MixedPrecision


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
    """uint8 images -> [B, C, H, W] in [0, 1], float32 or (for a network computing in it) bfloat16."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.chw, self.permute = channels_first_shape(shape)

    def forward(self, obs: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        x = obs
        if x.dim() == 3:  # grayscale [B, H, W]
            x = x.unsqueeze(1)
        elif self.permute:
            x = x.permute(0, 3, 1, 2)
        if obs.dtype != torch.uint8:
            return x.float()
        # A new tensor, scaled in place. In bfloat16 the pixel values 0-255 are exact and the
        # product is computed in float32 and rounded once: the bits autocast's cast of the float32
        # image would give, without the float32 image (a third of the bfloat16 update's copying).
        return x.to(dtype).mul_(1 / 255)


def _conv_out_dim(body: nn.Module, chw: tuple[int, int, int]) -> int:
    with torch.no_grad():
        return int(body(torch.zeros(1, *chw)).shape[1])


class Encoder(MixedPrecision):
    """An `ImageInput`, a conv `body` and a linear `fc`, computed in `precision`
    (`networks.precision`: bfloat16 runs body and fc under autocast). Images and conv weights
    are laid out channels-last where that is faster (`CHANNELS_LAST`)."""

    input: ImageInput
    body: nn.Sequential
    fc: nn.Sequential

    def set_precision(self, precision: str) -> None:
        self.channels_last = False
        super().set_precision(precision)

    def _use(self, arithmetic: str) -> None:
        super()._use(arithmetic)
        self.channels_last = CHANNELS_LAST[arithmetic]
        if self.channels_last:
            self.body.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        self._resolve(obs.device)
        x = self.input(obs, torch.bfloat16 if self.arithmetic == "bfloat16" else torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.arithmetic == "float32":
            return self.fc(self.body(x))
        frozen = self.__dict__.get("_frozen")
        if frozen is not None and not torch.is_grad_enabled():
            return frozen(x).float()
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            features = self.fc(self.body(x))
        return features.float()

    def _freeze(self) -> None:
        """Keep bfloat16 copies of body and fc for forwards without gradients (see `frozen_weights`)."""
        self._resolve(next(self.parameters()).device)
        if self.arithmetic == "bfloat16":  # (in __dict__: not a submodule, not in the state dict)
            self.__dict__["_frozen"] = copy.deepcopy(nn.Sequential(self.body, self.fc)).to(torch.bfloat16)


@contextlib.contextmanager
def frozen_weights(module: nn.Module) -> Iterator[None]:
    """Within, the bfloat16 encoders of `module` run their forwards without gradients on bfloat16
    copies of their weights, made on entry, instead of autocast, which casts the float32 weights
    at every call (a tenth of a PPO Atari rollout on 8 envs here). Autocast casts each weight
    the same way, so the features are the same. The weights must not change within: the
    collector enters it for one rollout, and agents learn between rollouts."""
    encoders = [m for m in module.modules() if isinstance(m, Encoder)]
    try:
        for encoder in encoders:
            encoder._freeze()
        yield
    finally:
        for encoder in encoders:
            encoder.__dict__.pop("_frozen", None)


CHANNELS_LAST = {"float32": True, "bfloat16": False}
"""Whether images and conv weights are laid out channels-last in each arithmetic: measured on
the Nature CNN's PPO minibatch update (256 samples, 2 threads, an AVX512-BF16 CPU), float32 took
158 ms as it was and 99 ms channels-last, bfloat16 66 ms as it was and 76 ms channels-last."""


class NatureCNN(Encoder):
    """Conv 32x8x8/4, 64x4x4/2, 64x3x3/1, then Linear(512), all ReLU."""

    def __init__(self, shape: Sequence[int], features: int = 512, ortho_init: bool = True, precision: str = "float32"):
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
        self.set_precision(precision)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ImpalaCNN(Encoder):
    """Stages of (conv 3x3, max-pool 3x3/2, two residual blocks) with 16, 32, 32 channels,
    then ReLU and Linear(256) with ReLU."""

    def __init__(
        self,
        shape: Sequence[int],
        channels: Sequence[int] = (16, 32, 32),
        features: int = 256,
        ortho_init: bool = True,
        precision: str = "float32",
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
        self.set_precision(precision)


CNNS: dict[str, type[Encoder]] = {"nature-cnn": NatureCNN, "impala-cnn": ImpalaCNN}
