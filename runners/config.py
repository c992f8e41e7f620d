"""Options of a training run that are not the algorithm's: env, budget, seed, logging."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

import torch

import envs
from agents.config import ConfigError, require, require_non_negative, require_positive

LOGGERS = ("jsonl", "tensorboard", "wandb")
WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class TrainConfig:
    """Run options; together with the algorithm's config they make one `drl train` run."""

    algo: str = "ppo"
    """Algorithm name (positional ALGO on the command line)."""
    env_id: str = "CartPole-v1"
    """Gymnasium environment id, or module:EnvName-v0 (positional ENV_ID)."""
    total_steps: int = 1_000_000
    """Environment steps to train for, summed over all envs."""
    num_envs: int = 8
    """Parallel environments."""
    backend: str = field(default="gym", metadata={"choices": envs.backend_names})
    """Vector env backend, one of those registered with envs.register_backend (the built-in
    ones are described in envs/make.py)."""
    num_workers: int = 0
    """Ray rollout workers (processes, here or on a cluster), each stepping envs_per_worker envs
    of `backend` with a CPU copy of the policy; 0: collect in this process."""
    envs_per_worker: int | None = None
    """Envs of each Ray worker; none: num_envs / num_workers. Given, num_envs becomes
    num_workers x envs_per_worker."""
    exact_workers: bool = True
    """Ray workers of on-policy runs on a CPU learner reproduce the local run exactly: each worker
    computes the policy on batches of the whole run's shape (num_envs rows, its own filled) and
    samples from the learner's random stream. That costs num_workers times one worker's share of
    inference; off, each computes on its own envs only (same algorithm, other rounding and draws)."""
    ray_address: str | None = None
    """Ray cluster to join: auto (the one this machine is part of) or HOST:PORT of `ray start
    --head`; none: start a local Ray instance for the run."""
    nproc: int = 1
    """Training processes on this machine (DDP, on-policy algorithms): more than 1 starts them
    with torchrun, each on its own GPU (NCCL) or on the CPU (gloo), with num_envs / nproc of the
    envs; gradients are averaged, rank 0 logs, evaluates and checkpoints (runners/distributed.py)."""
    seed: int = 0
    """Root seed; every other seed (envs, torch, evaluation) is derived from it."""
    device: str = "auto"
    """Device for networks and rollout storage: auto (cuda if available), cpu, cuda, cuda:N."""
    preset: str | None = None
    """Preset name or YAML file; by default the one named after the env id, if any."""
    run_dir: str | None = None
    """Directory of this run; by default runs/ALGO_ENV_sSEED_TIMESTAMP."""
    logger: str = "jsonl,tensorboard"
    """Comma-separated sinks besides metrics.jsonl and TensorBoard, which are always on: add wandb."""
    log_every: int = 2_000
    """Log training metrics at most once per this many env steps."""
    eval_every: int = 25_000
    """Evaluate the policy every this many env steps (0: only at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation (0: no evaluation)."""
    eval_deterministic: bool | None = None
    """Evaluate with the policy's most likely action (else sampled); none: the protocol's default
    (runners/evaluate.py): sampled for policy-gradient agents on Atari, deterministic otherwise."""
    eval_epsilon: float | None = None
    """Probability of a uniformly random action at each evaluation step; none: the protocol's
    default (runners/evaluate.py): 0.001 for value-based agents (DQN) on Atari, 0 otherwise."""
    solved_threshold: float | None = None
    """Eval mean return that counts as solving the env (presets give it); the first evaluation
    reaching it is logged as eval/solved_step and eval/solved_seconds."""
    stop_when_solved: bool = False
    """End training at the first evaluation that reaches solved_threshold."""
    checkpoint_every: int = 50_000
    """Write a checkpoint every this many env steps (one is always written at the end)."""
    checkpoint_minutes: float = 10.0
    """Also write one when this many minutes have passed since the last (0: by steps only), so
    that a run killed without warning (SIGKILL, a lost machine) loses at most this much."""
    keep_checkpoints: int = 3
    """Checkpoints kept: the newest this many, plus the one of the best evaluation; older ones
    are deleted once a new one is safely on disk (0: keep all)."""
    on_nan: Literal["stop", "skip"] = "stop"
    """What a NaN or infinity in an update's losses or the parameters after it does: stop (the
    run ends as diverged; its last checkpoint predates the update), or skip (the agent's weights,
    optimiser state and normaliser statistics are put back as they were before the update, its
    data dropped, and training goes on; 10 skipped updates in a row end the run as diverged).
    skip copies the agent's state before every update. Non-finite observations or rewards come
    from the env and stop the run either way."""
    save_buffer: bool = False
    """Include the replay buffer in checkpoints (off-policy agents), so that a resumed run
    continues with the same data."""
    progress: bool = True
    """Show a progress bar on a terminal."""
    compile: bool = False
    """Run the agent's gradient step through torch.compile (losses, backward passes and the
    optimiser step; CUDA graphs on a GPU). The first run compiles for seconds to tens of
    seconds; TorchInductor caches the result on disk for later runs. Where compiling fails the
    run warns and continues uncompiled."""
    torch_threads: int = 0
    """Threads torch may use for CPU math (0: torch's default). Set by `drl train` for its own
    process; the Trainer leaves the process as it finds it."""
    fast_matmul: bool = False
    """Let float32 matmuls on the CPU take oneDNN's fast path (torch.backends.mkldnn.matmul.
    fp32_precision = bf16) if a check at startup finds it as accurate as float32 (relative
    error < 1e-5) on this CPU: faster 256-wide layers on CPUs with AVX512-BF16, slower small
    ones. Process-wide: `drl train` sets it for its own process."""
    flush_denormal: bool = True
    """Flush denormal floats (|x| < 1.2e-38) to zero in CPU math (torch.set_flush_denormal).
    Adam's moment estimates of weights whose gradient stays zero (dead ReLUs) decay through the
    denormal range, where x86 CPUs run many times slower; flushing changes no value above
    1.2e-38. Process-wide: `drl train` sets it for its own process, before torch starts its
    worker threads."""
    wandb_project: str = "drl"
    """Weights & Biases project."""
    wandb_entity: str | None = None
    """Weights & Biases entity (user or team); none: your default."""
    wandb_group: str | None = None
    """Weights & Biases group, e.g. to gather the seeds of one experiment."""
    wandb_tags: tuple[str, ...] = ()
    """Weights & Biases tags of the run."""
    wandb_save_model: bool = False
    """Upload the final checkpoint to Weights & Biases as a model artifact."""
    eval_video_every: int = 0
    """Record one evaluation episode as an MP4 in RUN_DIR/videos (and TensorBoard, wandb) every
    this many env steps and at the end (0: never); the env must render rgb_array frames."""

    def validate(self) -> None:
        require_positive(self, "total_steps", "num_envs", "log_every")
        require_non_negative(self, "num_workers")
        if self.num_workers:
            if self.envs_per_worker is not None:
                require_positive(self, "envs_per_worker")
                self.num_envs = self.num_workers * self.envs_per_worker
            require(
                self.num_envs % self.num_workers == 0,
                "num_envs",
                f"a multiple of --num-workers {self.num_workers} (or give --envs-per-worker)",
                self.num_envs,
            )
        require_positive(self, "nproc")
        require(self.num_envs % self.nproc == 0, "num_envs", f"a multiple of --nproc {self.nproc}", self.num_envs)
        require(not (self.nproc > 1 and self.num_workers), "nproc", "1 with --num-workers", self.nproc)
        names = envs.backend_names()
        require(self.backend in names, "backend", "one of " + ", ".join(names), self.backend)
        require(
            not self.stop_when_solved or self.solved_threshold is not None,
            "stop_when_solved",
            "used with --solved-threshold",
            self.stop_when_solved,
        )
        require_non_negative(
            self,
            "seed",
            "eval_every",
            "eval_episodes",
            "checkpoint_every",
            "checkpoint_minutes",
            "keep_checkpoints",
            "torch_threads",
            "eval_video_every",
        )
        require(0 <= (self.eval_epsilon or 0) <= 1, "eval_epsilon", "a probability in [0, 1]", self.eval_epsilon)
        require(self.device == "auto" or _is_device(self.device), "device", "auto, cpu, cuda or cuda:N", self.device)
        for name in self.loggers():
            require(name in LOGGERS, "logger", "a comma-separated list of " + ", ".join(LOGGERS), self.logger)
        mode = os.environ.get("WANDB_MODE")
        if "wandb" in self.loggers() and mode and mode not in WANDB_MODES:
            raise ConfigError(f"WANDB_MODE={mode!r} is not a wandb mode; use one of: {', '.join(WANDB_MODES)}")

    def loggers(self) -> list[str]:
        """Sinks in use: jsonl and tensorboard always, plus any named in `logger`."""
        named = [name.strip() for name in self.logger.split(",") if name.strip()]
        return list(dict.fromkeys(["jsonl", "tensorboard", *named]))

    def torch_device(self) -> torch.device:
        """The device `device` names, with auto resolved; an error when CUDA is asked for and missing."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {self.device}: CUDA is not available on this machine; use --device cpu")
        return device


def _is_device(name: str) -> bool:
    try:
        return torch.device(name).type in ("cpu", "cuda")
    except (RuntimeError, ValueError):
        return False
