"""The collector stores what happened and bootstraps truncations from the true final state."""

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
