"""Agents learn: each test trains with a shipped preset and asserts an evaluation return."""

import pytest

from agents import get_algorithm
from agents.presets import load_preset
from runners.cliargs import set_values
from runners.config import TrainConfig
from runners.evaluate import evaluate
from runners.run_dir import create_run_dir
from runners.trainer import Trainer

pytestmark = pytest.mark.slow


def train_preset(tmp_path, algo: str, env_id: str, seed: int, **overrides):
    spec = get_algorithm(algo)
    train, agent = TrainConfig(algo=algo, env_id=env_id, seed=seed, device="cpu"), spec.config_cls()
    name, values = load_preset(algo, env_id, None)
    set_values([train, agent], {**values, **overrides}, f"preset {name}")
    train.eval_every, train.checkpoint_every, train.progress = 0, 0, False
    trainer = Trainer(train, agent)
    trainer.run(create_run_dir(tmp_path / f"{algo}-{env_id}-{seed}"))
    return trainer.agent


def test_ppo_solves_cartpole_with_the_zoo_preset_in_100k_steps(tmp_path):
    agent = train_preset(tmp_path, "ppo", "CartPole-v1", seed=0)
    result = evaluate(agent, "CartPole-v1", episodes=20, seed=1234)
    assert result.mean_return >= 475, result.returns


def test_ppo_swings_up_pendulum_in_200k_steps(tmp_path):
    # SB3's PPO without gSDE reaches about -207 here; seeds 0-2 gave -145, -130, -173 over 20 episodes.
    agent = train_preset(tmp_path, "ppo", "Pendulum-v1", seed=0)
    result = evaluate(agent, "Pendulum-v1", episodes=20, seed=1234)
    assert result.mean_return >= -250, result.returns


def test_a2c_learns_cartpole(tmp_path):
    # The zoo preset at 150k of its 500k steps (benchmarks/vs_sb3.py --algo a2c shows 500 at 500k).
    # Measured over seeds 0-13 (20 episodes each): twelve at 500.0, then 207.6 and 139.8; a random
    # policy scores about 22. A2C's final policy swings, so the threshold sits below the worst seed.
    agent = train_preset(tmp_path, "a2c", "CartPole-v1", seed=0, total_steps=150_000)
    result = evaluate(agent, "CartPole-v1", episodes=20, seed=1234)
    assert result.mean_return >= 100, result.returns
