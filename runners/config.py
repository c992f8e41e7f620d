"""Options of a training run that are not the algorithm's: env, budget, seed, logging."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch

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
    backend: Literal["gym", "async", "native", "envpool"] = "gym"
    """Vector env backend: gym (envs stepped in this process), async (one process per env),
    native (our torch version of a classic-control env: all envs as tensors on the device), or
    envpool (EnvPool's C++ threads; Atari and MuJoCo)."""
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
    solved_threshold: float | None = None
    """Eval mean return that counts as solving the env (presets give it); the first evaluation
    reaching it is logged as eval/solved_step and eval/solved_seconds."""
    stop_when_solved: bool = False
    """End training at the first evaluation that reaches solved_threshold."""
    checkpoint_every: int = 50_000
    """Write a checkpoint every this many env steps (one is always written at the end)."""
    save_buffer: bool = False
    """Include the replay buffer in checkpoints (off-policy agents), so that a resumed run
    continues with the same data."""
    progress: bool = True
    """Show a progress bar on a terminal."""
    torch_threads: int = 0
    """Threads torch may use for CPU math (0: torch's default)."""
    fast_matmul: bool = False
    """Let float32 matmuls on the CPU take oneDNN's fast path (torch.backends.mkldnn.matmul.
    fp32_precision = bf16) for the run, if a check at startup finds it as accurate as float32
    (relative error < 1e-5) on this CPU. About 2x faster for 256-wide layers on AVX-512 CPUs, but
    slower for small ones: the SAC and TD3 presets turn it on."""
    flush_denormal: bool = True
    """Flush denormal floats (|x| < 1.2e-38) to zero in CPU math, for the rest of the process
    (torch.set_flush_denormal). Adam's moment estimates of weights whose gradient stays zero
    (dead ReLUs) decay through the denormal range, where x86 CPUs run 10-30x slower; flushing
    changes no value above 1e-38. Torch's worker threads take the setting only if it is made
    before their first parallel operation, as `drl train` does."""
    keep_freed_memory: bool = True
    """Keep freed host memory in the process instead of handing it back to the OS (glibc's
    malloc thresholds, see runners/allocator.py), for the rest of the process: tensors of a few
    hundred KiB, allocated and freed at every step, then reuse warm pages instead of faulting in
    new ones. About 15% off a SAC gradient step on the CPU; the process stays at its peak size."""
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
        require(
            not self.stop_when_solved or self.solved_threshold is not None,
            "stop_when_solved",
            "used with --solved-threshold",
            self.stop_when_solved,
        )
        require_non_negative(
            self, "seed", "eval_every", "eval_episodes", "checkpoint_every", "torch_threads", "eval_video_every"
        )
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
