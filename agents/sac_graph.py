"""SAC's whole gradient step as one compiled graph (`--compile-update`).

The fused update (`agents.sac.FusedUpdate`) still runs about 170 tensor operations per
gradient step, each dispatched from Python; on the CPU, for 256-wide layers, the dispatch and
the elementwise passes between the matmuls cost as much as the matmuls. Here the same step
(losses, hand-written backward passes, both Adam steps) is one function of tensors, compiled
by `torch.compile`: TorchInductor fuses the elementwise work (activations, their backward
passes, casts, the squashed Gaussian, Adam) into a few loops and calls the matmul kernels
directly, and Python runs once per gradient step instead of once per operation.

Mixed precision here is the usual one: the hidden-to-hidden layers multiply bfloat16 copies of
their operands (cast inside the fused loops) and round their outputs to bfloat16; master
weights, optimiser state, the narrow input and output layers and the losses stay float32.

Compiling takes seconds to tens of seconds the first time; TorchInductor caches the result on
disk (`TORCHINDUCTOR_CACHE_DIR`, by default under the system temp dir), so later runs with the
same shapes load it. Where compiling fails (no C++ compiler, an unsupported platform), the run
warns once and continues with the fused update.

Replay sampling and the policy's noise draw stay outside the graph (they use the agent's
generator); so do the Polyak update of the targets and the first gradient step, which creates
the optimisers' state. The compiled step does not write the parameters' `.grad`.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from agents.off_policy import polyak_update, step_counters
from networks.encoders import EnsembleLinear
from networks.heads import LOG_STD_MAX, LOG_STD_MIN, SquashedGaussianHead
from networks.manual import MIXED_MIN_WIDTH

if TYPE_CHECKING:
    from agents.sac import FusedUpdate

Layer = tuple[torch.Tensor, torch.Tensor]  # weight [K, in, out], bias [K, 1, out]


# ------------------------------------------------------------------ the step, as pure functions
def _layers(params: list[torch.Tensor], ensemble: tuple[bool, ...]) -> list[Layer]:
    """(weight, bias) pairs in matmul layout from parameters [w0, b0, w1, b1, ...]: EnsembleLinear
    ones as they are, nn.Linear ones ([out, in], [out]) as a one-member ensemble."""
    layers = []
    for i, is_ensemble in enumerate(ensemble):
        w, b = params[2 * i], params[2 * i + 1]
        layers.append((w, b) if is_ensemble else (w.mT.unsqueeze(0), b.view(1, 1, -1)))
    return layers


def _narrow(w: torch.Tensor, bf16: bool) -> bool:
    """Whether a layer multiplies in bfloat16: under mixed precision, when wide on both sides."""
    return bf16 and min(w.shape[-2:]) >= MIXED_MIN_WIDTH


def _forward(x: torch.Tensor, layers: list[Layer], act: str, bf16: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """MLP over K members (relu or tanh between layers): x [K, B, in] -> [K, B, out], and each
    layer's input."""
    inputs = []
    for i, (w, b) in enumerate(layers):
        inputs.append(x)
        product = torch.bmm(x.bfloat16(), w.bfloat16()).float() if _narrow(w, bf16) else torch.bmm(x, w)
        x = product + b
        if i < len(layers) - 1:
            x = torch.relu(x) if act == "relu" else torch.tanh(x)
    return x, inputs


def _backward(
    inputs: list[torch.Tensor],
    layers: list[Layer],
    ensemble: tuple[bool, ...],
    grad: torch.Tensor,
    act: str,
    bf16: bool,
    params: bool = True,
    input_columns: slice | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Backpropagate dL/d(output) [K, B, out]: the parameters' gradients in their own layout
    (when `params`), and dL/d(input)[..., input_columns] (when asked)."""
    grads: list[torch.Tensor] = []
    for i in range(len(layers) - 1, -1, -1):
        w, x = layers[i][0], inputs[i]
        narrow = _narrow(w, bf16)
        g = grad.bfloat16() if narrow else grad
        if params:
            if ensemble[i]:
                gw = torch.bmm(x.bfloat16().mT, g).float() if narrow else torch.bmm(x.mT, g)
                gb = grad.sum(dim=1, keepdim=True)
            else:  # nn.Linear: [out, in] and [out]
                gw = (torch.bmm(g.mT, x.bfloat16()).float() if narrow else torch.bmm(g.mT, x))[0]
                gb = grad.sum(dim=1)[0]
            grads += [gb, gw]
        if i > 0:
            back = torch.bmm(g, w.bfloat16().mT).float() if narrow else torch.bmm(grad, w.mT)
            grad = back * (x > 0) if act == "relu" else back * (1.0 - x.square())  # x: the activation's output
        elif input_columns is not None:
            return grads[::-1], torch.bmm(grad, w[:, input_columns].mT)
    return grads[::-1], None


def _adam(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: torch.Tensor,
    hyper: tuple[float, float, float, float],
) -> None:
    """torch's Adam (the fused kernel's formula), in place; `steps` [P] counts each parameter's steps."""
    lr, beta1, beta2, eps = hyper
    steps.add_(1)
    step_size = lr / (1 - beta1**steps)
    bias_correction2_sqrt = (1 - beta2**steps).sqrt()
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, strict=True)):
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / bias_correction2_sqrt[i]).add_(eps)
        p.sub_(m / denom * step_size[i])


def sac_step(
    obs: torch.Tensor,
    env_actions: torch.Tensor,
    next_obs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    noise: torch.Tensor,
    log_alpha: torch.Tensor,
    from_env: tuple[torch.Tensor, torch.Tensor],
    entropy_target: torch.Tensor,
    actor_params: list[torch.Tensor],
    critic_params: list[torch.Tensor],
    target_params: list[torch.Tensor],
    critic_state: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor],
    actor_state: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor],
    shape: tuple[tuple[bool, ...], tuple[bool, ...], int, bool, str, bool],
    critic_hyper: tuple[float, float, float, float],
    actor_hyper: tuple[float, float, float, float],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SAC gradient step (the module docstring of agents/sac.py), updating the critics, the
    actor, log alpha (when tuned) and their Adam state in place. Returns the critic loss, the
    actor loss, alpha and the policy's entropy estimate.

    `noise` [2B, A]: the Gaussian draws for obs and next obs. `shape`: which layers of the
    actor and the critic are EnsembleLinear, the action dimensions, whether alpha is tuned, the
    activation (relu or tanh) and whether the hidden layers multiply in bfloat16. `*_hyper`: each
    Adam's lr, betas and eps.
    """
    actor_ensemble, critic_ensemble, A, tune_alpha, act, bf16 = shape
    B = obs.shape[0]
    actor = _layers(actor_params, actor_ensemble)
    critic = _layers(critic_params, critic_ensemble)
    target = _layers(target_params, critic_ensemble)
    K = critic[0][0].shape[0]
    alpha = log_alpha.exp()

    # the actor on obs (for its loss) and next obs (for the critics' targets) at once
    out, actor_inputs = _forward(torch.cat([obs, next_obs]).unsqueeze(0), actor, act, bf16)
    mean, raw_log_std = out[0, :, :A], out[0, :, A:]
    log_std = raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
    std = log_std.exp()
    u = torch.addcmul(mean, std, noise)
    a = torch.tanh(u)
    log_prob = SquashedGaussianHead.log_prob_of(noise, log_std, u)  # [2B]

    # critics towards r + d (min_k Q'_k(s', a') - alpha log pi(a'|s'))
    q_next, _ = _forward(torch.cat([next_obs, a[B:]], dim=1).expand(K, B, -1), target, act, bf16)
    next_v = q_next.squeeze(-1).min(dim=0).values - alpha * log_prob[B:]
    y = torch.addcmul(rewards, discounts, next_v)
    actions = torch.addcmul(from_env[0], env_actions, from_env[1])
    q, critic_inputs = _forward(torch.cat([obs, actions], dim=1).expand(K, B, -1), critic, act, bf16)
    error = q.squeeze(-1) - y  # [K, B]
    critic_loss = 0.5 * error.square().mean(dim=1).sum()
    critic_grads, _ = _backward(critic_inputs, critic, critic_ensemble, (error / B).unsqueeze(-1), act, bf16)
    _adam(critic_params, critic_grads, *critic_state, critic_hyper)

    # actor: mean(alpha log pi(a~|s) - min_k Q_k(s, a~)) through the updated critics
    critic = _layers(critic_params, critic_ensemble)
    pi_a, pi_log_prob = a[:B], log_prob[:B]
    q_pi, pi_inputs = _forward(torch.cat([obs, pi_a], dim=1).expand(K, B, -1), critic, act, bf16)
    q_pi = q_pi.squeeze(-1)
    q_min, argmin = q_pi.min(dim=0)
    actor_loss = (alpha * pi_log_prob - q_min).mean()
    grad_q = torch.zeros_like(q_pi).scatter_(0, argmin.unsqueeze(0), -1.0 / B)
    columns = slice(obs.shape[1], None)
    _, grad_a = _backward(pi_inputs, critic, critic_ensemble, grad_q.unsqueeze(-1), act, bf16, False, columns)
    grad_log_prob = alpha / B
    grad_u = grad_a.sum(dim=0) * (1.0 - pi_a.square()) + (2.0 * grad_log_prob) * pi_a
    raw = raw_log_std[:B]
    in_range = (raw >= LOG_STD_MIN) & (raw <= LOG_STD_MAX)
    grad_log_std = (grad_u * std[:B] * noise[:B] - grad_log_prob) * in_range
    grad_out = torch.cat([grad_u, grad_log_std], dim=1).unsqueeze(0)
    actor_grads, _ = _backward([x[:, :B] for x in actor_inputs], actor, actor_ensemble, grad_out, act, bf16)
    if tune_alpha:
        actor_params = [*actor_params, log_alpha]
        actor_grads = [*actor_grads, -(pi_log_prob + entropy_target).mean()]
    _adam(actor_params, actor_grads, *actor_state, actor_hyper)
    return critic_loss, actor_loss, alpha, -pi_log_prob.mean()


# ------------------------------------------------------------------ the agent's side
class GraphUpdate:
    """Runs `sac_step`, compiled, on a SAC agent's networks and optimisers (via its fused update,
    whose networks and checks it shares)."""

    def __init__(self, fused: FusedUpdate):
        self.fused = fused
        self.agent = fused.agent
        self.step = torch.compile(sac_step, fullgraph=True, dynamic=False)
        self.compile_seconds: float | None = None
        """How long the first compiled step took (compiling or loading the cached graph, and the step)."""
        self._inputs: tuple | None = None

    def refresh(self) -> None:
        """Forget the tensors collected from the agent (after a checkpoint load replaced them)."""
        self._inputs = None

    def _collect(self) -> tuple:
        """The step's tensor arguments that live across steps: parameters (detached views, so the
        step's in-place updates are the modules'), Adam state, shapes and hyperparameters."""
        agent, fused = self.agent, self.fused
        optimizers = (agent.critic_optimizer, agent.actor_optimizer)

        def state(opt: torch.optim.Optimizer, owners: list[nn.Parameter]) -> tuple:
            group = opt.param_groups[0]
            if len(opt.param_groups) > 1 or group["amsgrad"] or group["maximize"] or group["weight_decay"]:
                raise ValueError("the compiled SAC step runs plain Adam (one group, no amsgrad or weight decay)")
            states = [opt.state[p] for p in owners]
            steps = step_counters(states)
            return [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], steps[0]._base

        actor_layers, critic_layers = fused.actor.layers, fused.critic.layers
        actor_owners = fused.actor.params + ([agent.log_alpha] if agent.tune_alpha else [])
        shape = (
            tuple(isinstance(m, EnsembleLinear) for m in actor_layers),
            tuple(isinstance(m, EnsembleLinear) for m in critic_layers),
            fused.action_dim,
            agent.tune_alpha,
            agent.config.network.activation,
            fused.dtype == torch.bfloat16,
        )
        return (
            agent.log_alpha.detach(),
            (agent._from_env_offset, agent._inv_half_range),
            fused.entropy_target,
            *([p.detach() for p in net.params] for net in (fused.actor, fused.critic, fused.target)),
            state(agent.critic_optimizer, fused.critic.params),
            state(agent.actor_optimizer, actor_owners),
            shape,
            *((g["lr"], *g["betas"], g["eps"]) for g in (opt.param_groups[0] for opt in optimizers)),
        )

    def ready(self) -> bool:
        """Whether the optimisers have their state (made by the first, uncompiled, step)."""
        if self._inputs is not None:
            return True
        optimizers = (self.agent.critic_optimizer, self.agent.actor_optimizer)
        return all(opt.state.get(p) for opt in optimizers for p in opt.param_groups[0]["params"])

    def train(self, buffer: Any, gradient_steps: int) -> dict[str, Any] | None:
        """`gradient_steps` compiled steps; None where compiling failed (warned), having changed
        nothing but the generator's state: the caller runs the fused update instead."""
        agent, cfg = self.agent, self.agent.config
        A, gen = self.fused.action_dim, agent.generator
        if self._inputs is None:
            self._inputs = self._collect()
        for _ in range(gradient_steps):
            batch = buffer.sample(cfg.batch_size, gen)
            B = batch.obs.shape[0]
            noise = torch.randn((2 * B, A), generator=gen, device=agent.device)
            args = (
                batch.obs.flatten(1).float(),
                batch.actions,
                batch.next_obs.flatten(1).float(),
                batch.rewards,
                batch.discounts,
                noise,
                *self._inputs,
            )
            if self.compile_seconds is None:
                start = time.perf_counter()
                try:
                    losses = self.step(*args)
                except Exception as error:  # noqa: BLE001 - any compiler failure: fall back, say why
                    first_line = (str(error).strip().splitlines() or [""])[0]
                    warnings.warn(
                        f"--compile-update: compiling SAC's update failed ({type(error).__name__}: {first_line}); "
                        "continuing with the uncompiled fused update",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    return None
                self.compile_seconds = time.perf_counter() - start
            else:
                losses = self.step(*args)
            agent.gradient_steps += 1
            if agent.gradient_steps % cfg.target_update_interval == 0:
                polyak_update(agent._target_params, agent._critic_params, cfg.tau)
        critic_loss, actor_loss, alpha, entropy = losses
        return {
            "losses/critic_loss": critic_loss,
            "losses/actor_loss": actor_loss,
            "losses/alpha": alpha,
            "losses/entropy": entropy,
        }
