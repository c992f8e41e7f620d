"""Train Stable-Baselines3 and drl side by side, in one process, and compare.

Both get the same hyperparameters (read from drl's preset and mapped onto SB3's
arguments), the same env, step budget and seeds; SB3 and drl take turns going first.
Both are then evaluated by the same code on the same episodes (deterministic policy).

    python benchmarks/vs_sb3.py --algo ppo --env CartPole-v1 --seeds 0 1 2
    python benchmarks/vs_sb3.py --algo a2c --env CartPole-v1 --seeds 0 1 2

Wall time covers building the agent and its envs and training (drl's includes writing its
run directory: metrics, TensorBoard events, the final checkpoint); evaluation is timed apart.
Needs the `bench` extra: pip install -e .[bench]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from agents import get_algorithm
from agents.presets import load_preset
from runners.cliargs import set_values
from runners.config import TrainConfig
from runners.evaluate import evaluate
from runners.run_dir import create_run_dir
from runners.seeding import derive_seeds
from runners.trainer import Trainer


def configs(algo: str, env_id: str, seed: int, steps: int | None):
    spec = get_algorithm(algo)
    train, agent = TrainConfig(algo=spec.name, env_id=env_id, seed=seed, device="cpu"), spec.config_cls()
    name, values = load_preset(spec.name, env_id, None)
    set_values([train, agent], values, f"preset {name}")
    if steps:
        train.total_steps = steps
    train.eval_episodes = 0  # no evaluation inside the timed run; both are evaluated afterwards
    train.checkpoint_every = 0  # only the final checkpoint
    train.progress = False
    return train, agent


def sb3_schedule(value: float, schedule: str):
    return (lambda remaining: remaining * value) if schedule == "linear" else value


def sb3_model(algo: str, train: TrainConfig, agent):
    """The SB3 model with drl's hyperparameters; SB3's MlpPolicy default is 64x64 tanh, separate
    actor and critic, orthogonal init: the same network drl builds by default."""
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.env_util import make_vec_env

    assert agent.network.hidden_sizes == (64, 64) and agent.network.activation == "tanh"
    env = make_vec_env(train.env_id, n_envs=train.num_envs, seed=train.seed)
    common = dict(
        n_steps=agent.n_steps,
        gamma=agent.gamma,
        gae_lambda=agent.gae_lambda,
        ent_coef=agent.ent_coef,
        vf_coef=agent.vf_coef,
        max_grad_norm=agent.max_grad_norm,
        normalize_advantage=agent.normalize_advantage,
        learning_rate=sb3_schedule(agent.learning_rate, agent.lr_schedule),
        seed=train.seed,
        device="cpu",
    )
    if algo == "ppo":
        return PPO(
            "MlpPolicy",
            env,
            batch_size=agent.batch_size,
            n_epochs=agent.n_epochs,
            clip_range=sb3_schedule(agent.clip_range, agent.clip_schedule),
            clip_range_vf=agent.clip_range_vf,
            target_kl=agent.target_kl,
            **common,
        )
    return A2C("MlpPolicy", env, use_rms_prop=agent.optimizer == "rmsprop", rms_prop_eps=agent.optimizer_eps, **common)


class SB3Policy:
    """drl's evaluation interface over an SB3 model."""

    device = torch.device("cpu")

    def __init__(self, model):
        self.model = model

    def predict(self, obs, deterministic=True, generator=None):
        actions, _ = self.model.predict(obs.numpy(), deterministic=deterministic)
        return torch.as_tensor(actions)


def run_sb3(algo, train, agent, episodes):
    start = time.perf_counter()
    model = sb3_model(algo, train, agent)
    model.learn(train.total_steps)
    seconds = time.perf_counter() - start
    result = evaluate(SB3Policy(model), train.env_id, episodes, derive_seeds(train.seed).eval)
    return seconds, model.num_timesteps, result


def run_drl(train, agent, episodes, workdir: Path):
    start = time.perf_counter()
    trainer = Trainer(train, agent)
    outcome = trainer.run(create_run_dir(workdir / f"drl-{train.algo}-{train.seed}"))
    seconds = time.perf_counter() - start
    result = evaluate(trainer.agent, train.env_id, episodes, derive_seeds(train.seed).eval)
    return seconds, outcome.global_step, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="ppo", choices=["ppo", "a2c"])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="step budget (default: the preset's)")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes per agent")
    args = parser.parse_args()

    import stable_baselines3

    print(
        f"drl vs stable-baselines3 {stable_baselines3.__version__}: {args.algo} on {args.env}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(args.seeds):
            train, agent = configs(args.algo, args.env, seed, args.steps)
            order = ["sb3", "drl"] if i % 2 == 0 else ["drl", "sb3"]
            out = {}
            for who in order:
                if who == "sb3":
                    out[who] = run_sb3(args.algo, *configs(args.algo, args.env, seed, args.steps), args.episodes)
                else:
                    out[who] = run_drl(*configs(args.algo, args.env, seed, args.steps), args.episodes, Path(tmp))
            rows.append((seed, out["sb3"], out["drl"]))
            (s_sec, s_steps, s_eval), (d_sec, d_steps, d_eval) = out["sb3"], out["drl"]
            speedup = (d_steps / d_sec) / (s_steps / s_sec)
            print(
                f"seed {seed}: SB3 {s_sec:6.1f} s {s_steps / s_sec:8,.0f} steps/s eval {s_eval.mean_return:7.1f}"
                f" +- {s_eval.std_return:5.1f} | drl {d_sec:6.1f} s {d_steps / d_sec:8,.0f} steps/s eval "
                f"{d_eval.mean_return:7.1f} +- {d_eval.std_return:5.1f} | speed-up {speedup:.2f}x",
                flush=True,
            )

    sb3_sps = sum(r[1][1] for r in rows) / sum(r[1][0] for r in rows)
    drl_sps = sum(r[2][1] for r in rows) / sum(r[2][0] for r in rows)
    print("\n| | wall time per run (s) | steps/s | eval return (mean over seeds) |")
    print("|---|---|---|---|")
    for name, k, sps in (("SB3", 1, sb3_sps), ("drl", 2, drl_sps)):
        wall = statistics.fmean(r[k][0] for r in rows)
        ret = statistics.fmean(r[k][2].mean_return for r in rows)
        print(f"| {name} | {wall:.1f} | {sps:,.0f} | {ret:.1f} |")
    print(f"\nsteps/s ratio drl / SB3: {drl_sps / sb3_sps:.2f}x over {len(rows)} seeds")


if __name__ == "__main__":
    main()
