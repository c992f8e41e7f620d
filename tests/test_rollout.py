"""The collector stores what happened and bootstraps truncations from the true final state."""

import contextlib

import pytest
import torch

import envs
from networks.actor_critic import PolicyOutput
from runners.rollout import OnPolicyCollector


class SumValueAgent:
    """Always takes action 0; its value of an observation is the sum of its entries."""

    def initial_state(self, num_envs):
        return None  # feed-forward

    def act(self, obs, deterministic=False, generator=None, state=None, starts=None):
        n = obs.shape[0]
        return PolicyOutput(torch.zeros(n, dtype=torch.int64), torch.zeros(n), obs.sum(-1))

    def value(self, obs, state=None, starts=None):
        return obs.sum(-1)

    def frozen(self):
        return contextlib.nullcontext()


def test_next_values_bootstrap_from_final_obs_on_truncation_only():
    env = envs.make("CartPole-v1", num_envs=2, seed=0, max_episode_steps=3)
    finals = []
    step = env.step

    def recording_step(actions):
        out = step(actions)
        finals.append(out[4].final_obs.clone())
        return out

    env.step = recording_step
    collector = OnPolicyCollector(env, SumValueAgent(), n_steps=7)
    collector.reset(seed=None)
    rollout = collector.collect()

    assert rollout.truncated[:, 0].tolist() == [False, False, True, False, False, True, False]
    assert not rollout.terminated.any()
    for t in range(7):
        if t < 6:
            # obs[t + 1] is what the agent saw next; after a truncation that is the reset state
            assert torch.equal(rollout.obs[t + 1], finals[t]) != bool(rollout.truncated[t, 0])
        assert torch.allclose(rollout.next_values[t], finals[t].sum(-1))
    assert torch.allclose(rollout.next_values[-1], collector.obs.sum(-1))
    assert collector.pop_episode_stats() == {
        "charts/episode_return": 3.0,
        "charts/episode_length": 3.0,
        "charts/episodes": 4.0,
    }


@pytest.mark.parametrize("recurrent", ["none", "lstm"])
def test_values_of_truncated_steps_alone_equal_the_batched_forward(recurrent, monkeypatch):
    """On the CPU the collector evaluates V at the truncated steps' final observations only; the
    values equal those of one forward over every step (the GPU's way), recurrent state included."""
    from agents import PPOConfig
    from networks import NetworkConfig
    from runners.config import TrainConfig
    from runners.trainer import build_agent

    rollouts = {}
    for select in (True, False):
        monkeypatch.setattr(OnPolicyCollector, "select_truncated", select)
        env = envs.make("CartPole-v1", num_envs=4, seed=0, max_episode_steps=5)
        train = TrainConfig(algo="ppo", env_id="CartPole-v1", num_envs=4, seed=1, device="cpu")
        agent = build_agent(train, PPOConfig(n_steps=16, network=NetworkConfig(recurrent=recurrent)), env, "cpu")
        collector = OnPolicyCollector(env, agent, n_steps=16)
        collector.reset(seed=0)
        rollouts[select] = collector.collect()
    selected, batched = rollouts[True], rollouts[False]
    assert selected.truncated.sum() >= 8 and torch.equal(selected.truncated, batched.truncated)
    assert torch.equal(selected.obs, batched.obs)
    torch.testing.assert_close(selected.next_values, batched.next_values, rtol=1e-6, atol=1e-6)
    cut = selected.truncated
    assert not torch.allclose(selected.next_values[cut], torch.cat([selected.values[1:], selected.values[:1]])[cut])
