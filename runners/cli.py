"""`drl`: train, resume and evaluate agents from the command line.

    drl train ALGO ENV_ID [--total-steps N] [--num-envs N] [--seed S] [--preset NAME|FILE] [--<option> V ...]
    drl train --resume RUN_DIR [--total-steps N]
    drl eval RUN_DIR_OR_CHECKPOINT [--episodes N] [--stochastic|--deterministic] [--epsilon E] [--seed S] [--json]
    drl runs [DIR ...] [--json]
    drl plot RUN_DIR ... [--x steps|time] [--metric KEY] [--out FILE.png|.svg]
    drl dashboard [DIR] [--port P]
    drl export RUN_DIR [--format onnx|pt2|torchscript] [--out FILE]
    drl tune ALGO ENV_ID --trials N [--jobs J] [--storage sqlite:///FILE] [--timeout S]
    drl compare ALGO ENV_ID [--seeds S ...] [--steps N]

Mistakes in the input (an unknown algorithm or env, a value that cannot work, a missing
or corrupt checkpoint) end with one line on stderr naming the problem and exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

import envs
from agents import ALGORITHMS, ConfigError, get_algorithm
from agents.presets import available_presets, load_preset
from envs import first_line
from envs.render import choose_headless_gl
from runners import distributed
from runners.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from runners.cliargs import ArgumentParser, add_arguments, apply_namespace, int_at_least, set_values
from runners.config import TrainConfig
from runners.evaluate import evaluate, evaluation_protocol
from runners.guard import Diverged
from runners.off_policy import OffPolicyLoop
from runners.precision import freeze_startup_objects, set_process_options
from runners.run_dir import CONFIG_FILE, check_run_dir_free, create_run_dir, lock_run_dir, read_status
from runners.seeding import derive_seeds
from runners.signals import Aborted, Interrupted, StopRequest
from runners.trainer import Trainer, configs_from, load_trained

USER_ERRORS = (ConfigError, envs.EnvError, CheckpointError)
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
"""A full disk, an exhausted quota, a read-only filesystem, a file-size limit: one line, exit 1."""


def _algorithms() -> str:
    return "\n".join(
        f"  {name:<6} {spec.summary}; presets: {', '.join(available_presets(name)) or 'none'}"
        for name, spec in sorted(ALGORITHMS.items())
    )


USAGE = f"""usage: drl COMMAND ...

commands:
  train ALGO ENV_ID [options]   train an agent (`drl train ALGO ENV_ID --help` lists every option)
  train --resume RUN_DIR        continue a run from its last checkpoint
  eval RUN_DIR_OR_CHECKPOINT    play whole episodes with a trained agent and report returns
  runs [DIR ...]                a table of the runs under DIR (default: runs)
  plot RUN_DIR ...              learning curves: mean and 95% bootstrap band across seeds
  dashboard [DIR]               TensorBoard on the runs under DIR (default: runs)
  export RUN_DIR                the deterministic policy as one ONNX (or .pt2, TorchScript) file
  tune ALGO ENV_ID --trials N   search hyperparameters with Optuna; the best become a preset
  compare ALGO ENV_ID           train with drl and with Stable-Baselines3 side by side

algorithms:
{_algorithms()}
"""


def main(argv: list[str] | None = None) -> int:
    choose_headless_gl()  # MuJoCo videos on a machine without a display: EGL or OSMesa (envs/render.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"drl {version('drl')}")
        return 0
    commands: dict[str, Callable[[list[str]], int]] = {
        "train": cmd_train,
        "eval": cmd_eval,
        "runs": cmd_runs,
        "plot": cmd_plot,
        "dashboard": cmd_dashboard,
        "export": cmd_export,
        "tune": cmd_tune,
        "compare": cmd_compare,
    }
    command = commands.get(argv[0])
    if command is None:
        print(f"drl: error: unknown command {argv[0]!r}; choose one of: {', '.join(commands)}", file=sys.stderr)
        return 2
    try:
        return command(argv[1:])
    except USER_ERRORS as exc:
        print(f"drl: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except envs.EnvFailure as exc:  # before training began (the first reset) or in `drl eval`
        _report_env_failure(exc, "")
        return 1
    except (Aborted, KeyboardInterrupt):  # a second SIGINT/SIGTERM: files on disk are whole (atomic writes)
        print("\ndrl: aborted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        print(f"drl: error: cannot write {exc.filename or 'a file'}: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        distributed.teardown()  # a DDP worker leaves its process group (nothing otherwise)


# --------------------------------------------------------------------------- train
def cmd_train(args: list[str]) -> int:
    if any(a == "--resume" or a.startswith("--resume=") for a in args):
        return _resume(args)
    if not args or args[0].startswith("-"):
        if args and args[0] in ("-h", "--help"):
            print(
                f"usage: drl train ALGO ENV_ID [options]\n       drl train --resume RUN_DIR\n\nalgorithms:\n"
                f"{_algorithms()}"
            )
            return 0
        raise ConfigError(
            f"missing ALGO and ENV_ID: use drl train ALGO ENV_ID [options]; algorithms: {', '.join(sorted(ALGORITHMS))}"
        )
    spec = get_algorithm(args[0])
    if len(args) < 2 or args[1].startswith("-"):
        raise ConfigError(f"missing ENV_ID: use drl train {spec.name} ENV_ID [options], e.g. CartPole-v1")
    env_id, rest = args[1], args[2:]

    pre = ArgumentParser(add_help=False)
    pre.add_argument("--preset")
    pre.add_argument("--backend")
    known, _ = pre.parse_known_args(rest)
    train_cfg, algo_cfg = TrainConfig(algo=spec.name, env_id=env_id), spec.config_cls()
    preset, values = load_preset(spec.name, env_id, known.preset, known.backend)
    set_values([train_cfg, algo_cfg], values, f"preset {preset}")

    description = f"Train {spec.summary} ({spec.name}) on {env_id}. " + (
        f"Defaults below include preset {preset}." if preset else "No preset applies: defaults are the algorithm's."
    )
    parser = ArgumentParser(prog=f"drl train {spec.name} {env_id}", description=description)
    add_arguments(parser, train_cfg, "run options", skip=("algo", "env_id"))
    add_arguments(parser, algo_cfg, f"{spec.name} options")
    namespace = parser.parse_args(rest)
    apply_namespace(train_cfg, namespace)
    apply_namespace(algo_cfg, namespace)
    train_cfg.preset = preset

    run_dir = Path(train_cfg.run_dir or _default_run_dir(train_cfg))
    check_run_dir_free(run_dir)  # fail before any work if the directory holds another run
    if distributed.should_launch(train_cfg.nproc):  # DDP: this command again, as nproc torchrun workers
        train_cfg.validate()
        algo_cfg.validate()
        distributed.check_supported(spec.kind, spec.name, train_cfg.nproc)  # before any process starts
        create_run_dir(run_dir)  # (launch locks it for the workers)
        return distributed.launch(
            train_cfg.nproc, ["train", *args, "--run-dir", str(run_dir)], train_cfg.torch_device(), run_dir
        )
    set_process_options(train_cfg)  # this process's own settings, before torch starts its threads
    _join_process_group(train_cfg)
    with StopRequest().install() as stop:
        try:
            with stop.interruptible():  # making envs (and Ray workers) may take long
                trainer = Trainer(train_cfg, algo_cfg)
        except Interrupted as exc:
            print(f"\ndrl: {exc}: stopped before training began; nothing was written", file=sys.stderr)
            return 130
        if trainer.is_main:  # DDP: rank 0 alone writes the run directory
            train_cfg.run_dir = str(create_run_dir(run_dir))
            lock_run_dir(run_dir)
        return _train(trainer, run_dir, None, stop)


def _join_process_group(cfg: TrainConfig) -> None:
    """In a torchrun worker (DDP): the run has as many processes as the group, which it joins."""
    if distributed.is_worker():
        cfg.nproc = int(os.environ["WORLD_SIZE"])
        cfg.validate()
        distributed.init_from_env(cfg.torch_device())


def _default_run_dir(cfg: TrainConfig) -> str:
    env = cfg.env_id.replace("/", "-").replace(":", "-")
    return f"runs/{cfg.algo}_{env}_s{cfg.seed}_{time.strftime('%Y%m%d-%H%M%S')}"


def _resume(args: list[str]) -> int:
    parser = ArgumentParser(prog="drl train --resume", description="Continue a run from its last checkpoint.")
    parser.add_argument("--resume", required=True, metavar="RUN_DIR", help="run directory to continue")
    parser.add_argument("--total-steps", type=int_at_least(1), help="new step budget (to train for longer)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")
    parser.add_argument(
        "--nproc", type=int_at_least(1), help="training processes from now on (DDP; default: the run's)"
    )
    parser.add_argument(
        "--num-workers",
        type=int_at_least(0),
        help="Ray rollout workers from now on (each with the run's envs per worker; 0: none)",
    )
    parser.add_argument(
        "--envs-per-worker", type=int_at_least(1), help="envs of each Ray worker from now on (sets --num-envs)"
    )
    parser.add_argument("--ray-address", help="Ray cluster to join (auto or HOST:PORT)")
    namespace = parser.parse_args(args)
    run_dir = Path(namespace.resume)
    if not run_dir.is_dir():
        raise CheckpointError(f"no run directory at {run_dir}")
    if not distributed.is_worker():  # DDP: the launcher holds the lock for its workers
        lock_run_dir(run_dir)  # one writer per run directory
    payload: dict[str, Any] | None = None
    if list_checkpoints(run_dir):
        payload = load_checkpoint(run_dir)  # the newest that loads (damaged ones are skipped, with a warning)
        config, step = payload.get("config"), payload.get("global_step")
    else:  # killed before its first checkpoint: the run starts again from its saved config
        config, step = _saved_config(run_dir), 0
    try:
        train_cfg, algo_cfg = configs_from(config)  # type: ignore[arg-type]
        step = int(step)  # type: ignore[arg-type]
    except (KeyError, TypeError) as exc:
        where = f"checkpoint {payload['path']}" if payload else f"{run_dir / CONFIG_FILE}"
        raise CheckpointError(f"{where} lacks {exc}; it is not a drl training run") from None
    if namespace.total_steps is not None:
        train_cfg.total_steps = namespace.total_steps
    if namespace.progress is not None:
        train_cfg.progress = namespace.progress
    if namespace.nproc is not None:
        train_cfg.nproc = namespace.nproc
    if namespace.num_workers is not None and namespace.num_workers != train_cfg.num_workers:
        if train_cfg.num_workers and namespace.num_workers and train_cfg.envs_per_worker is None:
            train_cfg.envs_per_worker = train_cfg.num_envs // train_cfg.num_workers  # keep each worker's share
        train_cfg.num_workers = namespace.num_workers
    if namespace.envs_per_worker is not None:
        train_cfg.envs_per_worker = namespace.envs_per_worker
    if namespace.ray_address is not None:
        train_cfg.ray_address = namespace.ray_address
    if step >= train_cfg.total_steps:  # a scheduler that relaunches a finished job sees success
        print(
            f"drl: run {run_dir} already finished ({step} of {train_cfg.total_steps} steps); nothing to do "
            "(pass a larger --total-steps to train longer)",
            file=sys.stderr,
        )
        return 0
    if distributed.should_launch(train_cfg.nproc):  # DDP: this command again, as nproc torchrun workers
        train_cfg.validate()
        return distributed.launch(train_cfg.nproc, ["train", *args], train_cfg.torch_device(), run_dir)
    set_process_options(train_cfg)
    _join_process_group(train_cfg)
    with StopRequest().install() as stop:
        try:
            with stop.interruptible():  # making envs (and Ray workers) may take long
                trainer = Trainer(train_cfg, algo_cfg, resume=payload)
        except Interrupted as exc:
            print(f"\ndrl: {exc}: stopped before training resumed; {run_dir} is as it was", file=sys.stderr)
            return 130
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            if isinstance(exc, USER_ERRORS) or payload is None:
                raise
            reason = " ".join(str(exc).split())[:200]
            raise CheckpointError(f"checkpoint {payload['path']} does not fit its config ({reason})") from None
        if trainer.is_main:
            if payload is None:
                trainer.resumed_from = 0  # what the killed attempt logged goes
                print(f"drl: {run_dir} has no checkpoint yet; starting it again from its config", file=sys.stderr)
            else:
                print(f"drl: resuming {run_dir} from step {step} ({payload['path']})", file=sys.stderr)
        return _train(trainer, run_dir, read_status(run_dir).get("wandb_id"), stop)


def _report_env_failure(exc: envs.EnvFailure, advice: str) -> None:
    """The env's own traceback (the user's code, theirs to debug), then our one line."""
    if exc.env_traceback:
        print(f"the env's traceback:\n{exc.env_traceback.rstrip()}", file=sys.stderr)
    at = f" at step {exc.step}" if getattr(exc, "step", None) is not None else ""
    print(f"drl: error: {exc}{at}{advice}", file=sys.stderr)


def _last_checkpoint(run_dir: Path) -> str:
    found = list_checkpoints(run_dir)
    return f"the last checkpoint, {found[-1]}, is intact" if found else "no checkpoint was written yet"


def _saved_config(run_dir: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir} has no checkpoint and no {CONFIG_FILE}: it is not a drl run") from None
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} cannot be read ({first_line(exc)})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{run_dir / CONFIG_FILE} is not a drl run config")
    return config


def _train(trainer: Trainer, run_dir: Path, wandb_id: str | None, stop: StopRequest) -> int:
    cfg = trainer.cfg
    freeze_startup_objects()  # (this process's own garbage collector)
    if trainer.is_main:  # DDP: rank 0 alone reports
        processes = f", {trainer.world_size} processes" if trainer.world_size > 1 else ""
        print(
            f"drl: training {cfg.algo} on {cfg.env_id} for {cfg.total_steps} steps "
            f"({cfg.num_envs} envs, {cfg.backend} backend, {trainer.device}{processes}); run dir {run_dir}",
            file=sys.stderr,
        )
        if isinstance(trainer.loop, OffPolicyLoop):
            print(f"drl: replay buffer of {trainer.loop.buffer.describe()}", file=sys.stderr)
    resume = f"drl train --resume {run_dir}"
    try:
        result = trainer.run(run_dir, wandb_id=wandb_id, stop=stop)
    except Diverged as exc:
        print(f"drl: error: {exc} ({_last_checkpoint(run_dir)})", file=sys.stderr)
        return 1
    except envs.EnvFailure as exc:
        _report_env_failure(exc, f"; {_last_checkpoint(run_dir)}; continue with: {resume}")
        return 1
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        where = exc.filename or "a file of the run"
        print(f"drl: error: cannot write {where}: {exc.strerror}; {_last_checkpoint(run_dir)}", file=sys.stderr)
        return 1
    if result.status == "interrupted":
        if trainer.is_main:
            print(
                f"drl: stopped at step {result.global_step}; checkpoint {result.checkpoint}; continue with: {resume}",
                file=sys.stderr,
            )
        return 130
    sps = result.global_step / result.seconds
    summary = f"trained {result.global_step} steps in {result.seconds:.1f} s ({sps:,.0f} steps/s)"
    if result.final_eval is not None:
        ev = result.final_eval
        summary += f"; eval return {ev.mean_return:.2f} +- {ev.std_return:.2f} over {len(ev.returns)} episodes"
    if result.solved is not None:
        steps, seconds = result.solved
        summary += f"; solved (eval >= {cfg.solved_threshold:g}) at step {steps} after {seconds:.2f} s of training"
    if trainer.is_main:
        print(f"{summary}; run dir {run_dir}")
    return 0


# ---------------------------------------------------------------------------- eval
def cmd_eval(args: list[str]) -> int:
    parser = ArgumentParser(prog="drl eval", description="Play whole episodes with a trained agent on a fresh env.")
    parser.add_argument(
        "path", metavar="RUN_DIR_OR_CHECKPOINT", help="a run directory (its latest checkpoint) or a checkpoint file"
    )
    parser.add_argument("--episodes", type=int_at_least(1), default=10, help="episodes to play (default: 10)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--stochastic", dest="deterministic", action="store_false", default=None, help="sample the policy's actions"
    )
    mode.add_argument(
        "--deterministic",
        dest="deterministic",
        action="store_true",
        default=None,
        help="take the most likely action (default: the run's --eval-deterministic, else the protocol's: "
        "sampled for policy-gradient agents on Atari, deterministic otherwise)",
    )
    parser.add_argument(
        "--epsilon",
        type=_probability,
        default=None,
        metavar="E",
        help="probability of a uniformly random action at each step (default: the run's --eval-epsilon, else the "
        "protocol's: 0.001 for value-based agents on Atari, 0 otherwise)",
    )
    parser.add_argument(
        "--seed",
        type=int_at_least(0),
        default=None,
        help="seed of the eval envs (default: the run's eval seed, as in training)",
    )
    parser.add_argument("--num-envs", type=int_at_least(1), default=None, help="parallel eval envs (default: up to 8)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--video",
        nargs="?",
        const="",
        default=None,
        metavar="FILE.mp4",
        help="record the first episode of eval env 0 as an MP4 (default file: RUN_DIR/videos/eval_step_N.mp4)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        metavar="FILE",
        help="play this file written by `drl export` (.onnx through onnxruntime, .pt2 through torch.export, "
        "else TorchScript) instead of "
        "the checkpoint's agent, on the run's env (deterministic)",
    )
    namespace = parser.parse_args(args)
    if namespace.video and not namespace.video.endswith(".mp4"):
        raise ConfigError(f"--video {namespace.video} must end in .mp4")

    trained = load_trained(namespace.path, namespace.device)
    payload, train_cfg, agent = trained.payload, trained.train_cfg, trained.agent
    if namespace.policy is not None:  # an exported file plays instead of the checkpoint's agent
        from runners.export import ExportedPolicy

        if namespace.deterministic is False:
            raise ConfigError("--policy plays an exported file, which is the deterministic policy; drop --stochastic")
        agent = ExportedPolicy(namespace.policy, trained.observation_space, trained.action_space)

    seed = derive_seeds(train_cfg.seed).eval if namespace.seed is None else namespace.seed
    deterministic, epsilon = evaluation_protocol(
        train_cfg.algo,
        train_cfg.env_id,
        train_cfg.eval_deterministic if namespace.deterministic is None else namespace.deterministic,
        train_cfg.eval_epsilon if namespace.epsilon is None else namespace.epsilon,
    )
    deterministic = deterministic or namespace.policy is not None
    video = None
    if namespace.video is not None:
        default = trained.run_dir / "videos" / f"eval_step_{payload['global_step']}.mp4"
        video = Path(namespace.video) if namespace.video else default
    episodes, num_envs = namespace.episodes, namespace.num_envs
    result = evaluate(agent, train_cfg.env_id, episodes, seed, deterministic, num_envs, video=video, epsilon=epsilon)
    report = {
        "mean_return": result.mean_return,
        "std_return": result.std_return,
        "episodes": len(result.returns),
        "returns": result.returns,
        "lengths": result.lengths,
        "env_id": train_cfg.env_id,
        "algo": train_cfg.algo,
        "checkpoint": payload["path"],
        "global_step": payload.get("global_step"),
        "deterministic": deterministic,
        "epsilon": epsilon,
        "truncated_episodes": result.truncated,
        "seed": seed,
    }
    if namespace.policy is not None:
        report["policy"] = str(namespace.policy)
    if video is not None:
        report["video"] = str(video)
    if namespace.json:
        print(json.dumps(report))
    else:
        print(
            f"{train_cfg.algo} on {train_cfg.env_id} at step {report['global_step']}: mean return "
            f"{result.mean_return:.2f} +- {result.std_return:.2f} over {len(result.returns)} episodes "
            f"({'deterministic' if deterministic else 'stochastic'} policy"
            + (f", epsilon {epsilon:g}" if epsilon else "")
            + (f", exported file {namespace.policy}" if namespace.policy is not None else "")
            + f", seed {seed})"
            + f"; {result.truncated} truncated by the time limit"
            + (f"; video {video}" if video is not None else "")
        )
    return 0


def _probability(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {raw}")
    return value


# ------------------------------------------------------------------- runs, plot, dashboard
def cmd_runs(args: list[str]) -> int:
    from runners.reports import find_runs, format_table, summarize, to_json

    parser = ArgumentParser(prog="drl runs", description="A table of training runs.")
    parser.add_argument("dirs", nargs="*", type=Path, default=[Path("runs")], help="run directories or their parents")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    namespace = parser.parse_args(args)
    summaries = [summarize(run) for run in find_runs(namespace.dirs)]
    if not summaries:
        raise ConfigError(f"no run directory (with a run.json) under {', '.join(map(str, namespace.dirs))}")
    print(to_json(summaries) if namespace.json else format_table(summaries))
    return 0


def cmd_plot(args: list[str]) -> int:
    from runners.reports import EVAL_KEY, find_runs, plot_runs

    parser = ArgumentParser(prog="drl plot", description="Learning curves of runs grouped by algorithm and env.")
    parser.add_argument("dirs", nargs="+", type=Path, help="run directories or their parents")
    parser.add_argument("--x", choices=("steps", "time"), default="steps", help="x-axis: env steps or seconds")
    parser.add_argument("--metric", default=EVAL_KEY, help=f"the metric to plot (default: {EVAL_KEY})")
    parser.add_argument("--out", type=Path, default=Path("curves.png"), help="output file, .png or .svg")
    namespace = parser.parse_args(args)
    if namespace.out.suffix.lower() not in (".png", ".svg"):
        raise ConfigError(f"--out {namespace.out} must end in .png or .svg")
    runs = find_runs(namespace.dirs)
    if not runs:
        raise ConfigError(f"no run directory (with a run.json) under {', '.join(map(str, namespace.dirs))}")
    counts = plot_runs(runs, namespace.out, namespace.x, namespace.metric)
    groups = ", ".join(f"{label}: {n}" for label, n in counts.items())
    print(f"wrote {namespace.out} ({groups})")
    return 0


def cmd_dashboard(args: list[str]) -> int:
    import os
    import shutil

    parser = ArgumentParser(prog="drl dashboard", description="TensorBoard on a runs directory.")
    parser.add_argument("dir", nargs="?", type=Path, default=Path("runs"), help="runs directory (default: runs)")
    parser.add_argument("--port", type=int, default=6006, help="port to serve on (default: 6006)")
    parser.add_argument("--host", default="localhost", help="interface to serve on (default: localhost)")
    namespace = parser.parse_args(args)
    if not namespace.dir.is_dir():
        raise ConfigError(f"runs directory {namespace.dir} does not exist")
    tensorboard = shutil.which("tensorboard")
    command = [tensorboard] if tensorboard else [sys.executable, "-m", "tensorboard.main"]
    command += ["--logdir", str(namespace.dir), "--port", str(namespace.port), "--host", namespace.host]
    print(f"drl: TensorBoard on {namespace.dir} at http://{namespace.host}:{namespace.port}/", flush=True)
    os.execv(command[0], command)  # this process becomes TensorBoard: signals reach it directly


def cmd_export(args: list[str]) -> int:
    from runners.export import cmd_export as run

    return run(args)


def cmd_tune(args: list[str]) -> int:
    from runners.tune import cmd_tune as run

    return run(args)


def cmd_compare(args: list[str]) -> int:
    from runners.compare import cmd_compare as run

    return run(args)


if __name__ == "__main__":
    if distributed.is_worker():  # DDP: torchrun starts its workers as `python -m runners.cli`
        distributed.run_worker(main)
    sys.exit(main())
