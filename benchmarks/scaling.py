"""Env steps per second of the local trainer against Ray rollout workers, in one run.

For each env (CartPole-v1 on the gym backend, Pong on EnvPool) it trains, each run a fresh
`drl train` process with the same total envs and steps:

  local      the local trainer (PPO, all envs in the learner's process)
  sync K     PPO through K Ray workers that wait for each update (`--num-workers K`)
  appo K     APPO through K Ray workers that do not wait (`drl train appo --num-workers K`)

and prints training steps/s (the median of the logged `charts/sps` after the first log,
which holds start-up), the whole-process wall time a user sees (Ray start-up included), and
each steps/s as a ratio to the local trainer's.

    python benchmarks/scaling.py                        # both envs, 1 and 2 workers
    python benchmarks/scaling.py --envs cartpole --workers 1 2 --steps 50000
    python benchmarks/scaling.py --envs cartpole --workers 1 --repeats 5   # medians of 5, order alternating

Needs the `distributed` extra (and `atari`, `envpool` for Pong).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {
    # env id, backend, total envs, steps, extra options (the PPO and APPO presets apply beneath them)
    "cartpole": ("CartPole-v1", "gym", 8, 50_000, ["--n-steps", "32"]),
    "pong": ("ALE/Pong-v5", "envpool", 8, 8_192, ["--n-steps", "128"]),
}


def run(label: str, algo: str, env_id: str, backend: str, num_envs: int, steps: int, extra: list[str], workers: int):
    drl = shutil.which("drl") or str(Path(sys.executable).parent / "drl")
    with tempfile.TemporaryDirectory() as tmp:
        command = [drl, "train", algo, env_id, "--backend", backend, "--num-envs", str(num_envs)]
        command += ["--total-steps", str(steps), "--eval-episodes", "0", "--checkpoint-every", "0", "--no-progress"]
        command += ["--log-every", str(max(1, steps // 20)), "--run-dir", f"{tmp}/run", "--device", "cpu", *extra]
        if workers:
            command += ["--num-workers", str(workers)]
        start = time.perf_counter()
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["?"])[-1]
            print(f"  {label}: failed ({tail})", flush=True)
            return None
        rows = [json.loads(line) for line in Path(tmp, "run", "metrics.jsonl").read_text().splitlines()]
    rates = [row["charts/sps"] for row in rows if "charts/sps" in row][1:] or [0.0]
    lag = [row["workers/policy_lag_mean"] for row in rows if "workers/policy_lag_mean" in row]
    result = {"label": label, "sps": statistics.median(rates), "seconds": seconds}
    if lag:
        result["lag"] = statistics.mean(lag)
    print(f"  {label}: {result['sps']:,.0f} steps/s, {seconds:.1f} s whole process", flush=True)
    return result


def median_run(label: str, results: list[dict]) -> dict | None:
    if not results:
        return None
    out = {"label": label, "sps": statistics.median(r["sps"] for r in results)}
    out["seconds"] = statistics.median(r["seconds"] for r in results)
    if "lag" in results[0]:
        out["lag"] = statistics.median(r["lag"] for r in results)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, help="steps per run (default: per env, see SETTINGS)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each kind, in alternating order (forward, then backward), reported by their median",
    )
    args = parser.parse_args()
    print(f"scaling on {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    table = []
    for name in args.envs:
        env_id, backend, num_envs, steps, extra = SETTINGS[name]
        steps = args.steps or steps
        print(f"{env_id} ({backend}, {num_envs} envs, {steps} steps):", flush=True)
        kinds = [("local", "ppo", 0)] + [(f"sync {k}", "ppo", k) for k in args.workers]
        kinds += [(f"appo {k}", "appo", k) for k in args.workers]
        results: dict[str, list[dict]] = {label: [] for label, _, _ in kinds}
        for r in range(args.repeats):  # a noisy shared machine: alternate the order, take medians
            for label, algo, k in kinds if r % 2 == 0 else kinds[::-1]:
                result = run(label, algo, env_id, backend, num_envs, steps, extra, k)
                if result is not None:
                    results[label].append(result)
        runs = [median_run(label, results[label]) for label, _, _ in kinds]
        base = runs[0]["sps"] if runs[0] else None
        for r in runs:
            if r is not None:
                ratio = f"{r['sps'] / base:.2f}" if base else "-"
                lag = f"{r['lag']:.1f}" if "lag" in r else "-"
                table.append((env_id, r["label"], f"{r['sps']:,.0f}", ratio, f"{r['seconds']:.1f}", lag))
    print("\n| env | run | steps/s | ratio to local | whole process (s) | mean policy lag |")
    print("|---|---|---|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
