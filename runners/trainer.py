"""The trainer: collect -> update -> log -> evaluate -> checkpoint, until the step budget.

A run can stop early (Ctrl-C, SIGTERM, or a `should_stop` callback) and continue later
from its last checkpoint exactly as if it had never stopped: the checkpoint carries the
agent, the envs' own state, the pending observation, the counters and the RNG streams.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import torch

import envs
from agents import Agent, ConfigError, get_algorithm
from envs.render import RenderError
from runners import checkpoint as ckpt
from runners import distributed
from runners.cliargs import from_dict, to_dict, warn
from runners.config import TrainConfig
from runners.evaluate import EvalResult, evaluate, evaluation_protocol
from runners.guard import Diverged, FiniteCheck, UpdateSnapshot, agent_parameters
from runners.loggers import JsonlSink, MetricLogger, TensorBoardSink, WandbSink
from runners.off_policy import OffPolicyLoop
from runners.progress import ProgressBar
from runners.rollout import OnPolicyLoop
from runners.run_dir import read_status, update_status, write_config
from runners.seeding import derive_seeds
from runners.signals import Aborted, Interrupted, StopRequest


@dataclass
class TrainResult:
    status: str  # "finished", "solved" (stopped early by stop_when_solved) or "interrupted"
    # (a run that diverges or crashes raises instead; run.json then says "diverged" or "crashed")
    global_step: int
    seconds: float
    final_eval: EvalResult | None
    checkpoint: Path | None
    solved: tuple[int, float] | None = None  # env steps and training seconds (evaluation excluded) to solve


def run_config(train_cfg: TrainConfig, algo_cfg: Any) -> dict[str, Any]:
    """The resolved config as written to config.yaml and into every checkpoint."""
    return {"algo": train_cfg.algo, "env_id": train_cfg.env_id, "train": to_dict(train_cfg), "agent": to_dict(algo_cfg)}


MAX_SKIPPED_IN_ROW = 10
"""--on-nan skip: this many non-finite updates in a row end the run as diverged all the same."""

RETIRED_OPTIONS = {"keep_freed_memory", "fused_update", "update_dtype", "compile_update"}
"""Options that runs saved by earlier versions may hold and this one no longer has (the
hand-written SAC update and the trainer's malloc settings); they are dropped on load."""


def configs_from(config: dict[str, Any]) -> tuple[TrainConfig, Any]:
    """The (TrainConfig, algorithm config) pair saved by `run_config`."""
    spec = get_algorithm(config["algo"])
    train, agent = (
        {key: value for key, value in config[part].items() if key not in RETIRED_OPTIONS} for part in ("train", "agent")
    )
    if spec.kind == "off_policy":
        agent.setdefault("share_frames", False)  # runs from before frame sharing stored whole observations
    return from_dict(TrainConfig, train), from_dict(spec.config_cls, agent)


class Spaces(NamedTuple):
    """The spaces of one env, where no env of the run is in this process (Ray workers hold them)."""

    single_observation_space: gym.Space
    single_action_space: gym.Space


def build_agent(
    train_cfg: TrainConfig,
    algo_cfg: Any,
    env: envs.VectorEnvBackend | Spaces,
    device: torch.device,
    num_envs: int | None = None,
) -> Agent:
    """A fresh agent for `env`'s spaces and `num_envs` envs (default: the run's; in DDP training
    the rank's share); network weights come from torch's global RNG."""
    spec = get_algorithm(train_cfg.algo)
    spec.check_action_space(env.single_action_space, train_cfg.env_id)
    seeds = derive_seeds(train_cfg.seed)
    torch.manual_seed(seeds.torch)
    return spec.make_agent(
        algo_cfg,
        env.single_observation_space,
        env.single_action_space,
        train_cfg.num_envs if num_envs is None else num_envs,
        device,
        seeds.agent,
        compile=train_cfg.compile,
    )


class Trained(NamedTuple):
    """A checkpoint's agent, ready to act (`load_trained`)."""

    payload: dict[str, Any]
    train_cfg: TrainConfig
    agent: Agent
    observation_space: gym.Space
    action_space: gym.Space

    @property
    def run_dir(self) -> Path:
        checkpoint = Path(self.payload["path"])
        return checkpoint.parent.parent if checkpoint.parent.name == ckpt.CHECKPOINT_DIR else checkpoint.parent


def load_trained(path: str | Path, device: str = "auto") -> Trained:
    """The agent of a checkpoint (or a run directory's newest) on `device`, with its env's
    spaces; a CheckpointError when the checkpoint does not fit its own config."""
    payload = ckpt.load_checkpoint(path)
    try:
        train_cfg, algo_cfg = configs_from(payload["config"])
        train_cfg.device = device
        train_cfg.validate()
        torch_device = train_cfg.torch_device()
        probe = envs.make(train_cfg.env_id, 1, "gym", device=torch_device, training=False)
        try:
            spaces = Spaces(probe.single_observation_space, probe.single_action_space)
            agent = build_agent(train_cfg, algo_cfg, spaces, torch_device)
        finally:
            probe.close()
        agent.load_state_dict(payload["agent"])
    except (KeyError, RuntimeError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ckpt.CheckpointError(f"checkpoint {payload['path']} does not fit its config ({reason})") from None
    return Trained(payload, train_cfg, agent, *spaces)


def host_values(metrics: dict[str, float | torch.Tensor]) -> dict[str, float]:
    """The metrics as Python floats, device tensors read in one transfer."""
    tensors = [v.detach().reshape(()).double() for v in metrics.values() if torch.is_tensor(v)]
    values = iter(torch.stack(tensors).tolist() if tensors else [])
    return {k: next(values) if torch.is_tensor(v) else float(v) for k, v in metrics.items()}


def crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]."""
    return every > 0 and after // every > before // every


class Trainer:
    """Drives one training run; see the module docstring. The algorithm's kind picks the loop
    that collects and updates (rollouts for on-policy agents, replay for off-policy ones)."""

    def __init__(self, train_cfg: TrainConfig, algo_cfg: Any, resume: dict[str, Any] | None = None):
        spec = get_algorithm(train_cfg.algo)
        if train_cfg.num_workers and spec.kind != "on_policy":
            raise ConfigError(f"--num-workers collects rollouts for on-policy algorithms, not {train_cfg.algo}")
        train_cfg.validate()
        algo_cfg.validate()
        self.cfg, self.algo_cfg = train_cfg, algo_cfg
        # DDP (runners/distributed.py): this process's rank; rank 0 alone writes the run directory
        self.rank, self.world_size = distributed.rank_and_world()
        self.is_main = self.rank == 0
        self.device = distributed.rank_device(train_cfg.torch_device())
        self.seeds = derive_seeds(train_cfg.seed)
        # this rank's envs (how many, index of the first): all of them in a single process
        self.env_shard = distributed.env_shard(train_cfg.num_envs, self.rank, self.world_size)
        self.env_seed = self.seeds.env + self.env_shard[1]  # global env i has seed seeds.env + i
        self.global_step = 0
        self.elapsed = 0.0  # wall seconds of earlier sessions of this run
        self.eval_seconds = 0.0
        self.skipped_updates = 0  # --on-nan skip: updates undone, over the whole run
        self.skipped_in_row = 0
        self.warned_unpicklable = False
        self.resumed_from: int | None = None
        self.solved: tuple[int, float] | None = None
        self.best: dict[str, Any] | None = None  # the best evaluation's step and mean return (its checkpoint is kept)
        self.env: envs.VectorEnvBackend | None = None  # none when Ray workers hold the envs
        self.loop: Any = None
        distributed.check_supported(spec.kind, train_cfg.algo, self.world_size)
        try:
            if train_cfg.num_workers:
                self.loop = self._worker_loop(spec.asynchronous)
            else:
                num_envs = self.env_shard[0]
                self.env = envs.make(
                    train_cfg.env_id, num_envs, train_cfg.backend, seed=self.env_seed, device=self.device
                )
                agent_cfg = distributed.shard_config(algo_cfg, train_cfg.num_envs, self.world_size)  # DDP: a rank's
                self.agent = build_agent(train_cfg, agent_cfg, self.env, self.device, num_envs)
                if spec.kind == "off_policy":  # Atari's frame stacks are stored a frame at a time
                    frames = envs.frame_stack(train_cfg.env_id)
                    self.loop = OffPolicyLoop(self.env, self.agent, train_cfg.total_steps, frames)
                else:
                    self.loop = OnPolicyLoop(self.env, self.agent, train_cfg.total_steps)
                self.loop.steps_per_iteration *= self.world_size  # DDP: global_step counts every rank's steps
                self.loop.reset(seed=None)  # the envs' first reset uses seeds.env
            if resume is not None:
                self._restore(resume)
            # DDP: replicas of rank 0's agent; a fresh run seeds each rank's own sampling stream
            distributed.join(self.agent, self.seeds.agent if resume is None else None)
        except BaseException:
            self.close()
            raise

    def _worker_loop(self, asynchronous: bool) -> Any:
        """The loop over Ray rollout workers (`runners.ray_workers`): synchronous for on-policy
        agents, asynchronous for those that correct for policy lag (APPO)."""
        from runners import ray_workers

        cfg, algo_cfg = self.cfg, self.algo_cfg
        specs = ray_workers.worker_specs(
            cfg.env_id,
            cfg.backend,
            self.seeds.env,
            cfg.num_workers,
            cfg.num_envs // cfg.num_workers,
            not asynchronous and cfg.exact_workers and self.device.type == "cpu",  # see TrainConfig.exact_workers
            cfg.algo,
            algo_cfg,
            algo_cfg.steps_per_env(cfg.num_envs),
        )
        pool = ray_workers.WorkerPool(specs, cfg.ray_address)
        try:
            observation_space, action_space, _ = pool.spaces
            self.agent = build_agent(cfg, algo_cfg, Spaces(observation_space, action_space), self.device)
            loop = ray_workers.RayAsyncLoop if asynchronous else ray_workers.RaySyncLoop
            return loop(pool, self.agent, cfg.total_steps)
        except BaseException:
            pool.close()
            raise

    def close(self) -> None:
        """Release the envs (and Ray workers)."""
        if self.env is not None:
            self.env.close()
        if hasattr(self.loop, "close"):
            self.loop.close()

    # ----------------------------------------------------------------- the loop
    def run(
        self,
        run_dir: Path,
        should_stop: Callable[[], bool] = lambda: False,
        wandb_id: str | None = None,
        stop: StopRequest | None = None,
    ) -> TrainResult:
        """Train until total_steps, or until a stop request (`stop`, set by SIGINT/SIGTERM in
        `drl train`, or `should_stop()`) after an iteration; evaluations and videos end at once
        on a stop request (see runners/signals.py). Raises Diverged when a value goes
        non-finite, envs.EnvFailure when an env fails; the run's status says so in run.json."""
        cfg = self.cfg
        run_dir = Path(run_dir)
        stop = stop or StopRequest()
        if self.is_main:  # DDP: the other ranks write nothing
            write_config(run_dir, run_config(cfg, self.algo_cfg))  # on resume: with any new total_steps
            update_status(
                run_dir,
                status="running",
                algo=cfg.algo,
                env_id=cfg.env_id,
                seed=cfg.seed,
                total_steps=cfg.total_steps,
                pid=os.getpid(),  # lets `drl runs` tell a run killed without a word from a running one
                host=socket.gethostname(),
            )
            self.best = read_status(run_dir).get("best_checkpoint")
        logger: MetricLogger | None = None
        bar: ProgressBar | None = None
        status, final_eval, path = "finished", None, None
        finite = getattr(self.loop, "finite", None)
        parameters = agent_parameters(self.agent)
        snapshot = UpdateSnapshot(self.agent) if cfg.on_nan == "skip" and finite is not None else None
        # off-policy iterations are single env steps: the parameters are watched at logs and
        # checkpoints only (runners.guard), and on a GPU the flags are read there only
        off_policy = isinstance(self.loop, OffPolicyLoop)
        check_every_iteration = not (self.device.type == "cuda" and off_policy)
        try:
            logger = self._make_logger(run_dir, wandb_id)
            bar = ProgressBar(
                cfg.total_steps, self.global_step, cfg.progress and self.is_main, f"{cfg.algo} {cfg.env_id}"
            )
            start = time.perf_counter()
            last_log_time, last_log_step, last_eval_seconds = start, self.global_step, self.eval_seconds
            last_save, checked_step = time.monotonic(), self.global_step
            while self.global_step < cfg.total_steps:
                before = self.global_step
                if snapshot is not None:
                    snapshot.take()
                try:
                    metrics = self.loop.iterate(before)
                except envs.EnvFailure as exc:
                    exc.step = before  # the env steps done when it failed (at most one iteration more)
                    raise
                self.global_step += self.loop.steps_per_iteration
                last = self.global_step >= cfg.total_steps
                logging = crossed(before, self.global_step, cfg.log_every) or last
                saving = (
                    last
                    or crossed(before, self.global_step, cfg.checkpoint_every)
                    or (cfg.checkpoint_minutes > 0 and time.monotonic() - last_save >= 60 * cfg.checkpoint_minutes)
                )
                if finite is not None:
                    losses = [v for k, v in metrics.items() if k.endswith("loss") and torch.is_tensor(v)]
                    finite.watch_sum("losses", losses)
                    reading = snapshot is not None or logging or saving or stop.requested
                    watched = reading or not off_policy
                    if watched:
                        finite.watch_sum("parameters", parameters)  # (state: its value now is what counts)
                    if reading or check_every_iteration:
                        checked_step, skipped = self._check_finite(finite, checked_step, snapshot)
                        if skipped:  # the update was undone: its losses are not the agent's
                            metrics = {k: v for k, v in metrics.items() if not k.startswith("losses/")}
                    if snapshot is not None:
                        metrics["charts/skipped_updates"] = float(self.skipped_updates)

                if cfg.eval_episodes and (last or crossed(before, self.global_step, cfg.eval_every)):
                    if self.is_main:  # DDP: rank 0 alone evaluates, and tells the others if solved
                        try:
                            with stop.interruptible():
                                final_eval = self._evaluate(logger, start)
                        except Interrupted:
                            status = "interrupted"
                        else:
                            saving |= self._is_best(final_eval)
                    if cfg.stop_when_solved and distributed.from_rank0(self.solved is not None):
                        status, last = "solved", True
                if (
                    self.is_main
                    and status != "interrupted"
                    and cfg.eval_video_every
                    and (last or crossed(before, self.global_step, cfg.eval_video_every))
                ):
                    try:
                        with stop.interruptible():
                            self._record_video(run_dir, logger)
                    except Interrupted:
                        status = "interrupted"
                if logging:
                    if self.world_size > 1:  # DDP: every rank's episodes, logged by rank 0
                        distributed.sum_episode_stats(self.loop.collector.episodes)
                    metrics = host_values({**metrics, **self.loop.pop_episode_stats()})
                    if metrics["charts/episodes"] == 0:
                        del metrics["charts/episode_return"], metrics["charts/episode_length"]
                    now = time.perf_counter()
                    # training speed: the window's evaluations and videos left out
                    training = (now - last_log_time) - (self.eval_seconds - last_eval_seconds)
                    metrics["charts/sps"] = (self.global_step - last_log_step) / max(training, 1e-9)
                    metrics.update(self._time_metrics(now - start))
                    logger.log(self.global_step, metrics)
                    bar.update(self.global_step, metrics["charts/sps"], metrics.get("charts/episode_return"))
                    last_log_time, last_log_step, last_eval_seconds = now, self.global_step, self.eval_seconds
                if not last and status != "solved":
                    stopping = status == "interrupted" or stop.requested or should_stop()
                    if distributed.any_rank(stopping):  # DDP: all ranks stop together
                        status = "interrupted"
                if distributed.any_rank(saving) or status != "finished":  # DDP: a clock or rank 0's best
                    if finite is not None and not watched:  # (a best or solved one: checked before it is saved)
                        finite.watch_sum("parameters", parameters)
                        checked_step, _ = self._check_finite(finite, checked_step)
                    path = self._save(run_dir, start)
                    last_save = time.monotonic()
                if last and cfg.wandb_save_model:
                    logger.save_model(path)
                if status != "finished":
                    break
        except BaseException as exc:
            if self.is_main:
                crash = "diverged" if isinstance(exc, Diverged) else "crashed"
                if isinstance(exc, (KeyboardInterrupt, Aborted)):
                    crash = "interrupted"
                with contextlib.suppress(OSError):  # a full disk: the error that stopped the run says so
                    update_status(run_dir, status=crash, global_step=self.global_step)
            raise
        finally:
            if bar is not None:
                bar.close()
            if logger is not None:
                logger.close()
            self.close()
        seconds = self.elapsed + time.perf_counter() - start
        if self.is_main:
            update_status(run_dir, status=status, global_step=self.global_step, seconds=round(seconds, 3))
        return TrainResult(status, self.global_step, seconds, final_eval, path, self.solved)

    def _check_finite(
        self, finite: FiniteCheck, checked_step: int, snapshot: UpdateSnapshot | None = None
    ) -> tuple[int, bool]:
        """Raise Diverged, naming what went non-finite, if anything did since `checked_step`
        (the step of the last check). With a `snapshot` (--on-nan skip, checked after every
        update), a non-finite loss or parameter puts the agent back as it was before the update
        instead, until MAX_SKIPPED_IN_ROW updates in a row went so. Returns the step checked
        and whether the update was undone."""
        bad = finite.first_bad()
        if bad is None:
            self.skipped_in_row = 0
            return self.global_step, False
        where = f"between step {checked_step} and step {self.global_step}"
        if snapshot is not None and bad in ("losses", "parameters"):
            snapshot.restore()
            self.skipped_updates += 1
            self.skipped_in_row += 1
            if self.skipped_in_row < MAX_SKIPPED_IN_ROW:
                warn(f"non-finite {bad} (NaN or infinity) {where}; the update was undone (--on-nan skip)")
                return self.global_step, True
            where = f"in {MAX_SKIPPED_IN_ROW} updates in a row up to step {self.global_step} (--on-nan skip)"
        raise Diverged(
            f"non-finite {bad} (NaN or infinity) {where}; training stopped, its last checkpoint is one written before"
        )

    def _is_best(self, result: EvalResult) -> bool:
        """Whether `result` is the run's best evaluation so far (its checkpoint is then kept)."""
        if self.best is not None and result.mean_return <= self.best["mean_return"]:
            return False
        self.best = {"step": self.global_step, "mean_return": result.mean_return}
        return True

    def _time_metrics(self, session_seconds: float) -> dict[str, float]:
        seconds = self.loop.seconds
        return {
            "time/elapsed": self.elapsed + session_seconds,
            "time/env": seconds["env"],
            "time/inference": seconds["inference"],
            "time/update": seconds["update"],
            "time/eval": self.eval_seconds,
        }

    def _evaluate(self, logger: MetricLogger, start: float) -> EvalResult:
        t0 = time.perf_counter()
        training_seconds = self.elapsed + (t0 - start) - self.eval_seconds  # evaluation excluded
        cfg = self.cfg
        deterministic, epsilon = evaluation_protocol(cfg.algo, cfg.env_id, cfg.eval_deterministic, cfg.eval_epsilon)
        result = evaluate(self.agent, cfg.env_id, cfg.eval_episodes, self.seeds.eval, deterministic, epsilon=epsilon)
        self.eval_seconds += time.perf_counter() - t0
        metrics = {**result.metrics(), "time/elapsed": self.elapsed + time.perf_counter() - start}
        threshold = self.cfg.solved_threshold
        if self.solved is None and threshold is not None and result.mean_return >= threshold:
            self.solved = (self.global_step, training_seconds)
            metrics["eval/solved_step"], metrics["time/solved_seconds"] = self.solved
        logger.log(self.global_step, metrics)
        return result

    def _record_video(self, run_dir: Path, logger: MetricLogger) -> None:
        """One evaluation episode (played as evaluations are: `evaluation_protocol`) as
        RUN_DIR/videos/eval_step_N.mp4, also sent to TensorBoard and wandb; its time counts as
        evaluation time. Where it cannot be recorded, a one-line warning and no more videos."""
        t0 = time.perf_counter()
        cfg = self.cfg
        path = run_dir / "videos" / f"eval_step_{self.global_step}.mp4"
        deterministic, epsilon = evaluation_protocol(cfg.algo, cfg.env_id, cfg.eval_deterministic, cfg.eval_epsilon)
        try:
            evaluate(self.agent, cfg.env_id, 1, self.seeds.eval, deterministic, 1, video=path, epsilon=epsilon)
        except RenderError as exc:  # its message says what to install or set, in full
            warn(f"no video: {exc}; recording stops")
            self.cfg.eval_video_every = 0
            return
        except (envs.EnvError, ValueError, gym.error.Error) as exc:
            warn(f"no video of {self.cfg.env_id}: {' '.join(str(exc).split())[:200]}; recording stops")
            self.cfg.eval_video_every = 0
            return
        if path.exists():
            logger.log_video(self.global_step, "eval/video", path)
        else:
            warn(f"{self.cfg.env_id} recorded no video (does it render rgb_array frames?)")
        self.eval_seconds += time.perf_counter() - t0

    def _make_logger(self, run_dir: Path, wandb_id: str | None) -> MetricLogger:
        if not self.is_main:
            return MetricLogger([])  # DDP: rank 0 alone logs
        sinks: list[Any] = [JsonlSink(run_dir, self.resumed_from), TensorBoardSink(run_dir, self.resumed_from)]
        if "wandb" in self.cfg.loggers():
            cfg = self.cfg
            options = {
                "project": cfg.wandb_project,
                "entity": cfg.wandb_entity,
                "group": cfg.wandb_group,
                "tags": list(cfg.wandb_tags) or None,
            }
            name = f"{cfg.algo}-{cfg.env_id}-s{cfg.seed}"
            sink = WandbSink(run_dir, run_config(cfg, self.algo_cfg), name, wandb_id, options)
            update_status(run_dir, wandb_id=sink.id)
            sinks.append(sink)
        return MetricLogger(sinks)

    # ----------------------------------------------------------- checkpoints
    def checkpoint_payload(self, session_seconds: float) -> dict[str, Any]:
        env_state = None  # Ray workers' envs are not saved: a run resumes with any number of workers
        try:
            if self.env is not None:
                env_state = self.env.state_dict()
        except (TypeError, AttributeError, pickle.PicklingError) as exc:
            if not self.warned_unpicklable:  # once a run, not at every checkpoint
                warn(f"{self.cfg.env_id} cannot be pickled ({exc}); a resumed run will restart its episodes")
                self.warned_unpicklable = True
        return {
            "config": run_config(self.cfg, self.algo_cfg),
            "global_step": self.global_step,
            "elapsed": self.elapsed + session_seconds,
            "eval_seconds": self.eval_seconds,
            "skipped_updates": self.skipped_updates,
            "solved": self.solved,
            "agent": self.agent.state_dict(),
            "loop": self.loop.state_dict(with_buffer=self.cfg.save_buffer),
            "env": env_state,
            "torch_rng": torch.get_rng_state(),
        }

    def _save(self, run_dir: Path, start: float) -> Path | None:
        # DDP: every rank's env and rollout state gathered into rank 0's payload; rank 0 alone writes
        payload = distributed.gather_payload(self.checkpoint_payload(time.perf_counter() - start))
        if payload is None:
            return None
        path = ckpt.checkpoint_path(run_dir, self.global_step)
        ckpt.save_checkpoint(path, payload)  # durable (fsync) before older checkpoints go
        fields: dict[str, Any] = {"global_step": self.global_step, "checkpoint": path.name}
        if self.best is not None and self.best["step"] == self.global_step:
            self.best["checkpoint"] = path.name
            fields["best_checkpoint"] = self.best
        update_status(run_dir, **fields)
        keep = {self.best["checkpoint"]} if self.best is not None and "checkpoint" in self.best else set()
        ckpt.prune(run_dir, self.cfg.keep_checkpoints, keep)
        return path

    def _restore(self, payload: dict[str, Any]) -> None:
        # written by any number of DDP ranks: this rank's share, or none when the count differs
        payload = distributed.shard_payload(payload, self.env_shard[1], self.env_shard[0])
        self.agent.load_state_dict(payload["agent"])
        self.global_step = self.resumed_from = int(payload["global_step"])
        self.elapsed = float(payload["elapsed"])
        self.eval_seconds = float(payload["eval_seconds"])
        self.skipped_updates = int(payload.get("skipped_updates", 0))  # (absent before --on-nan skip)
        self.solved = None if payload["solved"] is None else tuple(payload["solved"])
        torch.set_rng_state(payload["torch_rng"])
        had_buffer = payload["loop"] is not None and self.loop.load_state_dict(payload["loop"])
        if isinstance(self.loop, OffPolicyLoop) and not had_buffer:
            warn("the checkpoint holds no replay buffer (train with --save-buffer to keep it); it refills from now on")
        if payload["env"] is None or self.env is None:
            if self.is_main and self.env is not None and not payload["config"]["train"].get("num_workers"):
                reason = payload.get("no_env_reason", "the checkpoint holds no env state")
                warn(f"{reason}; episodes restart from a reset")
            self.loop.reset(seed=self.env_seed + self.global_step)
            scaler = getattr(self.agent, "reward_scaler", None)
            if scaler is not None:  # the episodes restart, and so do their running discounted returns
                scaler.returns.zero_()
            if isinstance(self.loop, OffPolicyLoop):
                self.loop.buffer.mark_episode_break()
        else:
            self.env.load_state_dict(payload["env"])
