"""Recurrent cores: an LSTM or GRU between an encoder and the heads, with episode resets.

The state of a batch is one tensor [B, S, H]: S=2 for an LSTM (h, c), 1 for a GRU, so
rollout storage and minibatch gathers treat it like any other per-env tensor. `starts`
[L, B] marks the steps that begin a new episode: the state is zeroed before them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

RecurrentKind = Literal["none", "lstm", "gru"]


class RecurrentCore(nn.Module):
    """A one-layer LSTM or GRU over feature sequences [L, B, F] -> [L, B, H]."""

    def __init__(self, kind: str, in_dim: int, hidden: int):
        super().__init__()
        if kind not in ("lstm", "gru"):
            raise ValueError(f"unknown recurrent core {kind!r}; choose lstm or gru")
        self.kind = kind
        self.rnn = nn.LSTM(in_dim, hidden) if kind == "lstm" else nn.GRU(in_dim, hidden)
        self.out_dim = hidden
        self.state_slots = 2 if kind == "lstm" else 1
        for name, param in self.rnn.named_parameters():  # as CleanRL's recurrent PPO
            if "bias" in name:
                nn.init.constant_(param, 0.0)
            else:
                nn.init.orthogonal_(param, 1.0)

    def initial_state(self, batch: int, device: torch.device | str) -> torch.Tensor:
        return torch.zeros(batch, self.state_slots, self.out_dim, device=device)

    def _run(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = state.transpose(0, 1).contiguous()  # [S, B, H]
        if self.kind == "lstm":
            out, (h, c) = self.rnn(x, (hidden[0:1], hidden[1:2]))
            return out, torch.cat([h, c]).transpose(0, 1)
        out, h = self.rnn(x, hidden)
        return out, h.transpose(0, 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs [L, B, H] and the state after the last step, for inputs [L, B, F], the
        state before the first step [B, S, H] and episode starts [L, B] (bool)."""
        if x.shape[0] == 1 or not starts[1:].any():  # no reset inside: one call over the sequence
            keep = (~starts[0]).to(x.dtype).view(-1, 1, 1)
            return self._run(x, state * keep)
        return self._unroll(x, state, (~starts).to(x.dtype).unsqueeze(-1))

    def _unroll(self, x: torch.Tensor, state: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step by step, zeroing the state where keep [L, B, 1] is 0. The same arithmetic as
        nn.LSTM / nn.GRU (gate order i, f, g, o / r, z, n), with the input projections of
        all steps done in one matmul: three times faster than calling the module per step."""
        rnn, (L, B, _) = self.rnn, x.shape
        projected = torch.addmm(rnn.bias_ih_l0, x.flatten(0, 1), rnn.weight_ih_l0.t()).view(L, B, -1)
        w_hh, b_hh = rnn.weight_hh_l0.t(), rnn.bias_hh_l0
        outs = []
        if self.kind == "lstm":
            h, c = state[:, 0], state[:, 1]
            for t in range(L):
                h, c = h * keep[t], c * keep[t]
                i, f, g, o = (projected[t] + torch.addmm(b_hh, h, w_hh)).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            return torch.stack(outs), torch.stack([h, c], dim=1)
        h = state[:, 0]
        for t in range(L):
            h = h * keep[t]
            x_r, x_z, x_n = projected[t].chunk(3, dim=-1)
            h_r, h_z, h_n = torch.addmm(b_hh, h, w_hh).chunk(3, dim=-1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            h = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
            outs.append(h)
        return torch.stack(outs), h.unsqueeze(1)
