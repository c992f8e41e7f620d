"""Running normalisers for observations and rewards; their statistics are module buffers,
so they travel in the agent's state_dict and therefore in every checkpoint."""

from __future__ import annotations

import torch
from torch import nn

from agents.optim import all_ranks_sum, process_group_ready


class RunningMeanStd(nn.Module):
    """Mean and variance of a stream of batches, merged with Chan et al.'s parallel formula."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        super().__init__()
        # float64: the count grows into the millions and float32 sums lose precision.
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(epsilon, dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: torch.Tensor, distributed: bool = False) -> None:
        """Fold a batch [B, *shape] into the statistics. With `distributed` (DDP training, a
        process group initialised) the batch is every rank's batch together: the ranks all-reduce
        its count, sum and squared deviations first, so all of them fold in the same moments and
        their statistics stay equal (to those of one process seeing the concatenated batch)."""
        batch = batch.to(torch.float64).reshape(-1, *self.mean.shape)
        if distributed and process_group_ready():
            batch_count, batch_mean, batch_var = self._global_moments(batch)
        else:
            batch_count = batch.shape[0]
            batch_mean = batch.mean(dim=0)
            batch_var = batch.var(dim=0, unbiased=False)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.mean += delta * batch_count / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    @staticmethod
    def _global_moments(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Count, mean and (biased) variance of the union of all ranks' batches: two all-reduces
        (count and sum, then the squared deviations from the global mean)."""
        count = torch.full((1,), batch.shape[0], dtype=torch.float64, device=batch.device)
        totals = all_ranks_sum(torch.cat([count, batch.sum(dim=0).reshape(-1)]))
        count, mean = totals[0], totals[1:].view(batch.shape[1:]) / totals[0]
        var = all_ranks_sum((batch - mean).square().sum(dim=0)) / count
        return count, mean, var


class ObservationNormalizer(nn.Module):
    """(obs - mean) / std, clipped; statistics are updated only when asked (frozen for eval)."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__()
        self.rms = RunningMeanStd(shape)
        self.clip, self.epsilon = clip, epsilon

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        mean = self.rms.mean.to(torch.float32)
        std = torch.sqrt(self.rms.var.to(torch.float32) + self.epsilon)
        return ((obs.to(torch.float32) - mean) / std).clamp(-self.clip, self.clip)

    def update(self, obs: torch.Tensor, distributed: bool = False) -> None:
        self.rms.update(obs, distributed)


class RewardScaler(nn.Module):
    """Divide rewards by the running std of the discounted return (as SB3's VecNormalize).

    Keeps one running discounted return per env, reset at every episode end; the return
    statistics are updated with a whole rollout at once (in DDP training, with every rank's
    rollout: `RunningMeanStd.update(..., distributed=True)`; the per-env returns stay per rank).
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__()
        self.rms = RunningMeanStd(())
        self.register_buffer("returns", torch.zeros(num_envs, dtype=torch.float64))
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon

    @torch.no_grad()
    def forward(self, rewards: torch.Tensor, dones: torch.Tensor, distributed: bool = False) -> torch.Tensor:
        """Scale a rollout of rewards [T, N]; `dones` [T, N] marks episode ends (either kind);
        `distributed`: the statistics take in all ranks' returns (see `RunningMeanStd.update`)."""
        discounted = torch.empty_like(rewards, dtype=torch.float64)
        running = self.returns
        for t in range(rewards.shape[0]):
            running = running * self.gamma + rewards[t]
            discounted[t] = running
            running = running * (~dones[t])
        self.returns.copy_(running)
        self.rms.update(discounted.reshape(-1), distributed)
        std = torch.sqrt(self.rms.var + self.epsilon).to(rewards.dtype)
        return (rewards / std).clamp(-self.clip, self.clip)
