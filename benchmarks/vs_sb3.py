"""Train Stable-Baselines3 and drl side by side, in one process, and compare.

Both get the same hyperparameters (read from drl's preset and mapped onto SB3's
arguments), the same env, step budget and seeds; SB3 and drl take turns going first.
Both are then evaluated by the same code on the same episodes (deterministic policy).

    python benchmarks/vs_sb3.py --algo ppo --env CartPole-v1 --seeds 0 1 2
    python benchmarks/vs_sb3.py --algo a2c --env CartPole-v1 --seeds 0 1 2
    python benchmarks/vs_sb3.py --algo ppo --whole-process --seeds 0 1 2

With --whole-process it times what a user meets instead: the whole `drl train ALGO ENV
--total-steps N --eval-every 0 --eval-episodes 20` process, start to exit, against the whole
process of a plain SB3 script doing the same work (the same hyperparameters, N steps, one
final 20-episode evaluation with SB3's evaluate_policy), alternating, one process each.

Wall time covers building the agent and its envs and training (drl's includes writing its
run directory: metrics, TensorBoard events, the final checkpoint); evaluation is timed apart.
Needs the `bench` extra: pip install -e .[bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
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


def sb3_hyperparameters(algo: str, agent, num_envs: int) -> dict:
    """drl's config as SB3 keyword arguments (plain numbers: schedules are the caller's)."""
    kwargs = dict(
        n_steps=agent.steps_per_env(num_envs),
        gamma=agent.gamma,
        gae_lambda=agent.gae_lambda,
        ent_coef=agent.ent_coef,
        vf_coef=agent.vf_coef,
        max_grad_norm=agent.max_grad_norm,
        normalize_advantage=agent.normalize_advantage,
        learning_rate=agent.learning_rate,
    )
    if algo == "ppo":
        kwargs.update(
            batch_size=agent.batch_size,
            n_epochs=agent.n_epochs,
            clip_range=agent.clip_range,
            clip_range_vf=agent.clip_range_vf,
            target_kl=agent.target_kl,
        )
    else:
        kwargs.update(use_rms_prop=agent.optimizer == "rmsprop", rms_prop_eps=agent.optimizer_eps)
    return kwargs


def sb3_model(algo: str, train: TrainConfig, agent):
    """The SB3 model with drl's hyperparameters; SB3's MlpPolicy default is 64x64 tanh, separate
    actor and critic, orthogonal init: the same network drl builds by default."""
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.env_util import make_vec_env

    assert agent.network.hidden_sizes == (64, 64) and agent.network.activation == "tanh"
    env = make_vec_env(train.env_id, n_envs=train.num_envs, seed=train.seed)
    kwargs = sb3_hyperparameters(algo, agent, train.num_envs)
    kwargs["learning_rate"] = sb3_schedule(agent.learning_rate, agent.lr_schedule)
    if algo == "ppo":
        kwargs["clip_range"] = sb3_schedule(agent.clip_range, agent.clip_schedule)
    return (PPO if algo == "ppo" else A2C)("MlpPolicy", env, seed=train.seed, device="cpu", **kwargs)


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


SB3_SCRIPT = """
import json, sys
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
args = json.loads(sys.argv[1])
env = make_vec_env(args["env_id"], n_envs=args["num_envs"], seed=args["seed"])
cls = PPO if args["algo"] == "ppo" else A2C
schedule = lambda value: (lambda remaining: remaining * value) if args["linear"] else value
kwargs = args["kwargs"]
kwargs["learning_rate"] = schedule(kwargs["learning_rate"])
if "clip_range" in kwargs:
    kwargs["clip_range"] = schedule(kwargs["clip_range"]) if args["clip_linear"] else kwargs["clip_range"]
model = cls("MlpPolicy", env, seed=args["seed"], device="cpu", **kwargs)
model.learn(args["total_steps"])
mean, std = evaluate_policy(model, make_vec_env(args["env_id"], n_envs=1, seed=10_000), n_eval_episodes=20)
print(json.dumps({"mean_return": mean}))
"""


def sb3_arguments(algo: str, train: TrainConfig, agent) -> dict:
    """The SB3 script's arguments: drl's preset as SB3 keyword arguments."""
    return {
        "algo": algo,
        "env_id": train.env_id,
        "num_envs": train.num_envs,
        "seed": train.seed,
        "total_steps": train.total_steps,
        "linear": agent.lr_schedule == "linear",
        "clip_linear": getattr(agent, "clip_schedule", "constant") == "linear",
        "kwargs": sb3_hyperparameters(algo, agent, train.num_envs),
    }


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{command[:3]} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def whole_process(args: argparse.Namespace) -> None:
    """drl train as a user runs it against a plain SB3 script, both timed as whole processes."""
    drl = shutil.which("drl")
    steps = args.steps or 100_000
    print(f"whole processes: drl train {args.algo} {args.env} --total-steps {steps} vs an SB3 script, same work")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(args.seeds):
            train, agent = configs(args.algo, args.env, seed, steps)
            sb3 = [sys.executable, "-c", SB3_SCRIPT, json.dumps(sb3_arguments(args.algo, train, agent))]
            ours = [drl, "train", args.algo, args.env, "--total-steps", str(steps), "--seed", str(seed)]
            ours += ["--eval-every", "0", "--eval-episodes", "20", "--no-progress", "--run-dir", f"{tmp}/r{seed}"]
            out = {}
            for who in ["sb3", "drl"] if i % 2 == 0 else ["drl", "sb3"]:
                seconds, stdout = timed(sb3 if who == "sb3" else ours)
                if who == "sb3":
                    result = json.loads(stdout.strip().splitlines()[-1])["mean_return"]
                else:
                    result = float(stdout.split("eval return ")[1].split()[0])
                out[who] = (seconds, result)
            rows.append(out)
            print(
                f"seed {seed}: SB3 script {out['sb3'][0]:5.1f} s (eval {out['sb3'][1]:.1f}) | drl train "
                f"{out['drl'][0]:5.1f} s (eval {out['drl'][1]:.1f}) | drl / SB3 {out['drl'][0] / out['sb3'][0]:.3f}",
                flush=True,
            )
    sb3_s = statistics.fmean(r["sb3"][0] for r in rows)
    drl_s = statistics.fmean(r["drl"][0] for r in rows)
    print(f"\nwhole process: SB3 {sb3_s:.1f} s, drl {drl_s:.1f} s; drl / SB3 {drl_s / sb3_s:.3f} (target <= 0.667)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="ppo", choices=["ppo", "a2c"])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="step budget (default: the preset's)")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes per agent")
    parser.add_argument("--whole-process", action="store_true", help="time drl train and an SB3 script end to end")
    args = parser.parse_args()
    if args.whole_process:
        whole_process(args)
        return

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
