"""Whole runs: determinism, and resume giving exactly the uninterrupted run."""

import json
import time

import pytest
import torch

from agents.batch import Progress
from runners.checkpoint import find_checkpoint, load_checkpoint
from runners.run_dir import create_run_dir, read_status
from runners.trainer import Trainer

from conftest import read_metrics


def train(train_cfg, algo_cfg, run_dir, **kwargs):
    train_cfg.run_dir = str(run_dir)
    return Trainer(train_cfg, algo_cfg).run(create_run_dir(run_dir), **kwargs)


@pytest.mark.parametrize("backend", ["gym", "native"])
def test_same_seed_gives_identical_metrics(tmp_path, small_ppo, backend):
    train_cfg, algo_cfg = small_ppo
    train_cfg.backend = backend
    train(train_cfg, algo_cfg, tmp_path / "a")
    train(train_cfg, algo_cfg, tmp_path / "b")
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert len(a) > 10 and a == b
    assert any("eval/mean_return" in row for row in a) and any("losses/value_loss" in row for row in a)


def test_different_seeds_differ(tmp_path, small_ppo):
    train_cfg, algo_cfg = small_ppo
    train_cfg.total_steps = 1024
    train(train_cfg, algo_cfg, tmp_path / "a")
    train_cfg.seed += 1
    train(train_cfg, algo_cfg, tmp_path / "b")
    assert read_metrics(tmp_path / "a") != read_metrics(tmp_path / "b")


class SimulatedCrash(Exception):
    pass


@pytest.mark.parametrize("backend", ["gym", "native"])
def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, small_ppo, backend):
    train_cfg, algo_cfg = small_ppo
    train_cfg.backend = backend
    train(train_cfg, algo_cfg, tmp_path / "whole")

    # Crash at 6144 steps: the last checkpoint is at 4096, and metrics up to 6144 are on disk.
    run_dir = tmp_path / "crashed"
    trainer = Trainer(train_cfg, algo_cfg)

    def crash():
        if trainer.global_step >= 6144:
            raise SimulatedCrash
        return False

    with pytest.raises(SimulatedCrash):
        trainer.run(create_run_dir(run_dir), should_stop=crash)
    assert read_status(run_dir)["status"] == "crashed"
    assert max(row["step"] for row in read_metrics(run_dir)) == 6144

    payload = load_checkpoint(run_dir)
    assert payload["global_step"] == 4096
    result = Trainer(train_cfg, algo_cfg, resume=payload).run(run_dir)
    assert result.status == "finished" and read_status(run_dir)["status"] == "finished"

    assert read_metrics(run_dir) == read_metrics(tmp_path / "whole")
    final_a = load_checkpoint(tmp_path / "whole")["agent"]["net"]
    final_b = load_checkpoint(run_dir)["agent"]["net"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_graceful_stop_writes_a_checkpoint_and_resume_finishes(tmp_path, small_ppo):
    train_cfg, algo_cfg = small_ppo
    train_cfg.checkpoint_every = 0
    run_dir = tmp_path / "stopped"
    trainer = Trainer(train_cfg, algo_cfg)
    result = trainer.run(create_run_dir(run_dir), should_stop=lambda: trainer.global_step >= 2048)
    assert result.status == "interrupted" and result.global_step == 2048
    assert find_checkpoint(run_dir).name == "step_000000002048.pt"
    result = Trainer(train_cfg, algo_cfg, resume=load_checkpoint(run_dir)).run(run_dir)
    assert result.global_step == 8192
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "finished" and status["global_step"] == 8192


def test_normalizer_statistics_are_checkpointed_and_frozen_in_evaluation(tmp_path, small_ppo):
    from runners.evaluate import evaluate
    from runners.trainer import build_agent

    train_cfg, algo_cfg = small_ppo
    train_cfg.total_steps = 1024
    trainer = Trainer(train_cfg, algo_cfg)
    trainer.run(create_run_dir(tmp_path / "run"))
    stats = {k: v.clone() for k, v in trainer.agent.obs_normalizer.state_dict().items()}
    assert stats["rms.count"] > 1000  # updated from the rollouts

    evaluate(trainer.agent, "CartPole-v1", episodes=3, seed=0)
    after = trainer.agent.obs_normalizer.state_dict()
    assert all(torch.equal(stats[k], after[k]) for k in stats)

    payload = load_checkpoint(tmp_path / "run")
    fresh = build_agent(train_cfg, algo_cfg, trainer.env, torch.device("cpu"))
    fresh.load_state_dict(payload["agent"])
    loaded = fresh.obs_normalizer.state_dict()
    assert all(torch.equal(stats[k], loaded[k]) for k in stats)
    assert fresh.reward_scaler.rms.count > 1000


def test_ppo_update_on_a_single_transition_stays_finite():
    import envs
    from agents import PPO, PPOConfig
    from runners.rollout import OnPolicyCollector

    env = envs.make("CartPole-v1", 1, seed=0)
    agent = PPO(
        PPOConfig(n_steps=1, batch_size=1, n_epochs=2), env.single_observation_space, env.single_action_space, 1
    )
    collector = OnPolicyCollector(env, agent, n_steps=1)
    collector.reset(seed=None)
    agent.update(collector.collect(), Progress(0, 100))
    assert all(torch.isfinite(p).all() for p in agent.net.parameters())


def test_steps_per_second_leave_out_evaluation_time(tmp_path, small_ppo, monkeypatch):
    import runners.trainer

    evaluate = runners.trainer.evaluate

    def slow_evaluate(*args, **kwargs):
        time.sleep(2.0)  # far longer than a 512-step logging window of training
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(runners.trainer, "evaluate", slow_evaluate)
    train_cfg, algo_cfg = small_ppo
    train(train_cfg, algo_cfg, tmp_path / "r")
    rows = [row for row in read_metrics(tmp_path / "r", keep_wall_clock=True) if "charts/sps" in row]
    sps = {row["step"]: row["charts/sps"] for row in rows}
    evaluated = {row["step"] for row in read_metrics(tmp_path / "r") if "eval/mean_return" in row}
    assert evaluated == {4096, 8192}
    others = sorted(v for step, v in sps.items() if step not in evaluated)
    median = others[len(others) // 2]
    for step in evaluated:  # the windows that hold an evaluation train at the others' speed
        assert sps[step] > 0.3 * median, (step, sps[step], median)
    assert max(row["time/eval"] for row in rows) >= 4.0
