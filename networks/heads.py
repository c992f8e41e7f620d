"""Output heads: action distributions and state values.

The distribution heads are written as plain tensor math rather than `torch.distributions`
objects: the update calls them thousands of times per second, and object construction
and argument validation cost more than the arithmetic for small networks. Each head
maps features to distribution parameters in `forward`, and the other methods take those
parameters. Shapes: B batch, A action dimensions, K discrete choices.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from networks.encoders import EnsembleLinear, Linear
from networks.init import orthogonal_init

POLICY_GAIN = 0.01
"""Small initial policy outputs give a near-uniform first policy (Andrychowicz et al. 2021)."""

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class CategoricalHead(nn.Module):
    """A softmax policy over K discrete actions; parameters are logits [B, K]."""

    def __init__(self, in_dim: int, num_actions: int, ortho_init: bool = True):
        super().__init__()
        self.linear = Linear(in_dim, num_actions)
        if ortho_init:
            orthogonal_init(self.linear, gain=POLICY_GAIN)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # Gumbel-max trick: argmax(logits + Gumbel noise), with -log(Exp(1)) as the Gumbel sample.
        noise = torch.empty_like(logits).exponential_(generator=generator)
        return (logits - noise.log()).argmax(dim=-1)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=-1)

    def log_prob(self, logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(logits, dim=-1)
        return log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(logits, dim=-1)
        return -(log_p.exp() * log_p).sum(dim=-1)

    def log_prob_entropy(self, logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both at once, sharing the log-softmax."""
        log_p = torch.log_softmax(logits, dim=-1)
        log_prob = log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        return log_prob, -(log_p.exp() * log_p).sum(dim=-1)


class DiagGaussianHead(nn.Module):
    """A Gaussian policy with a state-independent diagonal std; parameters are means [B, A]."""

    def __init__(self, in_dim: int, action_dim: int, log_std_init: float = 0.0, ortho_init: bool = True):
        super().__init__()
        self.linear = Linear(in_dim, action_dim)
        if ortho_init:
            orthogonal_init(self.linear, gain=POLICY_GAIN)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def sample(self, mean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + self.log_std.exp() * noise

    def mode(self, mean: torch.Tensor) -> torch.Tensor:
        return mean

    def log_prob(self, mean: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - mean) * torch.exp(-self.log_std)
        return (-0.5 * z.square() - self.log_std - _HALF_LOG_2PI).sum(dim=-1)

    def entropy(self, mean: torch.Tensor) -> torch.Tensor:
        return (0.5 + _HALF_LOG_2PI + self.log_std).sum().expand(mean.shape[:-1])

    def log_prob_entropy(self, mean: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.log_prob(mean, actions), self.entropy(mean)


class MultiCategoricalHead(nn.Module):
    """Independent softmax policies over D discrete components with n_1..n_D choices
    (MultiDiscrete actions); parameters are the concatenated logits [B, sum n_d], actions
    [B, D]. Log-probabilities and entropies are sums over the components."""

    def __init__(self, in_dim: int, nvec: list[int], ortho_init: bool = True):
        super().__init__()
        self.nvec = list(nvec)
        self.linear = Linear(in_dim, sum(self.nvec))
        if ortho_init:
            orthogonal_init(self.linear, gain=POLICY_GAIN)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def _log_softmax(self, logits: torch.Tensor) -> list[torch.Tensor]:
        return [torch.log_softmax(part, dim=-1) for part in logits.split(self.nvec, dim=-1)]

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.empty_like(logits).exponential_(generator=generator)
        perturbed = (logits - noise.log()).split(self.nvec, dim=-1)  # Gumbel-max per component
        return torch.stack([part.argmax(dim=-1) for part in perturbed], dim=-1)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.stack([part.argmax(dim=-1) for part in logits.split(self.nvec, dim=-1)], dim=-1)

    @staticmethod
    def _sum_log_prob(log_ps: list[torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
        actions = actions.long()
        return sum(lp.gather(-1, actions[..., d : d + 1]).squeeze(-1) for d, lp in enumerate(log_ps))

    @staticmethod
    def _sum_entropy(log_ps: list[torch.Tensor]) -> torch.Tensor:
        return sum(-(lp.exp() * lp).sum(dim=-1) for lp in log_ps)

    def log_prob(self, logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self._sum_log_prob(self._log_softmax(logits), actions)

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        return self._sum_entropy(self._log_softmax(logits))

    def log_prob_entropy(self, logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both at once, sharing the log-softmax."""
        log_ps = self._log_softmax(logits)
        return self._sum_log_prob(log_ps, actions), self._sum_entropy(log_ps)


class ValueHead(nn.Module):
    """A scalar state value: [B, F] -> [B]."""

    def __init__(self, in_dim: int, ortho_init: bool = True):
        super().__init__()
        self.linear = Linear(in_dim, 1)
        if ortho_init:
            orthogonal_init(self.linear, gain=1.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).squeeze(-1)


LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
"""Clamp of the squashed Gaussian's log std (as SAC's authors and Stable-Baselines3)."""

_LOG_2 = math.log(2.0)


class SquashedGaussianHead(nn.Module):
    """A tanh-squashed Gaussian with a state-dependent diagonal std: actions in (-1, 1)^A.

    Parameters are the concatenated mean and log std [B, 2A] of the Gaussian before the
    tanh. The log-probability includes the change of variables of the squashing,
    log pi(a) = log N(u) - sum log(1 - tanh(u)^2), written in the stable form
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
    """

    def __init__(self, in_dim: int, action_dim: int):
        super().__init__()
        self.action_dim = action_dim
        self.linear = Linear(in_dim, 2 * action_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = params.split(self.action_dim, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        return torch.tanh(params[..., : self.action_dim])

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised squashed actions [B, A] and their log-probabilities [B]."""
        return self.squash(params, self.noise(params, generator))

    def sample_action(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The action of `sample` (the same draw from `generator`) without its log-probability."""
        mean, log_std = self.split(params)
        return torch.tanh(torch.addcmul(mean, log_std.exp(), self.noise(params, generator)))

    def noise(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A standard normal draw [B, A] for `squash`."""
        shape = (*params.shape[:-1], self.action_dim)
        return torch.randn(shape, generator=generator, device=params.device, dtype=params.dtype)

    def squash(self, params: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The actions tanh(mean + std * noise) [B, A] and their log-probabilities [B], for a
        given draw (a compiled update takes its noise as an input: it cannot hold a generator)."""
        mean, log_std = self.split(params)
        u = torch.addcmul(mean, log_std.exp(), noise)
        return torch.tanh(u), self.log_prob_of(noise, log_std, u)

    @staticmethod
    def log_prob_of(noise: torch.Tensor, log_std: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """log pi(tanh(u)) [B] of u = mean + exp(log_std) * noise [B, A]."""
        log_prob = (
            -0.5 * noise.square() - log_std - _HALF_LOG_2PI - 2.0 * (_LOG_2 - u - nn.functional.softplus(-2.0 * u))
        )
        return log_prob.sum(dim=-1)


class QHead(nn.Module):
    """Action values of K discrete actions: [B, F] -> [B, K]."""

    def __init__(self, in_dim: int, num_actions: int):
        super().__init__()
        self.linear = Linear(in_dim, num_actions)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


class DuelingHead(nn.Module):
    """Dueling action values (Wang et al. 2016): Q = V + A - mean(A), [B, F] -> [B, K].

    The value and the advantage streams each have their own hidden layer (of width
    `hidden`, evaluated together in one batched matmul) before their output layers.
    """

    def __init__(self, in_dim: int, num_actions: int, hidden: int, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.streams = nn.Sequential(EnsembleLinear(2, in_dim, hidden, ortho_gain=None), activation())
        self.value = Linear(hidden, 1)
        self.advantage = Linear(hidden, num_actions)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.streams(features.expand(2, *features.shape))
        value, advantage = self.value(hidden[0]), self.advantage(hidden[1])
        return value + advantage - advantage.mean(dim=-1, keepdim=True)
