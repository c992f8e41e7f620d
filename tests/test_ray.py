"""Rollout workers on Ray (`runners/ray_workers.py`), on a cluster the tests start on 127.0.0.1
(the `ray_cluster` fixture of conftest.py). Ray reads its token when it is imported: this module
imports it only after the fixture has set the token.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from pathlib import Path

import pytest

from agents import get_algorithm
from agents.presets import load_preset
from runners.cliargs import set_values
from runners.config import TrainConfig
from runners.evaluate import evaluate
from runners.run_dir import create_run_dir
from runners.trainer import Trainer

from conftest import read_metrics, run_drl

if importlib.util.find_spec("ray") is None:
    pytest.skip("Ray is not installed (the distributed extra)", allow_module_level=True)

HELD_OUT = 1234


def without_worker_counters(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith("workers/")} for row in rows]


def preset_run(tmp_path: Path, name: str, algo: str = "ppo", env_id: str = "CartPole-v1", **overrides) -> Trainer:
    spec = get_algorithm(algo)
    train, agent = TrainConfig(algo=algo, env_id=env_id, device="cpu", progress=False), spec.config_cls()
    preset, values = load_preset(algo, env_id, None)
    set_values([train, agent], {**values, **overrides}, f"preset {preset}")
    trainer = Trainer(train, agent)
    trainer.run_dir = create_run_dir(tmp_path / name)
    return trainer


def pipes_in_use(trainer: Trainer) -> list[bool]:
    """Whether each worker of a running trainer is reached by pipe (`ray_workers.Pipe`)."""
    pipes = trainer.loop.pool.pipes or {}
    return [pipes.get(k) is not None for k in range(len(trainer.loop.pool.actors))]


@pytest.mark.parametrize("transport", ["pipes", "ray calls"])
def test_sync_workers_write_the_metrics_of_the_local_run(tmp_path, ray_cluster, transport, monkeypatch):
    # PPO through 2 workers x 2 envs against the same run with 4 local envs: env i gets the same
    # seed either way, so every logged value must be identical, not close. Workers on the
    # learner's node get the policy and send unrolls by pipe; on other nodes through Ray's calls.
    from runners import ray_workers

    if transport == "ray calls":  # as if the workers ran on another node
        monkeypatch.setattr(ray_workers.WorkerPool, "open_pipe", lambda pool, k: pool.pipes.__setitem__(k, None))
    common = dict(num_envs=4, total_steps=4096, eval_every=2048, eval_episodes=3, log_every=512, checkpoint_every=0)
    local = preset_run(tmp_path, "local", **common)
    local.run(local.run_dir)
    remote = preset_run(tmp_path, "ray", num_workers=2, ray_address=ray_cluster, **common)
    seen = []
    remote.run(remote.run_dir, should_stop=lambda: seen.append(pipes_in_use(remote)) or False)
    assert seen and all(used == [transport == "pipes"] * 2 for used in seen)
    expected = read_metrics(local.run_dir)
    assert len(expected) >= 8 and any("eval/mean_return" in row for row in expected)
    assert without_worker_counters(read_metrics(remote.run_dir)) == expected


def test_a_killed_worker_is_restarted_and_the_run_still_learns(tmp_path, ray_cluster):
    trainer = preset_run(tmp_path, "fault", num_workers=2, ray_address=ray_cluster, eval_every=0, checkpoint_every=0)
    killed, pipes = [], []

    import ray

    def kill_a_worker() -> bool:  # called by the trainer after each iteration
        pipes.append(pipes_in_use(trainer))
        if trainer.global_step >= 20_000 and not killed:
            pid = ray.get(trainer.loop.pool.actors[1].pid.remote())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return False

    result = trainer.run(trainer.run_dir, should_stop=kill_a_worker)
    assert killed and result.status == "finished" and result.global_step >= 100_000
    assert pipes[0] == pipes[-1] == [True, True]  # the broken pipe was replaced by one to the new process
    rows = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(row.get("workers/restarts", 0) for row in rows) == 1
    held_out = evaluate(trainer.agent, "CartPole-v1", 20, HELD_OUT)
    assert held_out.mean_return >= 475, held_out.returns


def test_a_run_resumes_with_another_number_of_workers(tmp_path, ray_cluster):
    base = ["--seed", "3", "--eval-episodes", "0", "--log-every", "256", "--no-progress", "--ray-address", ray_cluster]
    first = run_drl("train", "ppo", "CartPole-v1", "--run-dir", "r", "--num-workers", "2", "--total-steps", "2048",
                    *base, cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr
    for workers, steps in (("1", "4096"), ("3", "8192")):
        resumed = run_drl("train", "--resume", "r", "--num-workers", workers, "--ray-address", ray_cluster,
                          "--total-steps", steps, cwd=tmp_path)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        config = (tmp_path / "r" / "config.yaml").read_text()
        assert f"num_workers: {workers}" in config and f"num_envs: {4 * int(workers)}" in config  # 4 envs each
        assert "resuming r from step" in resumed.stderr
        status = json.loads((tmp_path / "r" / "run.json").read_text())
        assert status["status"] == "finished" and status["global_step"] >= int(steps), status
    more = run_drl("train", "--resume", "r", "--envs-per-worker", "2", "--ray-address", ray_cluster,
                   "--total-steps", "10240", cwd=tmp_path)  # fmt: skip
    assert more.returncode == 0, more.stderr
    assert "num_envs: 6" in (tmp_path / "r" / "config.yaml").read_text()  # 3 workers x 2 envs
    steps = [row["step"] for row in read_metrics(tmp_path / "r")]
    assert steps == sorted(steps) and steps[-1] >= 10240


def test_a_worker_whose_env_raises_ends_the_run_with_one_line(tmp_path, ray_cluster):
    result = run_drl("train", "ppo", "toy_envs:FailingStep-v0", "--num-workers", "1", "--num-envs", "1",
                     "--ray-address", ray_cluster, "--total-steps", "4096", "--no-progress", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, (result.stdout, result.stderr)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("drl: error: toy_envs:FailingStep-v0 raised in rollout worker 0 while stepping")
    assert "RuntimeError: sensor cable unplugged" in last


def test_ppo_on_two_local_workers_from_the_command_line(tmp_path):
    # no --ray-address: the run starts (and stops) its own Ray instance
    result = run_drl("train", "ppo", "CartPole-v1", "--num-workers", "2", "--run-dir", "R", "--no-progress",
                     cwd=tmp_path, env={"RAY_USAGE_STATS_ENABLED": "0"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    evaluation = run_drl("eval", "R", "--episodes", "20", "--seed", str(HELD_OUT), "--json", cwd=tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr
    assert json.loads(evaluation.stdout)["mean_return"] >= 475


def test_workers_need_an_on_policy_algorithm(tmp_path):
    result = run_drl("train", "sac", "Pendulum-v1", "--num-workers", "2", cwd=tmp_path)
    assert result.returncode == 2 and "on-policy" in result.stderr, result.stderr


def test_appo_learns_cartpole_on_two_asynchronous_workers(tmp_path, ray_cluster):
    # Asynchronous workers make the run depend on timing (which unroll the learner takes first,
    # how old it is), so the final policy of a loaded machine is not that of an idle one (220 on
    # a loaded CI machine once, 500 here). As the learning tests do, the run stops at the first
    # evaluation (every 10k steps, 20 episodes) reaching a threshold, within the preset's 100k
    # steps. That threshold is 500, not the preset's 475: a run stopped at an evaluation of 475-499.9
    # (the best of the run's tries) scored 474.55 on the held-out episodes once in CI. Three runs
    # stopped at 500 here (after 20k-40k steps) scored 499.85-500 on them.
    trainer = preset_run(tmp_path, "appo", "appo", ray_address=ray_cluster, checkpoint_every=0,
                         stop_when_solved=True, eval_every=10_000, eval_episodes=20, solved_threshold=500)  # fmt: skip
    result = trainer.run(trainer.run_dir)
    assert result.status == "solved", result
    rows = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    lags = [row["workers/policy_lag_max"] for row in rows if "workers/policy_lag_max" in row]
    assert lags and max(lags) >= 1  # the workers did not wait: data from older policies was learned from
    held_out = evaluate(trainer.agent, "CartPole-v1", 20, HELD_OUT)
    assert held_out.mean_return >= 475, held_out.returns


def test_a_small_policy_travels_packed_inside_the_calls_and_a_large_one_is_put_once():
    # (no cluster needed: a stand-in records what would go to Ray's object store)
    import numpy as np

    from runners.ray_workers import INLINE_BYTES, shared_policy, unpack

    class Store:
        def __init__(self):
            self.puts = []

        def put(self, value):
            self.puts.append(value)
            return "ref"

    store = Store()
    small = {"version": 3, "net": {"w": np.zeros(INLINE_BYTES // 4, np.float32)}}
    packed = shared_policy(store, small)
    assert isinstance(packed, bytes) and store.puts == []
    assert unpack(packed).keys() == small.keys() and np.array_equal(unpack(packed)["net"]["w"], small["net"]["w"])
    large = {"version": 3, "net": {"w": np.zeros(INLINE_BYTES // 4, np.float32), "b": np.zeros(1, np.float32)}}
    assert shared_policy(store, large) == "ref" and store.puts == [large]
