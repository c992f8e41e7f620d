"""Train Stable-Baselines3 and drl off-policy agents side by side, in one process, and compare.

Both get the same hyperparameters (drl's preset, the rl-baselines3-zoo's, mapped onto SB3's
arguments), the same env, step budget and seeds; SB3 and drl take turns going first.
Both are then evaluated by the same code (drl's) on the same episodes (deterministic policy).

    python benchmarks/vs_sb3_off_policy.py --algo sac --seeds 0 1 2   # Pendulum-v1, 20k steps
    python benchmarks/vs_sb3_off_policy.py --algo dqn --seeds 0 1 2   # CartPole-v1, 50k steps
    python benchmarks/vs_sb3_off_policy.py --algo td3 --seeds 0 1 2   # Pendulum-v1, 20k steps

Wall time covers building the agent and its envs and training (drl's includes writing its
run directory: metrics, TensorBoard events, the final checkpoint); evaluation is timed apart.

CPU matmul precision: drl's `fast_matmul` run option (on in the SAC and TD3 presets) sets the process-global
`torch.backends.mkldnn.matmul.fp32_precision = "bf16"` (where a startup check finds it as
accurate as float32) for the length of a run. To be sure of each side's setting, before
every SB3 run the flag is reset to torch's default ("none"), and before a
drl run with --drl-exact-matmul too. The two flags below give the other comparisons:

    --drl-exact-matmul   drl with fast_matmul off even where its preset turns it on
    --sb3-fast-matmul    SB3 with the fast path on as well: both with the same fast matmuls

Evaluation runs at torch's default precision for both.
Needs the `bench` extra: pip install -e .[bench]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from vs_sb3 import SB3Policy  # drl's evaluation interface over an SB3 model
from vs_sb3 import configs as preset_configs

from runners.config import TrainConfig
from runners.evaluate import evaluate
from runners.precision import cpu_matmul_precision, enable_fast_cpu_matmul, restore_cpu_matmul_precision
from runners.run_dir import create_run_dir
from runners.seeding import derive_seeds
from runners.trainer import Trainer

ENVS = {"sac": "Pendulum-v1", "dqn": "CartPole-v1", "td3": "Pendulum-v1"}
SAC_TARGET, SAC_STRETCH = 1 / 3, 1 / 5  # drl / SB3 wall time


# ------------------------------------------------------------------ CPU matmul precision
def matmul_precision() -> str:
    return cpu_matmul_precision() or "n/a"


def set_default_matmul() -> None:
    """Torch's default float32 matmuls on the CPU (undo drl's fast_matmul)."""
    restore_cpu_matmul_precision("none")


def fast_matmul_available() -> bool:
    """Whether drl's check accepts the fast path on this CPU (the flag is left at its default)."""
    ok = enable_fast_cpu_matmul()
    set_default_matmul()
    return ok


# ------------------------------------------------------------------ configs
def configs(algo: str, seed: int, steps: int | None, exact_matmul: bool = False):
    """The preset's configs, as vs_sb3.py times them; fast_matmul off on request."""
    train, agent = preset_configs(algo, ENVS[algo], seed, steps)
    if exact_matmul:
        train.fast_matmul = False
    return train, agent


def sb3_kwargs(algo: str, train: TrainConfig, agent) -> dict:
    """drl's hyperparameters as SB3 arguments (those the algorithms share, then each one's own)."""
    net = agent.network
    # SB3's off-policy networks: ReLU MLPs with torch's default init, actor and critic apart
    assert net.activation == "relu", f"SB3's off-policy activation is ReLU, the preset has {net.activation}"
    assert not net.ortho_init and not net.share_encoder, "SB3's off-policy networks: default init, no sharing"
    assert train.num_envs == 1, "train_every maps onto SB3's train_freq for one env"
    gradient_steps = round(agent.utd_ratio * agent.train_every)
    assert gradient_steps >= 1, f"utd_ratio {agent.utd_ratio} * train_every {agent.train_every} rounds to 0"
    kwargs = dict(
        learning_rate=agent.learning_rate,
        buffer_size=agent.buffer_size,
        learning_starts=agent.learning_starts,
        batch_size=agent.batch_size,
        gamma=agent.gamma,
        tau=agent.tau,
        train_freq=agent.train_every,
        gradient_steps=gradient_steps,
        n_steps=agent.n_step,
        policy_kwargs=dict(net_arch=list(net.hidden_sizes)),
        seed=train.seed,
        device="cpu",
    )
    if algo == "sac":
        init = agent.ent_coef_init
        kwargs.update(
            ent_coef=agent.ent_coef if agent.ent_coef is not None else ("auto" if init == 1.0 else f"auto_{init}"),
            target_entropy="auto" if agent.target_entropy is None else agent.target_entropy,
            target_update_interval=agent.target_update_interval,
        )
        kwargs["policy_kwargs"]["n_critics"] = agent.n_critics
    elif algo == "td3":
        kwargs.update(
            policy_delay=agent.policy_delay,
            target_policy_noise=agent.target_policy_noise,
            target_noise_clip=agent.target_noise_clip,
        )
        kwargs["policy_kwargs"]["n_critics"] = agent.n_critics
    else:  # dqn
        assert not (agent.double_q or agent.dueling or agent.prioritized), "SB3's DQN has none of these"
        kwargs.update(
            target_update_interval=agent.target_update_interval,
            exploration_fraction=agent.exploration_fraction,
            exploration_initial_eps=agent.exploration_initial_eps,
            exploration_final_eps=agent.exploration_final_eps,
            max_grad_norm=agent.max_grad_norm,
        )
    return kwargs


def sb3_model(algo: str, train: TrainConfig, agent):
    from stable_baselines3 import DQN, SAC, TD3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise

    env = make_vec_env(train.env_id, n_envs=train.num_envs, seed=train.seed)
    kwargs = sb3_kwargs(algo, train, agent)
    if algo == "td3" and agent.exploration_noise > 0:
        # SB3 adds it to the action in [-1, 1]^A, as drl does
        dim = env.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(dim), np.full(dim, agent.exploration_noise))
    cls = {"sac": SAC, "td3": TD3, "dqn": DQN}[algo]
    return cls("MlpPolicy", env, **kwargs)


# ------------------------------------------------------------------ runs
def run_sb3(algo, train, agent, episodes, fast):
    set_default_matmul()  # whatever an earlier drl run in this process left set
    if fast:
        enable_fast_cpu_matmul()
    start = time.perf_counter()
    model = sb3_model(algo, train, agent)
    model.learn(train.total_steps)
    seconds = time.perf_counter() - start
    precision = matmul_precision()
    set_default_matmul()
    result = evaluate(SB3Policy(model), train.env_id, episodes, derive_seeds(train.seed).eval)
    return seconds, model.num_timesteps, result, precision


def run_drl(train, agent, episodes, workdir: Path):
    set_default_matmul()  # fast_matmul=False only leaves the flag as it finds it
    start = time.perf_counter()
    trainer = Trainer(train, agent)
    outcome = trainer.run(create_run_dir(workdir / f"drl-{train.algo}-{train.seed}"))
    seconds = time.perf_counter() - start
    precision = matmul_precision()
    set_default_matmul()
    result = evaluate(trainer.agent, train.env_id, episodes, derive_seeds(train.seed).eval)
    return seconds, outcome.global_step, result, precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="sac", choices=list(ENVS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=None, help="step budget (default: the preset's)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="evaluation episodes per agent")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave)")
    parser.add_argument("--drl-exact-matmul", action="store_true", help="run drl with fast_matmul off")
    parser.add_argument("--sb3-fast-matmul", action="store_true", help="run SB3 with drl's fast matmul path on")
    args = parser.parse_args()

    import stable_baselines3

    if args.threads:
        torch.set_num_threads(args.threads)
    initial = matmul_precision()
    available = cpu_matmul_precision() is not None and fast_matmul_available()
    drl_fast = configs(args.algo, 0, None, args.drl_exact_matmul)[0].fast_matmul
    sb3_fast = args.sb3_fast_matmul
    env_id = ENVS[args.algo]
    print(
        f"drl vs stable-baselines3 {stable_baselines3.__version__}: {args.algo} on {env_id}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"torch.backends.mkldnn.matmul.fp32_precision at start: {initial!r}; fast path (bf16) "
        f"{'passes' if available else 'fails or is missing in'} drl's accuracy check on this CPU; "
        f"SB3 runs with {'fast' if sb3_fast else 'default'} matmuls, drl with "
        f"{'fast_matmul' if drl_fast else 'fast_matmul off (default matmuls)'}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(args.seeds):
            order = ["sb3", "drl"] if i % 2 == 0 else ["drl", "sb3"]
            out = {}
            for who in order:
                train, agent = configs(args.algo, seed, args.steps, exact_matmul=args.drl_exact_matmul)
                if who == "sb3":
                    out[who] = run_sb3(args.algo, train, agent, args.eval_episodes, sb3_fast)
                else:
                    out[who] = run_drl(train, agent, args.eval_episodes, Path(tmp))
            rows.append((seed, out["sb3"], out["drl"]))
            (s_sec, s_steps, s_eval, s_prec), (d_sec, d_steps, d_eval, d_prec) = out["sb3"], out["drl"]
            print(
                f"seed {seed} ({order[0]} first): SB3 {s_sec:6.1f} s {s_steps / s_sec:7,.0f} steps/s "
                f"eval {s_eval.mean_return:7.1f} +- {s_eval.std_return:5.1f} [{s_prec}] | "
                f"drl {d_sec:6.1f} s {d_steps / d_sec:7,.0f} steps/s "
                f"eval {d_eval.mean_return:7.1f} +- {d_eval.std_return:5.1f} [{d_prec}] | "
                f"wall drl/SB3 {d_sec / s_sec:.3f}",
                flush=True,
            )

    print("\n| | wall time per run (s) | steps/s | eval return (mean over seeds) |")
    print("|---|---|---|---|")
    for name, k in (("SB3", 1), ("drl", 2)):
        wall = statistics.fmean(r[k][0] for r in rows)
        sps = statistics.fmean(r[k][1] / r[k][0] for r in rows)
        ret = statistics.fmean(r[k][2].mean_return for r in rows)
        print(f"| {name} | {wall:.1f} | {sps:,.0f} | {ret:.1f} |")
    ratio = statistics.fmean(r[2][0] / r[1][0] for r in rows)
    print(f"\nwall time drl / SB3: {ratio:.3f} (mean over {len(rows)} seeds: drl {1 / ratio:.2f}x as fast)")
    if args.algo == "sac":
        for label, bound in (("target", SAC_TARGET), ("stretch", SAC_STRETCH)):
            print(f"SAC {label} ratio <= 1/{round(1 / bound)}: {'yes' if ratio <= bound else 'no'}")


if __name__ == "__main__":
    main()
