"""Milliseconds per gradient step of an off-policy agent, eager against `--compile`, in one run.

Each variant runs in a fresh process (alternating, `--rounds` times), on minibatches of the
Pendulum-v1 preset's shape (batch 256, the preset's networks), with denormals flushed as
`drl train` does; compile time is left out of the figure and printed beside it.

It also prints the floor the hardware sets: the step's matmul FLOPs (counted by
`torch.utils.flop_counter` on one eager step, backward passes included) over this device's
matmul rate in the hidden layers' arithmetic (a [B, 256] x [256, 256] product, the shape of the
hidden layers, in bfloat16 where the preset's `mlp_precision` resolves to it, timed with the
same thread count). An update at that floor is bound by arithmetic, not by Python
or memory traffic.

    python benchmarks/update_step.py --algo sac            # CPU
    python benchmarks/update_step.py --algo sac --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import gymnasium as gym
import torch

from agents import Progress, Transitions, get_algorithm
from agents.presets import load_preset
from networks.precision import arithmetic_for
from runners.cliargs import set_values
from runners.config import TrainConfig


def preset_config(algo: str):
    """The env the benchmark uses for `algo` and the agent config of its preset."""
    env_id = "Pendulum-v1" if algo in ("sac", "td3", "ddpg") else "CartPole-v1"
    train, cfg = TrainConfig(algo=algo, env_id=env_id), get_algorithm(algo).config_cls()
    set_values([train, cfg], load_preset(algo, env_id, None)[1], "preset")
    return env_id, cfg


def measure(algo: str, compile: bool, device: str, steps: int, block: int) -> dict:
    torch.set_flush_denormal(True)
    spec = get_algorithm(algo)
    env_id, cfg = preset_config(algo)
    env = gym.make(env_id)
    dev = torch.device(device)
    torch.manual_seed(0)
    agent = spec.make_agent(cfg, env.observation_space, env.action_space, 1, dev, 0, compile=compile)
    g = torch.Generator().manual_seed(0)
    B, obs_dim = cfg.batch_size, env.observation_space.shape[0]
    if isinstance(env.action_space, gym.spaces.Discrete):
        actions = lambda: torch.randint(0, int(env.action_space.n), (B,), generator=g)  # noqa: E731
    else:
        actions = lambda: torch.rand((B, *env.action_space.shape), generator=g) * 2 - 1  # noqa: E731
    batches = [
        Transitions(
            *(
                x.to(dev)
                for x in (
                    torch.randn(B, obs_dim, generator=g),
                    actions(),
                    torch.randn(B, generator=g),
                    torch.full((B,), 0.99),
                    torch.randn(B, obs_dim, generator=g),
                    torch.ones(B),
                    torch.arange(B),
                )
            )
        )
        for _ in range(8)
    ]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    flops = step_flops(spec, cfg, env, dev, batches[0]) if not compile else None
    start = time.perf_counter()
    for i in range(3):  # compiles (the first calls)
        agent.update(batches[i % 8], Progress(i, 10**6))
    sync()
    warmup = time.perf_counter() - start
    blocks = []
    for b in range(steps // block):
        t0 = time.perf_counter()
        for i in range(block):
            agent.update(batches[i % 8], Progress(b * block + i, 10**6))
        sync()
        blocks.append((time.perf_counter() - t0) / block * 1000)
    return {"ms": statistics.median(blocks), "min": min(blocks), "warmup_s": warmup, "flops": flops}


def step_flops(spec, cfg, env, dev: torch.device, batch: Transitions) -> int:
    """Matmul FLOPs of one gradient step (forward and backward), on a throwaway agent."""
    from torch.utils.flop_counter import FlopCounterMode

    agent = spec.make_agent(cfg, env.observation_space, env.action_space, 1, dev, 0, compile=False)
    with FlopCounterMode(display=False) as counter:
        agent.update(batch, Progress(0, 10**6))
    return counter.get_total_flops()


def matmul_rate(device: str, rows: int, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """This device's matmul rate in `dtype`, in FLOP/s on the hidden layers' shape."""
    dev = torch.device(device)
    a, b = torch.randn(rows, 256, device=dev, dtype=dtype), torch.randn(256, 256, device=dev, dtype=dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(20):
        a @ b
    sync()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            a @ b
        sync()
        n += 50
    return 2 * rows * 256 * 256 * n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="sac", choices=["sac", "td3", "ddpg", "dqn"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", choices=["eager", "compiled"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.algo, args.worker == "compiled", args.device, args.steps, args.block)))
        return
    print(f"{args.algo} gradient step on {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    results: dict[str, list[dict]] = {"eager": [], "compiled": []}
    for r in range(args.rounds):
        for variant in ["eager", "compiled"] if r % 2 == 0 else ["compiled", "eager"]:
            command = [sys.executable, __file__, *sys.argv[1:], "--worker", variant]
            out = json.loads(
                subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
            )
            results[variant].append(out)
            print(
                f"round {r} {variant:8s} {out['ms']:.2f} ms/step (min {out['min']:.2f}), "
                f"first 3 steps {out['warmup_s']:.1f} s"
            )
    eager = statistics.median(x["ms"] for x in results["eager"])
    compiled = statistics.median(x["ms"] for x in results["compiled"])
    print(f"\nmedian ms per gradient step: eager {eager:.2f}, compiled {compiled:.2f} ({eager / compiled:.2f}x)")
    flops = results["eager"][0]["flops"]
    cfg = preset_config(args.algo)[1]
    dtype = getattr(torch, arithmetic_for(cfg.network.mlp_precision, torch.device(args.device)))
    rate = matmul_rate(args.device, cfg.batch_size, dtype)
    floor = flops / rate * 1000
    print(
        f"matmul work per step {flops / 1e6:.0f} MFLOP; {str(dtype).removeprefix('torch.')} matmul rate here "
        f"{rate / 1e9:.1f} GFLOP/s; "
        f"floor {floor:.2f} ms per step: compiled reaches {floor / compiled:.0%} of it, eager {floor / eager:.0%}"
    )


if __name__ == "__main__":
    main()
