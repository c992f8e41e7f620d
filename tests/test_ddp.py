"""DDP learner (runners/distributed.py): gradients averaged across two gloo processes on this
machine equal one process's gradient on the whole batch, the replicas stay equal, and
`drl train --nproc 2` trains, writes one run directory and resumes on one process.

Every process group here is started by the test itself, binds to 127.0.0.1 (the loopback
interface for gloo's sockets) and is torn down at the end of the test.
"""

from __future__ import annotations

import copy
import os
import socket
from datetime import timedelta

import gymnasium as gym
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import agents.optim
from agents import A2C, PPO, A2CConfig, ConfigError, PPOConfig
from agents.batch import Progress, Rollout
from runners import distributed
from runners.checkpoint import load_checkpoint
from runners.config import TrainConfig

from conftest import read_metrics, run_drl

WORLD = 2
T, N = 8, 4  # the whole rollout: 8 steps of 4 envs; each rank holds 2 of the envs
OBS_SPACE = gym.spaces.Box(-5.0, 5.0, (4,))
ACTION_SPACE = gym.spaces.Discrete(3)


def fixed_rollout(seed: int) -> Rollout:
    """A made-up rollout [T, N] (any values will do: the test compares gradients on it)."""
    g = torch.Generator().manual_seed(seed)
    return Rollout(
        obs=torch.randn(T, N, 4, generator=g) * 2 + 1,
        actions=torch.randint(0, 3, (T, N), generator=g),
        log_probs=torch.rand(T, N, generator=g).log() - 0.5,
        values=torch.randn(T, N, generator=g),
        rewards=torch.randn(T, N, generator=g),
        terminated=torch.rand(T, N, generator=g) < 0.1,
        truncated=torch.rand(T, N, generator=g) < 0.1,
        next_values=torch.randn(T, N, generator=g),
    )


def rank_share(rollout: Rollout, rank: int) -> Rollout:
    """Rank `rank`'s envs of `rollout`, as its collector would have gathered them."""
    count, first = distributed.env_shard(N, rank, WORLD)
    return Rollout(*(None if x is None else x[:, first : first + count] for x in rollout))


def whole_state(agent) -> dict:
    """The replica's state as one process with all N envs holds it: the reward scaler's per-env
    running returns of every rank, concatenated (collective)."""
    state = copy.deepcopy(agent.state_dict())
    if agent.reward_scaler is not None:
        parts = [torch.empty_like(agent.reward_scaler.returns) for _ in range(WORLD)]
        dist.all_gather(parts, agent.reward_scaler.returns)
        state["reward_scaler"]["returns"] = torch.cat(parts)
    return state


def assert_same_on_all_ranks(tensors: list[torch.Tensor]) -> None:
    flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
    gathered = [torch.empty_like(flat) for _ in range(WORLD)]
    dist.all_gather(gathered, flat)
    for other in gathered[1:]:
        assert torch.equal(other, gathered[0])


def statistics(agent) -> list[torch.Tensor]:
    return [*agent.obs_normalizer.rms.state_dict().values(), *agent.reward_scaler.rms.state_dict().values()]


def check_updates(agent_cls, config, rank: int, recorded: list) -> None:
    """Three updates of a DDP replica on its share of fixed rollouts. Before each, a single-process
    agent with the replica's exact state updates on the whole rollout; the gradient the replica
    steps with (averaged over the ranks, before clipping) must equal that agent's to 1e-6.

    The identity holds exactly (up to float rounding) for this config: each loss is a mean over
    the batch of per-transition terms, and the ranks hold equal shares, so the mean of the ranks'
    gradients is the gradient on the whole batch, provided every transition's term is the same
    in both: GAE runs per env; observation and reward normalisation use statistics that all
    ranks fold in together (equal to one process's); advantage standardisation (per rank's
    minibatch, not the global one) is off; one epoch of one minibatch (the whole rollout,
    PPO's batch_size // WORLD on each rank) makes one step from one starting point."""
    torch.manual_seed(0)
    agent = agent_cls(distributed.shard_config(config, N, WORLD), OBS_SPACE, ACTION_SPACE, N // WORLD, seed=7)
    distributed.join(agent, agent_seed=7)
    assert agent.distributed and agent.n_steps == T
    for k in range(3):
        rollout, progress = fixed_rollout(100 + k), Progress((k + 1) * T * N, 10 * T * N)
        single = agent_cls(config, OBS_SPACE, ACTION_SPACE, N, seed=7)
        single.load_state_dict(whole_state(agent))
        single.update(rollout, progress)
        single_grads = recorded.pop()

        agent.update(rank_share(rollout, rank), progress)
        averaged = recorded.pop()
        assert not recorded  # one gradient step each
        for got, want in zip(averaged, single_grads, strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        assert_same_on_all_ranks(list(agent.net.parameters()))
        assert_same_on_all_ranks(statistics(agent))
        for got, want in zip(statistics(agent), statistics(single), strict=True):
            torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


def check_target_kl(config: PPOConfig, rank: int, recorded: list) -> None:
    """The KL early stop reads the KL averaged over the ranks: with a threshold between one rank's
    own KL and the average, that rank alone would take the step; all ranks stop instead."""
    torch.manual_seed(0)
    agent = PPO(distributed.shard_config(config, N, WORLD), OBS_SPACE, ACTION_SPACE, N // WORLD, seed=7)
    distributed.join(agent, agent_seed=7)
    rollout, progress = fixed_rollout(200), Progress(T * N, 10 * T * N)
    kls = []
    for r in range(WORLD):  # each share's own KL before a step, as one process computes it
        probe = PPO(distributed.shard_config(config, N, WORLD), OBS_SPACE, ACTION_SPACE, N // WORLD, seed=7)
        probe.load_state_dict(agent.state_dict())
        kls.append(float(probe.update(rank_share(rollout, r), progress)["losses/approx_kl"]))
    recorded.clear()
    low, mean = min(kls), sum(kls) / WORLD
    assert low < mean
    agent.config.target_kl = (low + mean) / 2 / 1.5  # stop when the KL exceeds 1.5 x target_kl
    before = [p.detach().clone() for p in agent.net.parameters()]
    metrics = agent.update(rank_share(rollout, rank), progress)
    assert metrics["losses/stopped_early"] == 1.0 and not recorded
    assert all(torch.equal(p, q) for p, q in zip(agent.net.parameters(), before, strict=True))


def worker(rank: int, port: int) -> None:
    """One of the two processes, ended as the library ends a torchrun worker (`run_worker`: a
    normal interpreter exit can abort in gloo's threads)."""
    distributed.run_worker(lambda: check_all(rank, port))


def check_all(rank: int, port: int) -> int:
    """Join the gloo group on 127.0.0.1, run the checks, leave."""
    torch.set_num_threads(1)
    loopback = distributed._loopback_interface()
    if loopback is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback)  # gloo's sockets on 127.0.0.1 only
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        recorded: list[list[torch.Tensor]] = []  # the gradients each step clips: averaged in DDP
        clip = agents.optim.clip_by_global_norm

        def record_then_clip(grads, max_norm):
            recorded.append([g.clone() for g in grads])
            return clip(grads, max_norm)

        agents.optim.clip_by_global_norm = record_then_clip
        common = {"n_steps": T, "normalize_obs": True, "normalize_reward": True, "normalize_advantage": False}
        ppo = PPOConfig(batch_size=T * N, n_epochs=1, ent_coef=0.01, **common)
        check_updates(PPO, ppo, rank, recorded)
        check_updates(A2C, A2CConfig(ent_coef=0.01, **common), rank, recorded)
        check_target_kl(ppo, rank, recorded)
    finally:
        dist.destroy_process_group()
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_averaged_gradient_equals_single_process_gradient():
    mp.start_processes(worker, args=(free_port(),), nprocs=WORLD, start_method="spawn")


def test_env_shards_keep_single_process_seeds():
    assert [distributed.env_shard(8, r, 4) for r in range(4)] == [(2, 0), (2, 2), (2, 4), (2, 6)]
    with pytest.raises(ConfigError, match="--nproc 3 must divide --num-envs 4"):
        distributed.env_shard(4, 0, 3)
    with pytest.raises(ConfigError, match="--num-envs must be a multiple of --nproc 3"):
        TrainConfig(num_envs=4, nproc=3).validate()
    command = distributed.launch_command(2, ["train", "ppo", "CartPole-v1", "--nproc", "2"])
    assert command[command.index("--rdzv-endpoint") + 1].startswith("127.0.0.1:")
    assert command[-7:] == ["--", "runners.cli", "train", "ppo", "CartPole-v1", "--nproc", "2"]


def test_drl_train_nproc_2_then_resume_on_one_process(tmp_path):
    run_dir = tmp_path / "run"
    options = ["--num-envs", "4", "--n-steps", "16", "--batch-size", "32", "--n-epochs", "2", "--no-progress"]
    options += ["--log-every", "64", "--eval-episodes", "2", "--checkpoint-every", "64"]
    result = run_drl(
        "train", "ppo", "CartPole-v1", "--nproc", "2", "--total-steps", "128", "--run-dir", str(run_dir), *options,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.rglob("metrics.jsonl")) == [run_dir / "metrics.jsonl"]  # rank 0 alone writes
    assert result.stdout.count("trained 128 steps") == 1  # and reports
    rows = read_metrics(run_dir)
    assert [row["step"] for row in rows if "losses/value_loss" in row] == [64, 128]  # 16 steps x 4 envs each
    assert sum("eval/mean_return" in row for row in rows) == 1
    payload = load_checkpoint(run_dir)
    assert payload["global_step"] == 128 and payload["world_size"] == 2 and len(payload["ranks"]) == 2

    result = run_drl("train", "--resume", str(run_dir), "--nproc", "1", "--total-steps", "192", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "written by 2 process(es) and this run has 1; episodes restart" in result.stderr
    assert [row["step"] for row in read_metrics(run_dir) if "losses/value_loss" in row] == [64, 128, 192]
    assert load_checkpoint(run_dir)["global_step"] == 192
