"""The agents' update math against hand-computed values (issue 16, item 6).

Every expected value is worked out apart from the code under test: small numbers in the
comments, or plain torch (matmuls, logsumexp, autograd) on a separate copy of the agent's
weights. The networks are tiny (one hidden layer of 4 or 8 units), so the file runs in seconds.
"""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch
from torch.testing import assert_close

from agents import appo as appo_module
from agents.a2c import A2C, A2CConfig
from agents.appo import APPO, APPOConfig
from agents.batch import Progress, Rollout, Transitions
from agents.dqn import DQN, DQNConfig
from agents.ppo import PPO, PPOConfig
from agents.sac import SAC, SACConfig
from agents.td3 import TD3, DDPGConfig, TD3Config
from networks import NetworkConfig
from runners.config import TrainConfig
from runners.run_dir import create_run_dir
from runners.trainer import Trainer

from conftest import read_metrics

OBS = gym.spaces.Box(-1.0, 1.0, (2,))
TWO_ACTIONS = gym.spaces.Discrete(2)
THREE_ACTIONS = gym.spaces.Discrete(3)
BOX_ACTIONS = gym.spaces.Box(-1.0, 1.0, (2,))
TANH_NET = NetworkConfig(hidden_sizes=(4,), activation="tanh", ortho_init=False)
RELU_NET = NetworkConfig(hidden_sizes=(8,), activation="relu", ortho_init=False)


# ---------------------------------------------------------------------------- helpers
def leaf_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's weights as new leaf tensors, to differentiate a hand-written loss by."""
    return {name: p.detach().clone().requires_grad_(True) for name, p in module.named_parameters()}


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(before[name], after[name]) for name in before)


def grads_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's .grad by parameter name (zeros where a parameter got none)."""
    return {
        name: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
        for name, p in module.named_parameters()
    }


def hand_grads(loss: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params.items(), grads, strict=True)}


def assert_same_grads(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert_close(actual[name], expected[name], atol=1e-6, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


BIG = 1e6
"""With lr = eps = BIG an optimiser's first step is the gradient itself (to 1e-6 relative):
Adam moves p by lr g / (|g| + eps), RMSprop by lr g / (sqrt(1 - alpha) |g| + eps). Updates are
then read from the parameters, whatever way the agent computes and applies its gradients."""


def proportional(optimizer: torch.optim.Optimizer) -> None:
    """Set lr = eps = BIG on the optimiser (see BIG)."""
    for group in optimizer.param_groups:
        group["lr"] = group["eps"] = BIG


def assert_stepped_by(
    before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], scale: float = 1.0
) -> None:
    """The parameters moved by the first step of a proportional optimiser on `grads`:
    p - BIG g / (scale |g| + BIG), scale 1 for Adam and sqrt(1 - alpha) for RMSprop."""
    assert after.keys() == grads.keys()
    for name, g in grads.items():
        expected = BIG * g / (scale * g.abs() + BIG)
        assert_close(before[name] - after[name], expected, atol=2e-7, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def uniform(*shape: int, seed: int) -> torch.Tensor:
    """Numbers in [-1, 1) from their own generator."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# Plain-torch forward passes of the tiny networks, written from their definitions:
# EnsembleLinear is x @ W[k] + b[k] per member k (W [K, in, out]), nn.Linear is x @ W.T + b.
def actor_critic_forward(p: dict, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ActorCritic without a shared encoder: member 0's tanh trunk feeds the policy, member 1's
    the value. obs [B, 2] -> logits [B, K], values [B]."""
    w, b = p["encoder.net.0.weight"], p["encoder.net.0.bias"]
    policy_features = torch.tanh(obs @ w[0] + b[0])
    value_features = torch.tanh(obs @ w[1] + b[1])
    logits = policy_features @ p["policy_head.linear.weight"].T + p["policy_head.linear.bias"]
    values = value_features @ p["value_head.linear.weight"].T + p["value_head.linear.bias"]
    return logits, values.squeeze(-1)


def categorical(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(a|s) [B] and the entropy [B] of softmax(logits): log p = logits - logsumexp(logits)."""
    log_p = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    return log_p[torch.arange(len(actions)), actions], -(log_p.exp() * log_p).sum(dim=-1)


def q_forward(p: dict, obs: torch.Tensor) -> torch.Tensor:
    """QNetwork: one ReLU layer, then a linear layer per action. obs [B, 2] -> [B, n]."""
    hidden = torch.relu(obs @ p["encoder.net.0.weight"][0] + p["encoder.net.0.bias"][0])
    return hidden @ p["head.linear.weight"].T + p["head.linear.bias"]


def actor_forward(p: dict, obs: torch.Tensor) -> torch.Tensor:
    """DeterministicActor: tanh(linear(relu(linear(obs)))) in [-1, 1]^A."""
    hidden = torch.relu(obs @ p["encoder.net.0.weight"][0] + p["encoder.net.0.bias"][0])
    return torch.tanh(hidden @ p["out.weight"].T + p["out.bias"])


def critic_forward(p: dict, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """ContinuousCritic: member k is a ReLU MLP over cat(obs, action). -> [K, B]."""
    x = torch.cat([obs, actions], dim=-1)
    w, b, w_out, b_out = p["trunk.net.0.weight"], p["trunk.net.0.bias"], p["out.weight"], p["out.bias"]
    return torch.stack([(torch.relu(x @ w[k] + b[k]) @ w_out[k] + b_out[k]).squeeze(-1) for k in range(len(w))])


def huber(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 1.0, 0.5 * x.square(), x.abs() - 0.5)


# ---------------------------------------------------------------------------- PPO
def make_ppo(**overrides) -> PPO:
    torch.manual_seed(0)
    return PPO(PPOConfig(network=TANH_NET, **overrides), OBS, TWO_ACTIONS, num_envs=2)


def ppo_samples(agent: PPO, ratios: list[float], seed: int = 1):
    """Observations [C, 2], actions [C], old log-probabilities [C] chosen so that the current
    policy's ratio pi / pi_old is exactly `ratios`, and the current values [C]."""
    obs = uniform(len(ratios), 2, seed=seed)
    actions = torch.arange(len(ratios)) % 2
    with torch.no_grad():
        logits, values = actor_critic_forward(leaf_copy(agent.net), obs)
        log_probs, _ = categorical(logits, actions)
    return obs, actions, log_probs - torch.tensor(ratios).log(), values


def ppo_losses(agent: PPO, obs, actions, old_log_probs, old_values, advantages, returns, clip: float = 0.2):
    """PPO.losses on one chunk of single transitions ([1, C, ...]), advantages as given."""
    chunks = [x.unsqueeze(0) for x in (obs, actions, old_log_probs, old_values, advantages, returns)]
    return agent.losses(*chunks, None, None, torch.tensor(clip), False)


def test_ppo_clipped_surrogate_and_its_statistics_match_hand_values():
    agent = make_ppo(vf_coef=0.5, ent_coef=0.01)
    ratios = [1.5, 0.5, 1.1, 0.5, 1.5]
    advantages = torch.tensor([2.0, -1.0, 1.0, 1.0, -1.0])
    # min(r A, clip(r, 0.8, 1.2) A) per sample:
    #   r=1.5 A=+2: min(3.0, 2.4)   =  2.4  the clipped term: no gradient
    #   r=0.5 A=-1: min(-0.5, -0.8) = -0.8  the clipped term: no gradient
    #   r=1.1 A=+1: min(1.1, 1.1)   =  1.1  inside the range
    #   r=0.5 A=+1: min(0.5, 0.8)   =  0.5  outside the range, but the unclipped term is smaller
    #   r=1.5 A=-1: min(-1.5, -1.2) = -1.5  outside the range, but the unclipped term is smaller
    # policy loss = -(2.4 - 0.8 + 1.1 + 0.5 - 1.5) / 5 = -0.34
    # approx KL = mean((r - 1) - log r) = (2 x 0.094535 + 2 x 0.193147 + 0.004690) / 5 = 0.116011
    # clip fraction: |r - 1| > 0.2 for 4 of 5 samples = 0.8
    obs, actions, old_log_probs, _ = ppo_samples(agent, ratios)
    old_values = torch.tensor([0.1, -0.2, 0.3, 0.0, 0.5])
    returns = torch.tensor([1.0, -1.0, 0.5, 2.0, 0.0])
    loss, stats = ppo_losses(agent, obs, actions, old_log_probs, old_values, advantages, returns)

    p = leaf_copy(agent.net)
    logits, values = actor_critic_forward(p, obs)
    log_probs, entropy = categorical(logits, actions)
    ratio = (log_probs - old_log_probs).exp()
    unclipped = torch.tensor([False, False, True, True, True])
    policy_loss = -torch.where(unclipped, ratio * advantages, torch.tensor([2.4, -0.8, 0.0, 0.0, 0.0])).mean()
    value_loss = (values - returns).square().mean()
    hand_loss = policy_loss + 0.5 * value_loss - 0.01 * entropy.mean()

    assert_close(policy_loss.detach(), torch.tensor(-0.34))
    expected_stats = torch.tensor([-0.34, value_loss.item(), entropy.mean().item(), 0.116011, 0.8])
    assert_close(stats, expected_stats, atol=1e-5, rtol=1e-5)
    assert_close(loss.detach(), hand_loss.detach())
    loss.backward()
    assert_same_grads(grads_of(agent.net), hand_grads(hand_loss, p))


@pytest.mark.parametrize(
    ("ratio", "advantage", "clipped"),
    [(1.5, 2.0, True), (0.5, -1.0, True), (1.5, -1.0, False), (0.5, 1.0, False), (1.1, 1.0, False)],
)
def test_ppo_a_sample_whose_ratio_is_clipped_gives_the_policy_no_gradient(ratio, advantage, clipped):
    agent = make_ppo(vf_coef=0.5, ent_coef=0.0)
    obs, actions, old_log_probs, values = ppo_samples(agent, [ratio])
    returns = values + 1.0
    loss, _ = ppo_losses(agent, obs, actions, old_log_probs, values, torch.tensor([advantage]), returns)
    loss.backward()
    grads = grads_of(agent.net)

    p = leaf_copy(agent.net)
    logits, hand_values = actor_critic_forward(p, obs)
    log_probs, _ = categorical(logits, actions)
    # a clipped sample's surrogate is the constant clip(r) A; otherwise it is r(theta) A
    surrogate = torch.zeros(()) if clipped else (log_probs - old_log_probs).exp().sum() * advantage
    hand_loss = -surrogate + 0.5 * (hand_values - returns).square().sum()
    assert_same_grads(grads, hand_grads(hand_loss, p))

    policy = torch.cat(
        [
            grads["policy_head.linear.weight"].flatten(),
            grads["policy_head.linear.bias"],
            grads["encoder.net.0.weight"][0].flatten(),  # member 0: the policy's trunk
            grads["encoder.net.0.bias"][0].flatten(),
        ]
    )
    assert torch.all(policy == 0) == clipped
    assert grads["value_head.linear.bias"].abs().item() > 0  # the critic learns from every sample


@pytest.mark.parametrize("clip_range_vf", [None, 0.2])
def test_ppo_value_loss_clipping(clip_range_vf):
    agent = make_ppo(vf_coef=1.0, ent_coef=0.0, clip_range_vf=clip_range_vf)
    obs, actions, old_log_probs, values = ppo_samples(agent, [1.0, 1.0, 1.0, 1.0])
    old_values = values - torch.tensor([0.5, 0.1, 0.5, -0.5])
    returns = values + torch.tensor([1.0, 0.5, -1.0, -0.8])
    # c = 0.2: the clipped prediction is V_old + clip(V - V_old, -c, c), the loss max(unclipped, clipped):
    #   sample 0: V - V_old = 0.5  -> V - 0.3: (V - R)^2 = 1,    (V - 0.3 - R)^2 = 1.69: 1.69 (clipping binds)
    #   sample 1: V - V_old = 0.1  -> V:       (V - R)^2 = 0.25, the same:               0.25 (inside the range)
    #   sample 2: V - V_old = 0.5  -> V - 0.3: (V - R)^2 = 1,    (V - 0.3 - R)^2 = 0.49: 1 (unclipped is larger)
    #   sample 3: V - V_old = -0.5 -> V + 0.3: (V - R)^2 = 0.64, (V + 0.3 - R)^2 = 1.21: 1.21 (binds from below)
    # value loss: clipped (1.69 + 0.25 + 1 + 1.21) / 4 = 1.0375; unclipped (1 + 0.25 + 1 + 0.64) / 4 = 0.7225
    # dLoss/dV_i = 2 (V - R) / 4 where the unclipped term is the max, 0 where the clipped one binds (constant in V):
    #   clipped [0, -0.25, 0.5, 0], unclipped [-0.5, -0.25, 0.5, 0.4]; the value head's bias gets their sum
    zero_advantages = torch.zeros(4)  # no policy loss, no policy gradient
    loss, stats = ppo_losses(agent, obs, actions, old_log_probs, old_values, zero_advantages, returns)
    binding = clip_range_vf is not None
    assert_close(stats[1], torch.tensor(1.0375 if binding else 0.7225))
    assert_close(stats[0], torch.tensor(0.0))
    loss.backward()
    grads = grads_of(agent.net)
    assert_close(grads["value_head.linear.bias"], torch.tensor([0.25 if binding else 0.15]))

    dloss_dvalues = torch.tensor([0.0, -0.25, 0.5, 0.0] if binding else [-0.5, -0.25, 0.5, 0.4])
    p = leaf_copy(agent.net)
    _, hand_values = actor_critic_forward(p, obs)
    assert_same_grads(grads, hand_grads((dloss_dvalues * hand_values).sum(), p))


def ppo_rollout(agent: PPO, log_ratio: float) -> Rollout:
    """A rollout of 4 steps of 2 envs whose every ratio pi / pi_old is exp(log_ratio)."""
    T, N = 4, 2
    obs = uniform(T, N, 2, seed=2)
    actions = torch.arange(T * N).reshape(T, N) % 2
    with torch.no_grad():
        logits, values = actor_critic_forward(leaf_copy(agent.net), obs.reshape(-1, 2))
        log_probs, _ = categorical(logits, actions.reshape(-1))
    values = values.reshape(T, N)
    no = torch.zeros(T, N, dtype=torch.bool)
    next_values = torch.cat([values[1:], torch.zeros(1, N)])
    rewards = uniform(T, N, seed=3)
    return Rollout(obs, actions, log_probs.reshape(T, N) - log_ratio, values, rewards, no, no.clone(), next_values)


@pytest.mark.parametrize(("target_kl", "stops"), [(None, False), (0.5, False), (0.45, True), (1e-3, True)])
def test_ppo_target_kl_stops_before_the_step_that_exceeds_it(target_kl, stops):
    # every ratio is e: approx KL = (e - 1) - log e = e - 2 = 0.71828 on the first (and only) minibatch;
    # the update stops when it exceeds 1.5 x target_kl: 0.75 for 0.5 (steps), 0.675 for 0.45 (stops)
    agent = make_ppo(n_steps=4, batch_size=64, n_epochs=1, target_kl=target_kl)
    before = snapshot(agent.net)
    metrics = agent.update(ppo_rollout(agent, log_ratio=1.0), Progress(0, 1000))
    assert changed(before, snapshot(agent.net)) is not stops
    assert metrics["losses/stopped_early"] == float(stops)
    if stops:
        assert "losses/approx_kl" not in metrics
    else:
        assert_close(metrics["losses/approx_kl"], torch.tensor(math.e - 2))


# ---------------------------------------------------------------------------- A2C
@pytest.mark.parametrize("max_grad_norm", [1e6, 1e-3])
def test_a2c_steps_along_the_gradient_of_the_hand_written_loss(max_grad_norm):
    torch.manual_seed(0)
    cfg = A2CConfig(
        n_steps=3,
        gamma=0.5,
        vf_coef=0.5,
        ent_coef=0.01,
        max_grad_norm=max_grad_norm,
        learning_rate=BIG,  # RMSprop's first step is then the (clipped) gradient itself
        optimizer_eps=BIG,
        network=TANH_NET,
    )
    agent = A2C(cfg, OBS, TWO_ACTIONS, num_envs=2)
    T, N = 3, 2
    obs = uniform(T, N, 2, seed=4)
    actions = torch.tensor([[0, 1], [1, 1], [0, 0]])
    rewards = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    terminated = torch.tensor([[False, False], [False, True], [False, False]])
    truncated = torch.tensor([[True, False], [False, False], [False, False]])
    values = torch.tensor([[0.5, 0.25], [-0.5, 0.0], [1.0, 0.5]])
    # values[t + 1] where the episode goes on; env 0's truncated step 0 reached a final observation worth 2;
    # env 1's terminated step 1 reached a state with no future (its 0.5 is ignored); then the bootstrap values
    next_values = torch.tensor([[2.0, 0.0], [1.0, 0.5], [4.0, 2.0]])
    # gae_lambda = 1: discounted returns, gamma = 0.5, cut at episode ends, bootstrapped from next_values:
    #   env 0: R2 = 3 + 0.5 x 4 = 5,  R1 = 2 + 0.5 x 5 = 4.5, R0 = 1 + 0.5 x 2 = 2 (truncated: bootstraps)
    #   env 1: R2 = 1 + 0.5 x 2 = 2,  R1 = 1 (terminated),   R0 = 1 + 0.5 x 1 = 1.5
    returns = torch.tensor([[2.0, 1.5], [4.5, 1.0], [5.0, 2.0]])
    advantages = returns - values  # [[1.5, 1.25], [5.0, 1.0], [4.0, 1.5]]
    log_probs = torch.zeros(T, N)  # A2C does not read them
    rollout = Rollout(obs, actions, log_probs, values, rewards, terminated, truncated, next_values)

    p = leaf_copy(agent.net)
    logits, hand_values = actor_critic_forward(p, obs.reshape(-1, 2))
    hand_log_probs, entropy = categorical(logits, actions.reshape(-1))
    policy_loss = -(advantages.reshape(-1) * hand_log_probs).mean()
    value_loss = (hand_values - returns.reshape(-1)).square().mean()
    expected = hand_grads(policy_loss + 0.5 * value_loss - 0.01 * entropy.mean(), p)
    norm = torch.cat([g.flatten() for g in expected.values()]).norm()
    if max_grad_norm < 1:  # global norm clipping: g x max_norm / (||g|| + 1e-6)
        assert norm > 10 * max_grad_norm
        expected = {name: g * max_grad_norm / (norm + 1e-6) for name, g in expected.items()}

    before = snapshot(agent.net)
    metrics = agent.update(rollout, Progress(0, 1000))
    # RMSprop's first step from a zero square average: p - lr g / (sqrt((1 - alpha) g^2) + eps)
    assert_stepped_by(before, snapshot(agent.net), expected, scale=math.sqrt(1 - cfg.rmsprop_alpha))
    assert_close(metrics["losses/policy_loss"], policy_loss.detach())
    assert_close(metrics["losses/value_loss"], value_loss.detach())
    assert_close(metrics["losses/entropy"], entropy.mean().detach())


# ---------------------------------------------------------------------------- DQN
def transitions(obs, actions, rewards, discounts, next_obs, weights) -> Transitions:
    return Transitions(obs, actions, rewards, discounts, next_obs, weights, torch.arange(len(rewards)))


@pytest.mark.parametrize("double_q", [True, False])
def test_dqn_td_target_double_q_and_weighted_huber_loss(double_q):
    torch.manual_seed(0)
    cfg = DQNConfig(network=RELU_NET, double_q=double_q, max_grad_norm=1e6)
    agent = DQN(cfg, OBS, THREE_ACTIONS, num_envs=1)
    with torch.no_grad():  # make the two nets disagree on the best next action
        agent.q_net.head.linear.bias += torch.tensor([10.0, 0.0, 0.0])  # online: action 0
        agent.q_target.head.linear.bias += torch.tensor([0.0, 0.0, 10.0])  # target: action 2
    obs, next_obs = uniform(4, 2, seed=5), uniform(4, 2, seed=6)
    actions = torch.tensor([0, 1, 2, 1])
    discounts = torch.tensor([0.9, 0.0, 0.81, 0.9])
    weights = torch.tensor([2.0, 0.0, 0.5, 1.0])
    online, target = leaf_copy(agent.q_net), leaf_copy(agent.q_target)
    with torch.no_grad():
        online_next, target_next = q_forward(online, next_obs), q_forward(target, next_obs)
        assert (online_next.argmax(dim=1) == 0).all() and (target_next.argmax(dim=1) == 2).all()
        # double Q: the online net picks a' = 0 and the target net values it; plain DQN: max_a' Q_target(s', a')
        next_value = target_next[:, 0] if double_q else target_next.max(dim=1).values
        q_taken = q_forward(online, obs)[torch.arange(4), actions]
    # rewards chosen so that the TD errors q_taken - (r + d next_value) are these, one per Huber regime and sign;
    # the other rule's target would move them by d x (Q_target(s', 2) - Q_target(s', 0)), about 9
    td = torch.tensor([0.5, -2.0, 0.25, 3.0])
    rewards = q_taken - td - discounts * next_value
    target_value = rewards + discounts * next_value

    proportional(agent.optimizer)
    before = snapshot(agent.q_net)
    metrics, td_errors = agent.update(
        transitions(obs, actions, rewards, discounts, next_obs, weights), Progress(0, 1000)
    )
    assert_close(td_errors, td, atol=1e-5, rtol=0)
    # Huber: [0.125, 1.5, 0.03125, 2.5]; weighted mean = (2 x 0.125 + 0 + 0.5 x 0.03125 + 2.5) / 4 = 0.69140625
    assert_close(metrics["losses/td_loss"], torch.tensor(0.69140625))
    hand_loss = (weights * huber(q_forward(online, obs)[torch.arange(4), actions] - target_value)).mean()
    assert_stepped_by(before, snapshot(agent.q_net), hand_grads(hand_loss, online))


# ---------------------------------------------------------------------------- TD3 and DDPG
def make_td3(config_cls: type = TD3Config, **overrides) -> TD3:
    torch.manual_seed(0)
    return TD3(config_cls(network=RELU_NET, **overrides), OBS, BOX_ACTIONS, num_envs=1)


def fix_target_actor(agent: TD3) -> None:
    """actor_target(s') = tanh(atanh([0.2, 0.8])) = [0.2, 0.8] for every s'."""
    with torch.no_grad():
        agent.actor_target.out.weight.zero_()
        agent.actor_target.out.bias.copy_(torch.atanh(torch.tensor([0.2, 0.8])))


def td3_batch(batch_size: int = 4, weights: torch.Tensor | None = None) -> Transitions:
    obs, actions, next_obs = (
        uniform(batch_size, 2, seed=7),
        uniform(batch_size, 2, seed=8),
        uniform(batch_size, 2, seed=9),
    )
    rewards = uniform(batch_size, seed=10)
    discounts = torch.full((batch_size,), 0.99)
    weights = torch.ones(batch_size) if weights is None else weights
    return transitions(obs, actions, rewards, discounts, next_obs, weights)


def test_td3_target_policy_noise_is_clipped_then_the_action_clamped():
    agent = make_td3(target_policy_noise=0.2, target_noise_clip=0.5)
    fix_target_actor(agent)
    noise = torch.tensor([[100.0, 100.0], [-100.0, -100.0], [1.0, -1.0], [0.0, 0.0]])
    # smoothing = clip(0.2 x noise, -0.5, 0.5): [0.5, 0.5], [-0.5, -0.5], [0.2, -0.2], [0, 0]
    # a' = clip([0.2, 0.8] + smoothing, -1, 1): [0.7, 1.0] (0.8 + 0.5 clamped), [-0.3, 0.3], [0.4, 0.6], [0.2, 0.8]
    next_actions = torch.tensor([[0.7, 1.0], [-0.3, 0.3], [0.4, 0.6], [0.2, 0.8]])
    obs, actions, next_obs = uniform(4, 2, seed=7), uniform(4, 2, seed=8), uniform(4, 2, seed=9)
    rewards = torch.tensor([1.0, -1.0, 0.5, 2.0])
    discounts = torch.tensor([0.99, 0.9, 0.5, 0.0])  # the last one terminated: its target is its reward
    weights = torch.tensor([1.0, 0.5, 2.0, 1.0])

    target, online = leaf_copy(agent.critic_target), leaf_copy(agent.critic)
    with torch.no_grad():
        y = rewards + discounts * critic_forward(target, next_obs, next_actions).min(dim=0).values
        td = critic_forward(online, obs, actions) - y  # [2 critics, B]
        # without the noise clip a' would be clip(mu + 0.2 noise, -1, 1) = [1, 1], [-1, -1]: a different target
        unclipped = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.4, 0.6], [0.2, 0.8]])
        y_unclipped = rewards + discounts * critic_forward(target, next_obs, unclipped).min(dim=0).values
        assert ((y_unclipped - y)[:2].abs() > 1e-3).all()
    assert_close(y[3], torch.tensor(2.0))

    batch = Transitions(obs, actions, rewards, discounts, next_obs, weights, torch.arange(len(rewards)))
    metrics, td_errors = agent.critic_step(batch, noise)
    assert_close(td_errors, td.abs().mean(dim=0))
    assert_close(metrics["losses/critic_loss"], (weights * td.square()).mean(dim=1).sum())


def test_td3_update_draws_the_smoothing_noise_from_the_agent_generator(monkeypatch):
    agent = make_td3(target_policy_noise=0.2, target_noise_clip=0.5, policy_delay=1000)
    fix_target_actor(agent)
    batch = td3_batch()
    draws = []

    def huge_randn(shape, generator=None, device=None):  # a huge standard normal draw: +100 everywhere
        draws.append((tuple(shape), generator))
        return torch.full(tuple(shape), 100.0)

    # a' = clip([0.2, 0.8] + clip(0.2 x 100, +-0.5), -1, 1) = [0.7, 1.0] for every sample
    next_actions = torch.tensor([[0.7, 1.0]]).expand(4, 2)
    with torch.no_grad():
        next_q = critic_forward(leaf_copy(agent.critic_target), batch.next_obs, next_actions)
        y = batch.rewards + batch.discounts * next_q.min(dim=0).values
        td = critic_forward(leaf_copy(agent.critic), batch.obs, batch.actions) - y  # before the step

    monkeypatch.setattr(torch, "randn", huge_randn)
    metrics, td_errors = agent.update(batch, Progress(0, 1000))
    monkeypatch.undo()
    assert draws == [((4, 2), agent.generator)]
    assert "losses/actor_loss" not in metrics  # policy_delay 1000
    assert_close(td_errors, td.abs().mean(dim=0))
    assert_close(metrics["losses/critic_loss"], td.square().mean(dim=1).sum())


def test_td3_updates_the_actor_and_the_targets_every_policy_delay_steps():
    agent = make_td3(policy_delay=2, tau=0.5)
    batch = td3_batch(8)
    for k in range(1, 5):
        before = {name: snapshot(m) for name, m in agent.modules().items()}
        metrics, _ = agent.update(batch, Progress(k, 1000))
        after = {name: snapshot(m) for name, m in agent.modules().items()}
        delayed = k % 2 == 0
        moved = {name: changed(before[name], after[name]) for name in before}
        assert moved == {"actor": delayed, "actor_target": delayed, "critic": True, "critic_target": delayed}, k
        assert ("losses/actor_loss" in metrics) == delayed
        if delayed:  # Polyak with tau = 0.5, after both steps: target <- (target + online) / 2
            for online, target in (("actor", "actor_target"), ("critic", "critic_target")):
                for name, value in after[target].items():
                    assert_close(value, 0.5 * before[target][name] + 0.5 * after[online][name])


def test_td3_actor_step_ascends_the_first_critic_and_leaves_the_critics_alone():
    agent = make_td3()
    with torch.no_grad():  # the second critic is the lower one: the min of the two would follow it
        agent.critic.out.bias[1] -= 10.0
    obs = uniform(6, 2, seed=11)
    actor, critic = leaf_copy(agent.actor), leaf_copy(agent.critic)
    q = critic_forward({k: v.detach() for k, v in critic.items()}, obs, actor_forward(actor, obs))  # [2, B]
    hand_loss = -q[0].mean()
    assert (q[1] < q[0]).all()
    proportional(agent.actor_optimizer)
    before_actor, before_critic = snapshot(agent.actor), snapshot(agent.critic)
    loss = agent.actor_step(obs)
    assert_close(loss, hand_loss.detach())
    assert_stepped_by(before_actor, snapshot(agent.actor), hand_grads(hand_loss, actor))
    assert not changed(before_critic, snapshot(agent.critic))
    assert all(p.grad is None for p in agent.critic.parameters())  # no gradient left for the critics either


@pytest.mark.parametrize("algo", ["dqn", "td3", "sac"])
def test_zero_importance_weights_give_the_critic_no_gradient(algo):
    torch.manual_seed(0)
    if algo == "dqn":
        agent = DQN(DQNConfig(network=RELU_NET), OBS, THREE_ACTIONS, num_envs=1)
        critic, loss_name = agent.q_net, "losses/td_loss"
        actions = torch.tensor([0, 1, 2, 1])
    else:
        cls, cfg = (TD3, TD3Config) if algo == "td3" else (SAC, SACConfig)
        agent = cls(cfg(network=RELU_NET), OBS, BOX_ACTIONS, num_envs=1)
        critic, loss_name = agent.critic, "losses/critic_loss"
        actions = uniform(4, 2, seed=8)
    rewards = torch.tensor([1.0, -1.0, 2.0, 0.5])
    discounts = torch.full((4,), 0.99)

    def update(weights):
        batch = transitions(uniform(4, 2, seed=7), actions, rewards, discounts, uniform(4, 2, seed=9), weights)
        return agent.update(batch, Progress(0, 1000))

    before = snapshot(critic)
    metrics, td_errors = update(torch.zeros(4))
    assert (td_errors.abs() > 0).all()  # the errors are there, only their weights are zero
    assert metrics[loss_name].item() == 0.0
    assert not changed(before, snapshot(critic))  # Adam moves every weight by about lr unless its gradient is 0

    update(torch.tensor([0.0, 0.0, 1.0, 0.0]))  # one weighted sample: the critic learns
    assert changed(before, snapshot(critic))


def test_ddpg_trains_end_to_end_with_one_critic_no_delay_and_no_smoothing(tmp_path, monkeypatch):
    calls = {"critic": 0, "actor": 0, "noise": []}
    critic_step, actor_step = TD3.critic_step, TD3.actor_step

    def counting_critic_step(self, *args):
        calls["critic"] += 1
        calls["noise"].append(args[-1])
        return critic_step(self, *args)

    def counting_actor_step(self, obs):
        calls["actor"] += 1
        return actor_step(self, obs)

    monkeypatch.setattr(TD3, "critic_step", counting_critic_step)
    monkeypatch.setattr(TD3, "actor_step", counting_actor_step)
    train = TrainConfig(
        algo="ddpg",
        env_id="Pendulum-v1",
        total_steps=600,
        num_envs=1,
        device="cpu",
        eval_episodes=2,
        eval_every=0,
        checkpoint_every=0,
        progress=False,
        log_every=100,
    )
    net = NetworkConfig(hidden_sizes=(16,), activation="relu", ortho_init=False)
    cfg = DDPGConfig(learning_starts=100, batch_size=32, buffer_size=1000, network=net)
    trainer = Trainer(train, cfg)
    agent = trainer.agent
    assert isinstance(agent, TD3)
    assert agent.critic.members == 1 and agent.critic_target.members == 1
    assert agent.critic.out.weight.shape[0] == 1
    result = trainer.run(create_run_dir(tmp_path / "r"))

    assert result.status == "finished" and result.global_step == 600
    # one gradient step per env step once past learning_starts: env steps 101..600
    assert agent.gradient_steps == 500
    assert calls["critic"] == calls["actor"] == 500  # the actor steps with every critic step
    assert all(noise is None for noise in calls["noise"])  # no target policy smoothing drawn
    rows = read_metrics(tmp_path / "r")
    trained = [row for row in rows if "losses/critic_loss" in row]
    assert [row["step"] for row in trained] == [200, 300, 400, 500, 600]
    for row in trained:
        assert math.isfinite(row["losses/critic_loss"]) and math.isfinite(row["losses/actor_loss"])
    assert trained[-1]["charts/gradient_steps"] == 500
    evals = [row["eval/mean_return"] for row in rows if "eval/mean_return" in row]
    assert len(evals) == 1 and math.isfinite(evals[0])
    assert result.final_eval is not None and math.isfinite(result.final_eval.mean_return)


# ---------------------------------------------------------------- APPO
def test_appo_corrects_with_the_behaviour_policy_and_clips_against_the_target_network(monkeypatch):
    # Data from a stale policy mu: V-trace must weigh it by pi_target / mu (mu: the rollout's
    # log-probs), the clipped ratio must be pi / pi_target, values come from the current net,
    # and a truncated step bootstraps from V(final_obs).
    env = gym.make("CartPole-v1")
    torch.manual_seed(0)
    cfg = APPOConfig(n_steps=3, batch_size=6, n_epochs=1, target_update_interval=2, normalize_advantage=False)
    agent = APPO(cfg, env.observation_space, env.action_space, 2, "cpu", 0)
    with torch.no_grad():  # the current policy moves away from the target network's
        for p in agent.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    T, N = 3, 2
    g = torch.Generator().manual_seed(1)
    obs, final_obs = torch.randn(T, N, 4, generator=g), torch.randn(T, N, 4, generator=g)
    last_obs = torch.randn(N, 4, generator=g)
    actions = torch.randint(0, 2, (T, N), generator=g)
    behaviour = torch.log(torch.full((T, N), 0.3))
    truncated = torch.tensor([[False, False], [True, False], [False, False]])
    terminated = torch.tensor([[False, False], [False, False], [False, True]])
    rollout = Rollout(
        obs, actions, behaviour, torch.zeros(T, N), torch.ones(T, N), terminated, truncated, torch.zeros(T, N),
        None, None, final_obs, last_obs,
    )  # fmt: skip
    with torch.no_grad():
        target_log_probs = agent.target_net.evaluate(obs.flatten(0, 1), actions.flatten())[0].view(T, N)
        current_log_probs = agent.net.evaluate(obs.flatten(0, 1), actions.flatten())[0].view(T, N)
        values = agent.net.value(obs.flatten(0, 1)).view(T, N)
        v_final, v_last = agent.net.value(final_obs[1, 0:1]), agent.net.value(last_obs)
    assert not torch.allclose(target_log_probs, current_log_probs)
    target_before = {k: v.clone() for k, v in agent.target_net.state_dict().items()}

    seen = {}
    original_vtrace, original_losses = appo_module.vtrace, PPO.losses

    def recording_vtrace(*args, **kwargs):
        seen["args"] = args
        return original_vtrace(*args, **kwargs)

    def recording_losses(self, *minibatch):
        seen.setdefault("old_log_probs", minibatch[2])  # the denominator of PPO's ratio
        return original_losses(self, *minibatch)

    monkeypatch.setattr(appo_module, "vtrace", recording_vtrace)
    monkeypatch.setattr(PPO, "losses", recording_losses)
    agent.update(rollout, Progress(6, 100))

    mu, pi_target, rewards, v, next_v = seen["args"][:5]
    assert_close(mu, behaviour)
    assert_close(pi_target, target_log_probs)
    assert_close(v, values)
    assert_close(next_v[1, 0], v_final[0])  # truncated: V(final observation)
    assert_close(next_v[2, 1], v_last[1])  # the unroll's end: V(last observation)
    assert_close(next_v[0], values[1])  # otherwise the next step's value
    assert_close(seen["old_log_probs"].flatten(), target_log_probs.flatten())  # r = pi / pi_target
    # the target network copies the policy every target_update_interval (2) updates
    assert all(torch.equal(target_before[k], t) for k, t in agent.target_net.state_dict().items())
    agent.update(rollout, Progress(12, 100))
    assert all(torch.equal(agent.net.state_dict()[k], t) for k, t in agent.target_net.state_dict().items())
