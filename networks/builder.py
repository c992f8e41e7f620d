"""Build networks from Gymnasium spaces: the one place that maps spaces to modules.

What a network needs to know beyond the spaces is passed in: for Dict observations, the
`layout` of their packed form (which slice of the packed vector holds which key: the caller
gets it from `envs.dict_layout`), so this package imports neither envs nor runners.

`build_encoder` picks the encoder: a CNN for image observations (uint8 Box images), an
MLP for vectors and Discrete values, and for Dict observations one extractor per key
(a CNN for images, flattening or one-hot for the rest) concatenated into an MLP.
`build_policy_head` picks the action distribution. A recurrent core (LSTM or GRU) can sit
between the encoder and the heads. Off-policy networks (Q-networks, critics, actors) are
built at the end of the module from the same pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from networks.actor_critic import ActorCritic, RecurrentActorCritic
from networks.cnn import CNNS, NatureCNN, is_image_space
from networks.encoders import ACTIVATIONS, MemberStack, MLPEncoder
from networks.heads import (
    CategoricalHead,
    DiagGaussianHead,
    DuelingHead,
    MultiCategoricalHead,
    QHead,
    SquashedGaussianHead,
    ValueHead,
)
from networks.off_policy import ContinuousCritic, DeterministicActor, QNetwork, SquashedGaussianActor
from networks.recurrent import RecurrentCore, RecurrentKind


class UnsupportedSpaceError(ValueError):
    """A space that no network in this package can read or act in."""


@dataclass
class NetworkConfig:
    """Architecture of the policy and value networks."""

    network: Literal["auto", "mlp", "nature-cnn", "impala-cnn"] = "auto"
    """Observation encoder: auto picks nature-cnn for image observations and mlp otherwise."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of each MLP (CNN encoders end in their own linear layer instead)."""
    activation: Literal["tanh", "relu", "elu", "gelu"] = "tanh"
    """Activation function between hidden layers."""
    share_encoder: bool = False
    """Let the actor and the critic share one encoder instead of having one each."""
    ortho_init: bool = True
    """Orthogonal initialisation (gain sqrt(2) hidden, 0.01 policy output, 1 value output)."""
    log_std_init: float = 0.0
    """Initial log standard deviation of Gaussian policies (continuous actions)."""
    recurrent: RecurrentKind = "none"
    """Recurrent core between the encoder and the heads: none, lstm or gru (one encoder is then shared)."""
    recurrent_size: int = 128
    """Hidden units of the recurrent core."""
    cnn_precision: Literal["auto", "float32", "bfloat16"] = "float32"
    """Arithmetic of CNN encoders: bfloat16 runs them under autocast (weights, gradients and
    optimiser state stay float32; about 2x faster updates on CPUs with AVX512-BF16 or AMX, and on
    GPUs with bfloat16 units; slower where bfloat16 is emulated); auto picks bfloat16 where the
    device has it in hardware and float32 elsewhere."""
    mlp_precision: Literal["auto", "float32", "bfloat16"] = "float32"
    """Arithmetic of MLP trunks (their hidden layers; heads and losses stay float32), as
    cnn_precision. The matmuls of these layers bound SAC's and TD3's updates on a CPU."""


class OneHot(nn.Module):
    """Encode Discrete observations [B] (or [B, 1]) as one-hot float vectors [B, n]."""

    def __init__(self, n: int, start: int = 0):
        super().__init__()
        self.n, self.start = n, start
        self.out_dim = n

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(obs.long().reshape(-1) - self.start, self.n).float()


class DictEntry(Protocol):
    """Where one key of a packed Dict observation lies (`envs.spaces.DictEntry` is one)."""

    key: str
    space: gym.Space
    start: int
    end: int


class DictExtractor(nn.Module):
    """Packed Dict observations [B, D] (laid out as `layout` says) -> concatenated features: a
    Nature CNN (256 features, as SB3's CombinedExtractor) per image key, one-hot per
    Discrete key, the flattened values of every other key."""

    def __init__(self, layout: Sequence[DictEntry], cfg: NetworkConfig):
        super().__init__()
        self.entries = list(layout)
        self.parts = nn.ModuleList()
        self.out_dim = 0
        for entry in self.entries:
            sub = entry.space
            if is_image_space(sub):
                cnn_cls = CNNS.get(cfg.network, NatureCNN)
                part: nn.Module = cnn_cls(
                    sub.shape, features=256, ortho_init=cfg.ortho_init, precision=cfg.cnn_precision
                )
                dim = part.out_dim
            elif isinstance(sub, gym.spaces.Discrete):
                part, dim = OneHot(int(sub.n), int(sub.start)), int(sub.n)
            else:
                part, dim = nn.Identity(), entry.end - entry.start
            self.parts.append(part)
            self.out_dim += dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = []
        for entry, part in zip(self.entries, self.parts, strict=True):
            x = obs[:, entry.start : entry.end]
            if isinstance(part, OneHot):
                features.append(part(x))
            elif isinstance(part, nn.Identity):
                features.append(x.float())
            else:  # an image: back to its own shape and dtype
                features.append(part(x.reshape(-1, *entry.space.shape).to(torch.uint8)))
        return torch.cat(features, dim=-1)


def observation_dim(space: gym.Space) -> int:
    """Length of the flat vector an MLP sees for one observation from `space`."""
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    raise UnsupportedSpaceError(f"observation space {space} is not supported (supported: Box, Discrete, Dict)")


def build_encoder(
    space: gym.Space, cfg: NetworkConfig, members: int = 1, layout: Sequence[DictEntry] | None = None
) -> nn.Module:
    """An encoder for observations from `space`: [B, *obs_shape] -> [members, B, out_dim],
    one trunk per member (e.g. 2: one for the actor, one for the critic). Dict observations
    need their packing `layout`."""
    mlp = {
        "activation": cfg.activation,
        "ortho_init": cfg.ortho_init,
        "members": members,
        "precision": cfg.mlp_precision,
    }
    if isinstance(space, gym.spaces.Dict):
        if layout is None:
            raise UnsupportedSpaceError(f"Dict observations {space} need their packing layout (envs.dict_layout)")
        extractor = DictExtractor(layout, cfg)
        return MLPEncoder(extractor.out_dim, cfg.hidden_sizes, **mlp, extractor=extractor)
    image = is_image_space(space)
    kind = cfg.network if cfg.network != "auto" else ("nature-cnn" if image else "mlp")
    if kind in CNNS:
        if not image:
            raise UnsupportedSpaceError(
                f"--network {kind} needs image observations (a uint8 Box of rank 2 or 3), not {space}"
            )
        cnns = [CNNS[kind](space.shape, ortho_init=cfg.ortho_init, precision=cfg.cnn_precision) for _ in range(members)]
        return MemberStack(cnns)
    if isinstance(space, gym.spaces.Discrete):
        return MLPEncoder(int(space.n), cfg.hidden_sizes, **mlp, extractor=OneHot(int(space.n), int(space.start)))
    return MLPEncoder(observation_dim(space), cfg.hidden_sizes, **mlp)


def build_policy_head(space: gym.Space, in_dim: int, cfg: NetworkConfig) -> nn.Module:
    """A distribution head acting in `space`."""
    if isinstance(space, gym.spaces.Discrete):
        return CategoricalHead(in_dim, int(space.n), cfg.ortho_init)
    if isinstance(space, gym.spaces.MultiDiscrete) and len(space.shape) == 1:
        return MultiCategoricalHead(in_dim, [int(n) for n in space.nvec], cfg.ortho_init)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return DiagGaussianHead(in_dim, space.shape[0], cfg.log_std_init, cfg.ortho_init)
    raise UnsupportedSpaceError(
        f"action space {space} is not supported (supported: Discrete, 1-D MultiDiscrete, 1-D Box)"
    )


def build_actor_critic(
    obs_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig, layout: Sequence[DictEntry] | None = None
) -> ActorCritic | RecurrentActorCritic:
    """An actor-critic for these spaces, initialised from torch's global RNG; recurrent
    when `cfg.recurrent` names a core. `layout`: see `build_encoder`."""
    if cfg.recurrent != "none":
        encoder = build_encoder(obs_space, cfg, members=1, layout=layout)
        core = RecurrentCore(cfg.recurrent, encoder.out_dim, cfg.recurrent_size)
        policy_head = build_policy_head(action_space, core.out_dim, cfg)
        return RecurrentActorCritic(encoder, core, policy_head, ValueHead(core.out_dim, cfg.ortho_init))
    encoder = build_encoder(obs_space, cfg, members=1 if cfg.share_encoder else 2, layout=layout)
    policy_head = build_policy_head(action_space, encoder.out_dim, cfg)
    value_head = ValueHead(encoder.out_dim, cfg.ortho_init)
    return ActorCritic(encoder, policy_head, value_head)


# ------------------------------------------------------------------ off-policy networks
def _flattener(space: gym.Space) -> nn.Module:
    if isinstance(space, gym.spaces.Discrete):
        return OneHot(int(space.n), int(space.start))
    observation_dim(space)  # raises for unsupported spaces
    return nn.Flatten()


def _continuous_action_dim(space: gym.Space) -> int:
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        raise UnsupportedSpaceError(f"action space {space} is not supported (supported: 1-D Box)")
    if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        raise UnsupportedSpaceError(f"action space {space} needs finite bounds to rescale actions into")
    return int(space.shape[0])


def build_q_network(
    obs_space: gym.Space,
    action_space: gym.Space,
    cfg: NetworkConfig,
    dueling: bool = False,
    layout: Sequence[DictEntry] | None = None,
) -> QNetwork:
    """A Q-network for discrete actions; with `dueling` the last hidden layer is split into
    value and advantage streams of the same width."""
    if not isinstance(action_space, gym.spaces.Discrete):
        raise UnsupportedSpaceError(f"action space {action_space} is not supported (supported: Discrete)")
    n = int(action_space.n)
    if dueling:
        # an MLP's last hidden layer becomes the streams; a CNN keeps its layers and gets
        # streams of its feature width
        trunk = NetworkConfig(**{**cfg.__dict__, "hidden_sizes": cfg.hidden_sizes[:-1]})
        encoder = build_encoder(obs_space, trunk, layout=layout)  # no hidden layers: the flat observation
        width = cfg.hidden_sizes[-1] if isinstance(encoder, MLPEncoder) else encoder.out_dim
        head: nn.Module = DuelingHead(encoder.out_dim, n, width, ACTIVATIONS[cfg.activation])
        return QNetwork(encoder, head)
    encoder = build_encoder(obs_space, cfg, layout=layout)
    return QNetwork(encoder, QHead(encoder.out_dim, n))


def build_critic(
    obs_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig, members: int = 2
) -> ContinuousCritic:
    """`members` Q(s, a) networks for 1-D Box actions, evaluated as one ensemble."""
    action_dim = _continuous_action_dim(action_space)
    in_dim = observation_dim(obs_space) + action_dim
    return ContinuousCritic(
        _flattener(obs_space), in_dim, cfg.hidden_sizes, cfg.activation, members, cfg.ortho_init, cfg.mlp_precision
    )


def build_actor(
    obs_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig, squashed_gaussian: bool
) -> SquashedGaussianActor | DeterministicActor:
    """SAC's stochastic actor (`squashed_gaussian`) or TD3's deterministic one, acting in [-1, 1]^A."""
    action_dim = _continuous_action_dim(action_space)
    encoder = build_encoder(obs_space, cfg)
    if squashed_gaussian:
        return SquashedGaussianActor(encoder, SquashedGaussianHead(encoder.out_dim, action_dim))
    return DeterministicActor(encoder, encoder.out_dim, action_dim)
