"""Off-policy agents: network math, the collection/update loop, determinism and resume with a saved buffer."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents.batch import Progress
from agents.dqn import DQN, DQNConfig
from agents.optim import polyak_update
from agents.sac import SAC, SACConfig
from networks import NetworkConfig
from networks.heads import DuelingHead, SquashedGaussianHead
from runners.checkpoint import load_checkpoint
from runners.config import TrainConfig
from runners.off_policy import OffPolicyLoop
from runners.run_dir import create_run_dir, read_status
from runners.trainer import Trainer

from conftest import read_metrics

SMALL_NET = NetworkConfig(hidden_sizes=(32, 32), activation="relu", ortho_init=False)


def test_squashed_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    head = SquashedGaussianHead(5, 3)
    params = torch.randn(64, 6) * 2
    actions, log_prob = head.sample(params, torch.Generator().manual_seed(1))
    mean, log_std = head.split(params)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Independent(torch.distributions.Normal(mean, log_std.exp()), 1),
        [torch.distributions.TanhTransform()],
    )
    # recompute the pre-squash sample from the same noise to avoid atanh at |a| ~ 1
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    u = mean + log_std.exp() * noise
    assert torch.allclose(actions, torch.tanh(u))
    reference = dist.base_dist.log_prob(u) - torch.distributions.TanhTransform().log_abs_det_jacobian(u, actions).sum(
        -1
    )
    assert torch.allclose(log_prob, reference, atol=1e-4)
    assert actions.abs().max() <= 1  # tanh saturates to 1.0 in float32; the log-prob above stays exact
    assert torch.equal(head.mode(params), torch.tanh(mean))


def test_squashed_gaussian_log_std_is_clamped():
    head = SquashedGaussianHead(1, 1)
    mean, log_std = head.split(torch.tensor([[0.0, -100.0], [0.0, 100.0]]))
    assert log_std.flatten().tolist() == [-20.0, 2.0]


def test_dueling_values_average_to_the_state_value():
    torch.manual_seed(0)
    head = DuelingHead(8, 4, hidden=16)
    features = torch.randn(10, 8)
    q = head(features)
    hidden = head.streams(features.expand(2, *features.shape))
    value = head.value(hidden[0]).squeeze(-1)
    assert q.shape == (10, 4)
    assert torch.allclose(q.mean(dim=-1), value, atol=1e-6)


def test_polyak_update_and_hard_copy():
    target, online = [torch.zeros(3), torch.ones(2)], [torch.ones(3), torch.zeros(2)]
    polyak_update(target, online, 0.1)
    assert torch.allclose(target[0], torch.full((3,), 0.1)) and torch.allclose(target[1], torch.full((2,), 0.9))
    polyak_update(target, online, 1.0)
    assert torch.equal(target[0], online[0]) and torch.equal(target[1], online[1])


def test_continuous_actions_are_rescaled_to_the_bounds():
    space = gym.spaces.Box(low=np.array([-2.0, 0.0], np.float32), high=np.array([2.0, 10.0], np.float32))
    agent = SAC(SACConfig(network=SMALL_NET), gym.spaces.Box(-1, 1, (3,)), space, 1)
    unit = torch.tensor([[-1.0, -1.0], [0.0, 0.5], [1.0, 1.0]])
    env_actions = agent.to_env(unit)
    assert torch.allclose(env_actions, torch.tensor([[-2.0, 0.0], [0.0, 7.5], [2.0, 10.0]]))
    assert torch.allclose(agent.from_env(env_actions), unit)
    random = agent.random_action(1000)
    assert (random >= agent.low).all() and (random <= agent.high).all()
    assert agent.predict(torch.zeros(7, 3)).shape == (7, 2)


def test_dqn_epsilon_schedule_and_greedy_prediction():
    cfg = DQNConfig(exploration_fraction=0.5, exploration_initial_eps=1.0, exploration_final_eps=0.1, network=SMALL_NET)
    agent = DQN(cfg, gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(3), 1)
    assert (
        agent.epsilon(0.0) == 1.0 and math.isclose(agent.epsilon(0.25), 0.55) and math.isclose(agent.epsilon(0.9), 0.1)
    )
    obs = torch.randn(50, 4)
    assert torch.equal(agent.predict(obs), agent.q_net(obs).argmax(-1))


def test_dqn_acts_in_zero_based_actions_the_env_offsets():
    # envs add Discrete.start themselves (envs/vector.py), as for the on-policy agents
    agent = DQN(DQNConfig(network=SMALL_NET), gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(3, start=-1), 1)
    obs = torch.randn(500, 4)
    for actions in (
        agent.random_action(500),
        agent.explore(obs, Progress(0, 100)),
        agent.predict(obs),
        agent.predict(obs, False),
    ):
        assert actions.min() >= 0 and actions.max() <= 2
    assert set(agent.random_action(500).tolist()) == {0, 1, 2}


def test_dqn_target_follows_the_online_net_every_interval():
    cfg = DQNConfig(target_update_interval=100, tau=0.5, network=SMALL_NET)
    agent = DQN(cfg, gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), 1)
    with torch.no_grad():
        for p in agent.q_net.parameters():
            p.add_(1.0)
    before = [p.clone() for p in agent.q_target.parameters()]
    agent._sync_target(250)  # two intervals crossed: weight 1 - 0.5^2
    for b, t, o in zip(before, agent.q_target.parameters(), agent.q_net.parameters(), strict=True):
        assert torch.allclose(t, b + 0.75 * (o - b))
    assert agent.target_updates == 2
    agent._sync_target(299)  # no new interval
    assert agent.target_updates == 2


def small_run(algo: str, env_id: str, **overrides):
    train = TrainConfig(algo=algo, env_id=env_id, num_envs=2, total_steps=600, seed=3, device="cpu")
    train.eval_every, train.eval_episodes, train.log_every, train.checkpoint_every, train.progress = (
        0,
        2,
        100,
        300,
        False,
    )
    cfg = (DQNConfig if algo == "dqn" else SACConfig)(
        learning_starts=100, batch_size=32, train_every=20, utd_ratio=0.5, network=SMALL_NET
    )
    for key, value in overrides.items():
        setattr(train if hasattr(train, key) else cfg, key, value)
    return train, cfg


def test_loop_warms_up_with_random_actions_then_trains_at_the_update_to_data_ratio(tmp_path, monkeypatch):
    train, cfg = small_run("dqn", "CartPole-v1", total_steps=400, learning_starts=90)
    trainer = Trainer(train, cfg)
    calls = {"random": 0, "explore": 0}
    random_action, explore = trainer.agent.random_action, trainer.agent.explore

    def count(name, fn):
        def wrapped(*args):
            calls[name] += 1
            return fn(*args)

        return wrapped

    monkeypatch.setattr(trainer.agent, "random_action", count("random", random_action))
    monkeypatch.setattr(trainer.agent, "explore", count("explore", explore))
    trainer.run(create_run_dir(tmp_path / "r"))
    # 2 envs: vector steps at env steps 0, 2, ..., 88 act randomly (45), the other 155 explore
    assert calls == {"random": 45, "explore": 155}
    # 20 env steps per iteration; as SB3, every phase once past learning_starts owes a whole phase:
    # the 16 iterations ending at 100, 120, ..., 400 train 0.5 x 20 gradient steps each
    assert trainer.agent.gradient_steps == 160
    assert len(trainer.loop.buffer) == 400


def test_loop_counts_the_episodes_that_end():
    env = envs.make("toy_envs:Countdown-v0", num_envs=2, seed=0, length=3)
    cfg = DQNConfig(network=SMALL_NET, learning_starts=1000, buffer_size=100, train_every=2)
    loop = OffPolicyLoop(env, DQN(cfg, env.single_observation_space, env.single_action_space, 2), total_steps=100)
    loop.reset(seed=0)
    for step in range(0, 14, 2):  # 7 vector steps: both envs end episodes at the 3rd and the 6th
        loop.iterate(step)
    stats = loop.pop_episode_stats()
    assert stats["charts/episodes"].item() == 4
    assert stats["charts/episode_return"].item() == 3.0 and stats["charts/episode_length"].item() == 3.0
    loop.iterate(14)  # no episode ends here
    assert loop.pop_episode_stats()["charts/episodes"].item() == 0


@pytest.mark.parametrize("algo, env_id", [("dqn", "CartPole-v1"), ("sac", "Pendulum-v1")])
def test_same_seed_gives_identical_metrics(tmp_path, algo, env_id):
    for name in ("a", "b"):
        train, cfg = small_run(algo, env_id)
        Trainer(train, cfg).run(create_run_dir(tmp_path / name))
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert len(a) > 5 and a == b
    assert any("losses/td_loss" in row or "losses/critic_loss" in row for row in a)


class SimulatedCrash(Exception):
    pass


def crash_and_resume(tmp_path, train, cfg):
    run_dir = tmp_path / "crashed"
    trainer = Trainer(train, cfg)

    def crash():
        if trainer.global_step >= 400:
            raise SimulatedCrash
        return False

    with pytest.raises(SimulatedCrash):
        trainer.run(create_run_dir(run_dir), should_stop=crash)
    assert read_status(run_dir)["status"] == "crashed"
    payload = load_checkpoint(run_dir)
    assert payload["global_step"] == 300
    resumed = Trainer(train, cfg, resume=payload)
    return run_dir, payload, resumed


def test_sac_resumed_with_its_saved_buffer_equals_the_uninterrupted_run(tmp_path):
    train, cfg = small_run("sac", "Pendulum-v1", save_buffer=True)
    whole = Trainer(train, cfg)
    whole.run(create_run_dir(tmp_path / "whole"))

    run_dir, payload, resumed = crash_and_resume(tmp_path, train, cfg)
    saved = payload["loop"]["buffer"]
    assert saved["filled"] == 150  # 300 steps of 2 envs
    buffer = resumed.loop.buffer
    for name in ("obs", "next_obs"):
        assert torch.equal(getattr(buffer.observations, name)[:150], saved[name])
    for name in ("actions", "rewards", "terminated", "truncated"):
        assert torch.equal(getattr(buffer, name)[:150], saved[name])
    assert buffer.filled == 150 and buffer.pos == 150

    resumed.run(run_dir)
    assert read_metrics(run_dir) == read_metrics(tmp_path / "whole")
    final_a, final_b = load_checkpoint(tmp_path / "whole"), load_checkpoint(run_dir)
    for key in ("actor", "critic", "critic_target"):
        assert all(torch.equal(final_a["agent"][key][k], final_b["agent"][key][k]) for k in final_a["agent"][key])
    for name in ("obs", "actions", "rewards"):
        assert torch.equal(final_a["loop"]["buffer"][name], final_b["loop"]["buffer"][name])


def test_resume_without_a_saved_buffer_warns_and_refills(tmp_path, capsys):
    train, cfg = small_run("sac", "Pendulum-v1")
    run_dir, payload, resumed = crash_and_resume(tmp_path, train, cfg)
    assert "buffer" not in payload["loop"]
    assert "no replay buffer" in capsys.readouterr().err
    assert len(resumed.loop.buffer) == 0
    result = resumed.run(run_dir)
    assert result.status == "finished" and len(resumed.loop.buffer) == 300  # the steps from 300 to 600


def test_dqn_with_every_improvement_runs_end_to_end(tmp_path):
    train, cfg = small_run("dqn", "CartPole-v1", double_q=True, dueling=True, n_step=3, prioritized=True)
    trainer = Trainer(train, cfg)
    result = trainer.run(create_run_dir(tmp_path / "rainbowish"))
    assert result.status == "finished"
    tree = trainer.loop.buffer.tree
    leaves = tree.tree[tree.first_leaf : tree.first_leaf + tree.size]
    # priorities were updated from TD errors: not all equal to the initial maximum any more
    assert leaves.unique().numel() > 10
    rows = read_metrics(tmp_path / "rainbowish")
    assert all(math.isfinite(row["losses/td_loss"]) for row in rows if "losses/td_loss" in row)
