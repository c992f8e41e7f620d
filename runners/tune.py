"""`drl tune`: search an algorithm's hyperparameters on an env with Optuna.

    drl tune ALGO ENV_ID --trials N [--jobs J] [--storage sqlite:///FILE] [--timeout S]
             [--ray-address auto|HOST:PORT [--trial-cpus C]] [-- TRAIN_FLAGS ...]

Design. A study is a directory (default runs/tune/ALGO_ENV) and an Optuna study in a storage
(default STUDY_DIR/study.db, SQLite, so every study can be continued). Each trial is an
ordinary `drl train` process with its own run directory, STUDY_DIR/trial_K (so `drl runs` and
`drl plot` work on the study directory; its output goes to STUDY_DIR/logs/trial_K.log): the
env's preset applies as usual, then the tuner's run options (steps, evaluation interval, seed,
one torch thread), the values the sampler drew from the algorithm's search space
(runners/tune_spaces.py, rl-baselines3-zoo's), and last the flags given after `--`, so a flag
there fixes a value for every trial (the sampler still draws it, to no effect, and it is left
out of the trial's reported values).

- Sampling is TPE (random for the first --startup-trials trials), seeded by --seed; pruning is
  Optuna's median pruner on the trial's evaluations. The tuner follows RUN_DIR/metrics.jsonl
  while the trial trains and reports each `eval/mean_return` at its step rounded down to a
  multiple of --eval-every (trials with other rollout lengths evaluate at other exact steps;
  the median pruner compares trials at equal steps). A trial the pruner stops gets SIGTERM:
  `drl train` checkpoints and exits 130, and the trial is marked pruned.
- The objective is the trial's last evaluation, as in the zoo. A trial that reaches the
  preset's solved_threshold stops there (--stop-when-solved, on by default where the preset
  names a threshold) and counts as holding that value to the end of its budget: its value is
  reported at the remaining evaluation steps too, so later trials are compared against it.
- --jobs J runs J trials at once: J threads, each driving one `drl train` process. A trial whose
  process fails is recorded as failed with its one-line error and the study goes on; one that
  fails on bad input (exit 2, e.g. a wrong flag after `--`) also stops the study, since every
  trial would. A trial's process dies with the tuner (Linux: it gets SIGKILL when its parent
  dies), so a killed tuner leaves nothing running.
- With --ray-address the trials run on a Ray cluster: each trial is a `TrialHost` actor holding
  --trial-cpus CPUs of whichever node Ray places it on, which runs the same `drl train` process
  there in a directory of the node and relays its evaluations and the tuner's signals; when the
  trial ends, its run directory and log are copied back into STUDY_DIR (in chunks through Ray's
  object store), so the study directory is the same as without Ray. Files named in the flags
  after `--` must exist at the same path on every node.
- Running the command again continues the study: it runs the trials still missing to N
  (completed, pruned and failed trials count; trials stopped by Ctrl-C do not). Several tuners
  may share one storage (on several machines): before a trial starts, the trials ahead of it in
  the storage are counted, running ones included, and a tuner that finds N stops. A running
  trial whose tuner died (no heartbeat for STALE_SECONDS) is marked failed by the next tuner to
  start a trial, does not count, and is run again.
- At the end: the best trial's values as a preset file (STUDY_DIR/best_preset.yaml, for
  `drl train ALGO ENV --preset FILE`) and the optimisation history and parameter importances
  as PNG files.

Ctrl-C (or SIGTERM) stops the running trials (each checkpoints) and exits 130; a second one
kills them at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from agents import ConfigError, get_algorithm
from agents.presets import load_preset
from envs import EnvError, first_line
from runners.cliargs import ArgumentParser, int_at_least, leaves
from runners.run_dir import CONFIG_FILE, METRICS_FILE, read_status
from runners.trainer import configs_from
from runners.tune_spaces import SPACES

if TYPE_CHECKING:
    import optuna

EVAL_KEY = "eval/mean_return"
PRESET_FILE = "best_preset.yaml"
HISTORY_PLOT = "optimization_history.png"
IMPORTANCE_PLOT = "param_importances.png"
NOT_PRESET = {"run_dir", "seed", "preset", "progress", "logger", "device", "torch_threads", "eval_video_every"}
"""Options of a trial that describe the run, not the hyperparameters: never written to the preset."""
POLL_SECONDS = 0.1
CHUNK_BYTES = 16 << 20
"""A Ray trial's run directory comes back in pieces of this size."""
RAY_CALL_SECONDS = 120.0
"""A call to a trial's Ray actor that takes longer than this counts as the trial lost."""
HEARTBEAT_SECONDS = 10
STALE_SECONDS = 60
"""A running trial whose last heartbeat is older than this is failed by the next tuner to ask."""
LOST_EXIT_CODE = -1
"""The exit code of a trial whose process was lost with its Ray node."""


def cmd_tune(args: list[str]) -> int:
    """`drl tune ALGO ENV_ID --trials N ...`; see the module docstring."""
    own, passthrough = _split(args)
    namespace = _parser().parse_args(own)
    spec = get_algorithm(namespace.algo)
    if spec.name not in SPACES:
        raise ConfigError(f"drl tune has no search space for {spec.name}; it has: {', '.join(sorted(SPACES))}")
    try:
        import optuna
    except ImportError:
        raise ConfigError("drl tune needs optuna: pip install 'drl[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    tuner = Tuner.from_args(namespace, spec.name, passthrough)
    study = tuner.open_study(optuna)
    done = tuner.finished_trials(study)
    todo = max(0, namespace.trials - done)
    print(
        f"drl: study {study.study_name} in {tuner.study_dir}: {done} of {namespace.trials} trials done, "
        f"{todo} to run ({tuner.jobs} at a time, {tuner.steps} steps each, evaluated every {tuner.eval_every})",
        file=sys.stderr,
        flush=True,
    )
    if todo and not tuner.run(study, todo):
        print(
            "\ndrl: tune interrupted; the running trials were stopped; run the same command again to continue",
            file=sys.stderr,
        )
        return 130
    if tuner.bad_input is not None:
        raise ConfigError(tuner.bad_input)
    if tuner.full.is_set():
        tuner.wait_for_others(study)
    return tuner.report(study)


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    """The tuner's own arguments and the `drl train` flags after `--`."""
    if "--" in args:
        at = args.index("--")
        return args[:at], args[at + 1 :]
    return args, []


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {raw}")
    return value


def _parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="drl tune",
        description="Search hyperparameters with Optuna (TPE, median pruning); each trial is a drl train run "
        "in STUDY_DIR/trial_K. Flags after -- go to every trial's drl train, after the sampled ones.",
    )
    parser.add_argument("algo", metavar="ALGO", help="algorithm: " + ", ".join(sorted(SPACES)))
    parser.add_argument("env_id", metavar="ENV_ID", help="Gymnasium env id")
    parser.add_argument(
        "--trials", type=int_at_least(1), required=True, help="trials in the study in total (finished ones count)"
    )
    parser.add_argument("--jobs", type=int_at_least(1), default=1, help="trials run at once (default: 1)")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///STUDY_DIR/study.db)")
    parser.add_argument("--study-name", help="study name in the storage (default: ALGO_ENV)")
    parser.add_argument("--study-dir", type=Path, help="directory of the trials' runs (default: runs/tune/ALGO_ENV)")
    parser.add_argument(
        "--timeout", type=_positive_float, metavar="S", help="start no new trial after S seconds (default: none)"
    )
    parser.add_argument("--steps", type=int_at_least(1), help="env steps per trial (default: the preset's)")
    parser.add_argument(
        "--eval-every", type=int_at_least(1), help="env steps between a trial's evaluations (default: steps / 10)"
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="run the trials on the Ray cluster at ADDRESS (auto or HOST:PORT), each on a node with "
        "--trial-cpus free CPUs; the trials' run directories come back to STUDY_DIR when they end",
    )
    parser.add_argument(
        "--trial-cpus", type=_positive_float, default=1.0, help="CPUs a trial holds on the Ray cluster (default: 1)"
    )
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of every trial and of the sampler")
    parser.add_argument(
        "--startup-trials", type=int_at_least(0), default=5, help="random trials before TPE (default: 5)"
    )
    parser.add_argument(
        "--pruner-startup",
        type=int_at_least(0),
        default=2,
        help="completed trials before any trial is pruned (default: 2)",
    )
    parser.add_argument(
        "--pruner-warmup",
        type=int_at_least(0),
        help="evaluations of a trial before it may be pruned (default: a third of them, as the zoo)",
    )
    parser.add_argument(
        "--stop-when-solved",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="end a trial at its first evaluation reaching the preset's solved_threshold "
        "(default: on where the preset names one)",
    )
    return parser


def _flags(options: dict[str, Any]) -> list[str]:
    """`drl train` flags setting `options`."""
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(str, value)]
        else:
            flags.append(f"{flag}={value!r}" if isinstance(value, float) else f"{flag}={value}")
    return flags


def _option_names(flags: list[str]) -> set[str]:
    """The option names that `drl train` flags set (`--no-x` sets x)."""
    names = set()
    for flag in flags:
        if flag.startswith("--") and len(flag) > 2:
            name = flag[2:].split("=", 1)[0].replace("-", "_")
            names.add(name[3:] if name.startswith("no_") else name)
    return names


def _short(options: dict[str, Any]) -> str:
    """Options as `name=value ...`, numbers to 4 significant digits."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        return str(value)

    return " ".join(f"{name}={fmt(value)}" for name, value in options.items())


def _first_error_line(log: Path) -> str:
    """The `drl: error:` line of a trial's output, else its last line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    errors = [line for line in lines if line.startswith("drl: error:")]
    line = (errors or lines or ["no output"])[-1]
    return line.removeprefix("drl: error:").strip()[:300]


@dataclass
class Outcome:
    """How one trial ended: state is complete, pruned, failed or interrupted."""

    state: str
    value: float | None = None
    step: int | None = None
    error: str = ""
    exit_code: int | None = None


@dataclass
class Tuner:
    """One invocation of `drl tune`: the study's settings, its running trials and its stop flag."""

    algo: str
    env_id: str
    study_dir: Path
    storage: str
    study_name: str
    steps: int
    eval_every: int
    seed: int
    jobs: int
    timeout: float | None
    startup_trials: int
    pruner_startup: int
    pruner_warmup: int
    stop_when_solved: bool
    solved_threshold: float | None
    preset: dict[str, Any]
    passthrough: list[str]
    trials: int
    ray_address: str | None
    trial_cpus: float
    stop: threading.Event = field(default_factory=threading.Event)
    full: threading.Event = field(default_factory=threading.Event)
    """Set when the storage holds --trials trials, some run by other tuners."""
    processes: dict[int, TrialProcess] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    bad_input: str | None = None

    @classmethod
    def from_args(cls, ns: argparse.Namespace, algo: str, passthrough: list[str]) -> Tuner:
        pre = ArgumentParser(add_help=False)  # the preset the trials get, as `drl train` picks it
        pre.add_argument("--preset")
        pre.add_argument("--backend")
        pre.add_argument("--solved-threshold")
        known, _ = pre.parse_known_args(passthrough)
        _, preset = load_preset(algo, ns.env_id, known.preset, known.backend)
        threshold = known.solved_threshold if known.solved_threshold is not None else preset.get("solved_threshold")
        try:
            threshold = None if threshold in (None, "none") else float(threshold)
        except ValueError:
            raise ConfigError(f"--solved-threshold {threshold} is not a number") from None
        steps = ns.steps or int(preset.get("total_steps", 1_000_000))
        eval_every = ns.eval_every or max(1, steps // 10)
        evaluations = max(1, steps // eval_every)
        env = ns.env_id.replace("/", "-").replace(":", "-")
        study_dir = ns.study_dir or Path("runs") / "tune" / f"{algo}_{env}"
        stop_when_solved = ns.stop_when_solved
        if stop_when_solved is None:
            stop_when_solved = threshold is not None
        return cls(
            algo=algo,
            env_id=ns.env_id,
            study_dir=study_dir,
            storage=ns.storage or f"sqlite:///{study_dir.resolve() / 'study.db'}",
            study_name=ns.study_name or f"{algo}_{env}",
            steps=steps,
            eval_every=eval_every,
            seed=ns.seed,
            jobs=ns.jobs,
            timeout=ns.timeout,
            startup_trials=ns.startup_trials,
            pruner_startup=ns.pruner_startup,
            pruner_warmup=evaluations // 3 if ns.pruner_warmup is None else ns.pruner_warmup,
            stop_when_solved=stop_when_solved and threshold is not None,
            solved_threshold=threshold,
            preset=preset,
            passthrough=passthrough,
            trials=ns.trials,
            ray_address=ns.ray_address,
            trial_cpus=ns.trial_cpus,
        )

    # ------------------------------------------------------------------ study
    def open_study(self, optuna: Any) -> optuna.Study:
        """The study in the storage, created or continued. The sampler's seed moves on with the
        number of trials already there, so a continued study does not draw the same values again."""
        if self.storage == f"sqlite:///{self.study_dir.resolve() / 'study.db'}":
            self.make_study_dir()  # the default storage lives in it (otherwise it is made once the storage opened)
        for attempt in range(2):
            try:
                # Heartbeats: a trial whose tuner died (SIGKILL, a lost machine) stops counting as
                # running STALE_SECONDS after its last one, and the next tuner on the storage runs it again.
                storage = optuna.storages.RDBStorage(
                    self.storage, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=STALE_SECONDS
                )
                existing = len(optuna.load_study(study_name=self.study_name, storage=storage).trials)
                break
            except KeyError:  # no such study yet
                existing = 0
                break
            except Exception as exc:  # a malformed URL, an unreachable database: SQLAlchemy's many errors
                if attempt == 0:  # or another tuner creating the same new database's tables: they exist now
                    time.sleep(1.0)
                    continue
                error = " ".join(str(exc).split())[:200]
                raise ConfigError(f"cannot open storage {self.storage}: {error}") from None
        sampler = optuna.samplers.TPESampler(
            n_startup_trials=self.startup_trials, seed=self.seed + existing, multivariate=True
        )
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=self.pruner_startup, n_warmup_steps=self.pruner_warmup * self.eval_every
        )
        study = optuna.create_study(
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            study_name=self.study_name,
            direction="maximize",
            load_if_exists=True,
        )
        self.make_study_dir()
        return study

    def make_study_dir(self) -> None:
        try:
            self.study_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create study directory {self.study_dir}: {exc.strerror or exc}") from None

    @staticmethod
    def counts(trial: optuna.trial.FrozenTrial, running: bool = False) -> bool:
        """Whether a trial counts towards --trials: completed, pruned, or failed by its own error (not
        interrupted, not surplus, not left by a tuner that died); with `running`, running ones too."""
        from optuna.trial import TrialState

        if trial.state == TrialState.FAIL:
            return "error" in trial.user_attrs and not trial.user_attrs.get("interrupted")
        return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
            running and trial.state == TrialState.RUNNING
        )

    def finished_trials(self, study: optuna.Study) -> int:
        """Trials that count towards --trials and have ended."""
        return sum(1 for t in study.get_trials(deepcopy=False) if self.counts(t))

    # ------------------------------------------------------------------ running
    def run(self, study: optuna.Study, todo: int) -> bool:
        """Run `todo` trials, `jobs` at a time; False when interrupted by a signal."""
        tickets = iter(range(todo))
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        started = []
        timed_out = threading.Event()

        def worker() -> None:
            while not (self.stop.is_set() or self.full.is_set()):
                with self.lock:
                    if deadline is not None and time.monotonic() > deadline:
                        timed_out.set()
                        return
                    if next(tickets, None) is None:
                        return
                    started.append(1)
                if not self.run_trial(study):
                    return

        interrupted = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            if interrupted.is_set():  # a second signal: kill the trials at once
                self.signal_trials(signal.SIGKILL)
                raise KeyboardInterrupt
            interrupted.set()
            self.stop.set()
            self.signal_trials(signal.SIGTERM)

        owns_ray = self.connect_ray()
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            threads = [threading.Thread(target=worker, name=f"drl-tune-{i}", daemon=True) for i in range(self.jobs)]
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=POLL_SECONDS)  # wakes up for signals
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if owns_ray:
                import ray

                ray.shutdown()
        if timed_out.is_set() and not self.stop.is_set():
            print(f"drl: --timeout {self.timeout:g} s passed: started {len(started)} of {todo} trials", file=sys.stderr)
        return not interrupted.is_set()

    def wait_for_others(self, study: optuna.Study) -> None:
        """Until the trials other tuners are running have ended (or gone stale), so that the report
        covers the whole study."""
        import optuna
        from optuna.trial import TrialState

        announced = False
        while True:
            optuna.storages.fail_stale_trials(study)
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running:
                return
            if not announced:
                numbers = ", ".join(str(t.number) for t in running)
                print(f"drl: waiting for trials {numbers}, run by other tuners", file=sys.stderr, flush=True)
                announced = True
            time.sleep(1.0)

    def connect_ray(self) -> bool:
        """With --ray-address: join the cluster (one line when it cannot, or has too few CPUs for
        --jobs trials at once); whether this call joined it."""
        if self.ray_address is None:
            return False
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("drl tune --ray-address needs Ray: pip install 'drl[distributed]'") from None
        from runners.ray_workers import connect

        cpus = math.ceil(self.jobs * self.trial_cpus)
        try:
            return connect(self.ray_address, cpus, f"--jobs {self.jobs} trials of --trial-cpus {self.trial_cpus:g}")
        except EnvError as exc:
            raise ConfigError(str(exc)) from None

    def signal_trials(self, sig: signal.Signals) -> None:
        with self.lock:
            processes = list(self.processes.values())
        for process in processes:
            if sig == signal.SIGKILL:
                process.kill()  # the trial and any env worker processes it started
            else:
                process.send_signal(sig)  # drl train checkpoints, stops its workers, exits 130

    def run_trial(self, study: optuna.Study) -> bool:
        """Ask for a trial, train it as a `drl train` process, tell the study how it ended; False
        when the study already has --trials trials (other tuners on the same storage ran them)."""
        import optuna
        from optuna.trial import TrialState

        optuna.storages.fail_stale_trials(study)  # running trials of tuners that died
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage")  # we beat ourselves, below
            trial = study.ask()
        self.heartbeat(trial)
        ahead = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
        if sum(self.counts(t, running=True) for t in ahead) >= self.trials:
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            with self.lock:
                if not self.full.is_set():
                    print(f"drl: the study has its {self.trials} trials (other tuners ran some)", file=sys.stderr)
                    self.full.set()
            return False
        sampled = SPACES[self.algo](trial)
        fixed = _option_names(self.passthrough)  # given after `--`: those win over the sampled values
        options = {name: value for name, value in sampled.items() if name not in fixed}
        trial.set_user_attr("options", options)
        run_dir = self.study_dir / f"trial_{trial.number}"
        start = time.monotonic()
        try:
            outcome = self.train(trial, options, run_dir)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        seconds = time.monotonic() - start
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("seconds", round(seconds, 1))
        head = f"trial {trial.number}:"
        if outcome.state == "complete":
            study.tell(trial, outcome.value)
            line = f"{head} {outcome.value:.2f} at step {outcome.step} ({seconds:.0f} s)"
        elif outcome.state == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
            line = f"{head} pruned at step {outcome.step}, eval {outcome.value:.2f} ({seconds:.0f} s)"
        else:
            trial.set_user_attr("error", outcome.error)
            if outcome.state == "interrupted":
                trial.set_user_attr("interrupted", True)
            study.tell(trial, state=TrialState.FAIL)
            line = f"{head} {outcome.state}: {outcome.error}"
            if outcome.exit_code == 2 and outcome.state == "failed":  # bad input: every trial would fail
                self.bad_input = self.bad_input or f"trial {trial.number} ({run_dir}): {outcome.error}"
                self.stop.set()
        node = trial.user_attrs.get("node")
        with self.lock:
            print(f"{line}; {_short(options)}" + (f"; on Ray node {node}" if node else ""), flush=True)
        return True

    @staticmethod
    def heartbeat(trial: optuna.Trial) -> float:
        """Tell the storage the trial is alive (every HEARTBEAT_SECONDS while it runs); when."""
        trial.study._storage.record_heartbeat(trial._trial_id)
        return time.monotonic()

    def train_args(self, options: dict[str, Any], run_dir: Path) -> list[str]:
        """The trial's `drl train` arguments (after `python -m runners.cli`)."""
        args = ["train", self.algo, self.env_id, "--run-dir", str(run_dir), "--seed", str(self.seed)]
        args += ["--total-steps", str(self.steps), "--eval-every", str(self.eval_every), "--no-progress"]
        # One torch thread per trial: small networks gain little from more, and two threads on a
        # busy core (another trial, another job) made a CartPole run 25x slower here.
        args += ["--torch-threads", "1"]
        if self.stop_when_solved:
            args.append("--stop-when-solved")
        return args + _flags(options) + self.passthrough

    def launch(self, options: dict[str, Any], run_dir: Path, log: Path) -> TrialProcess:
        """Start the trial's process: here, or on the Ray cluster (where it writes to a directory of
        its node, brought back into run_dir when it ends)."""
        if self.ray_address is None:
            return LocalTrial(self.train_args(options, run_dir), run_dir, log)
        return RayTrial(lambda node_dir: self.train_args(options, node_dir), run_dir, log, self.trial_cpus)

    def train(self, trial: optuna.Trial, options: dict[str, Any], run_dir: Path) -> Outcome:
        """Run the trial's process, reporting its evaluations and pruning it when the pruner says so."""
        log_dir = self.study_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        log = log_dir / f"trial_{trial.number}.log"
        process = self.launch(options, run_dir, log)
        with self.lock:
            self.processes[trial.number] = process
        if process.node:
            trial.set_user_attr("node", process.node)
        reported: set[int] = set()
        value = step = exit_code = None
        pruned = False
        beat = time.monotonic()
        try:
            while True:
                exit_code, evaluations = process.poll()
                for row_step, row_value in evaluations:
                    value, step = row_value, row_step
                    bucket = (row_step // self.eval_every) * self.eval_every
                    if bucket in reported:
                        continue
                    reported.add(bucket)
                    trial.report(row_value, bucket)
                    solved = self.stop_when_solved and row_value >= self.solved_threshold  # ending by itself
                    final = row_step >= self.steps  # the trial is ending by itself: nothing left to save
                    ending = pruned or solved or final or self.stop.is_set()
                    if exit_code is None and not ending and trial.should_prune():
                        pruned = True
                        process.send_signal(signal.SIGTERM)  # drl train checkpoints and exits 130
                if exit_code is not None:
                    break
                if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                    beat = self.heartbeat(trial)
                time.sleep(POLL_SECONDS)
        finally:
            if exit_code is None:  # the tuner itself failed: leave no trial behind
                process.kill()
            process.finish()  # a Ray trial's run directory and log come back
            with self.lock:
                self.processes.pop(trial.number, None)
        status = read_status(run_dir).get("status")
        if pruned and status == "interrupted":
            return Outcome("pruned", value, step, exit_code=exit_code)
        if pruned and status in ("finished", "solved"):
            exit_code = 0  # it ended before the signal came (which may have met the process on its way out)
        if exit_code == 130 and self.stop.is_set():
            return Outcome("interrupted", value, step, error="stopped by Ctrl-C", exit_code=exit_code)
        if exit_code != 0:
            return Outcome("failed", value, step, error=process.error or _first_error_line(log), exit_code=exit_code)
        if value is None:
            return Outcome("failed", error=f"no {EVAL_KEY} in {run_dir / METRICS_FILE}", exit_code=exit_code)
        if status == "solved":
            # Stopped early because it solved the env: it holds that value to the end of its
            # budget, so that the median pruner compares later evaluations of others against it.
            for bucket in range(max(reported, default=0) + self.eval_every, self.steps + 1, self.eval_every):
                trial.report(value, bucket)
        return Outcome("complete", value, step, exit_code=exit_code)

    # ------------------------------------------------------------------ results
    def report(self, study: optuna.Study) -> int:
        """Print the best trial, write its preset and the study's plots."""
        from optuna.trial import TrialState

        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if "error" in t.user_attrs]
        print(f"study {study.study_name}: {len(complete)} complete, {len(pruned)} pruned, {len(failed)} failed")
        if not complete:
            print("drl: no trial completed: no best trial, no preset", file=sys.stderr)
            return 1
        best = study.best_trial
        options = best.user_attrs.get("options", {})
        print(f"best trial {best.number}: {best.value:.2f}; {_short(options)}")
        preset_path = self.write_preset(best)
        print(f"preset {preset_path} (drl train {self.algo} {self.env_id} --preset {preset_path})")
        for line in self.write_plots(study, len(complete)):
            print(line)
        return 0

    def write_preset(self, best: optuna.trial.FrozenTrial) -> Path:
        """The best trial's values as one flat mapping, the form `drl train --preset FILE` reads: the
        env's preset, the trial budget, the sampled values and the values of the flags after `--`."""
        values: dict[str, Any] = {**self.preset, "total_steps": self.steps, **best.user_attrs.get("options", {})}
        fixed = _option_names(self.passthrough) - NOT_PRESET
        if fixed:
            resolved = _resolved_options(Path(best.user_attrs.get("run_dir", "")))
            values.update({name: resolved[name] for name in sorted(fixed) if name in resolved})
        header = (
            f"# drl tune {self.algo} {self.env_id}: best trial {best.number} of study {self.study_name} "
            f"({best.user_attrs.get('run_dir', '')}), last evaluation {best.value:.2f}\n"
            f"# use with: drl train {self.algo} {self.env_id} --preset FILE; or add it under `{self.env_id}:` "
            f"in agents/presets/{self.algo}.yaml\n"
        )
        path = self.study_dir / PRESET_FILE
        path.write_text(header + yaml.safe_dump(_plain(values), sort_keys=False))
        return path

    def write_plots(self, study: optuna.Study, complete: int) -> list[str]:
        """The optimisation history and parameter importances as PNG files; a line for each."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

        lines = []
        for name, plot in ((HISTORY_PLOT, plot_optimization_history), (IMPORTANCE_PLOT, plot_param_importances)):
            path = self.study_dir / name
            if plot is plot_param_importances and complete < 2:
                lines.append(f"no parameter importances: they need 2 completed trials, the study has {complete}")
                continue
            try:
                axes = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                lines.append(f"no {name.removesuffix('.png').replace('_', ' ')}: {' '.join(str(exc).split())[:200]}")
                continue
            figure = axes.figure
            figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(figure)
            lines.append(f"plot {path}")
        return lines


class TrialProcess(Protocol):
    """A trial's running `drl train` process, here or on a Ray node."""

    node: str
    """Where it runs: the Ray node's address, or "" for this machine."""
    error: str
    """Why the process was lost, when it ended without its own say (a Ray node gone); else ""."""

    def poll(self) -> tuple[int | None, list[tuple[int, float]]]:
        """Its exit code (None while it runs) and the evaluations it logged since the last call."""
        ...

    def send_signal(self, sig: signal.Signals) -> None: ...

    def kill(self) -> None:
        """SIGKILL to the trial and to every process it started."""
        ...

    def finish(self) -> None:
        """After it ended: its run directory and log are in place on this machine."""
        ...


class LocalTrial:
    """A trial as a child process of the tuner, writing its run directory and log in place."""

    node = ""
    error = ""

    def __init__(self, args: list[str], run_dir: Path, log: Path) -> None:
        self.process = _start_train(args, log)
        self.follower = MetricsFollower(run_dir / METRICS_FILE)

    def poll(self) -> tuple[int | None, list[tuple[int, float]]]:
        exit_code = self.process.poll()  # first: a process that has ended has written all its rows
        return exit_code, self.follower.evaluations()

    def send_signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def finish(self) -> None:
        pass


def _start_train(args: list[str], log: Path) -> subprocess.Popen:
    """`python -m runners.cli ARGS` with its output in `log`, in a session of its own (a terminal's
    Ctrl-C reaches the tuner only, which stops the trial once). On Linux the process gets SIGKILL
    when the one starting it dies (a Ray actor killed with its driver leaves no trial running)."""
    command = [sys.executable, "-m", "runners.cli", *args]
    if sys.platform == "linux":
        command = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]
    with open(log, "w") as out:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


_DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the parent died before prctl
    sys.exit(137)
os.execv(sys.argv[2], sys.argv[2:])
"""


class TrialHost:
    """A Ray actor running one trial's `drl train` process on its node, in a directory of its own
    (RUN_DIR `run` and the log `log`); `pack` and `chunk` send both back when the trial ends."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="drl-trial-"))
        self.trial: LocalTrial | None = None

    def where(self) -> tuple[str, str]:
        """The node's address and the directory to put the trial's run directory in."""
        import ray

        return ray.util.get_node_ip_address(), str(self.dir / "run")

    def start(self, args: list[str]) -> None:
        self.trial = LocalTrial(args, self.dir / "run", self.dir / "log")

    def poll(self) -> tuple[int | None, list[tuple[int, float]]]:
        return self.trial.poll()

    def send_signal(self, sig: int) -> None:
        self.trial.send_signal(sig)

    def kill(self) -> None:
        self.trial.kill()

    def pack(self) -> int:
        """The run directory and log as one tar file (uncompressed: checkpoints barely compress); its size."""
        with tarfile.open(self.dir / "trial.tar", "w") as tar:
            for name in ("run", "log"):
                if (self.dir / name).exists():
                    tar.add(self.dir / name, arcname=name)
        return (self.dir / "trial.tar").stat().st_size

    def chunk(self, offset: int) -> bytes:
        with open(self.dir / "trial.tar", "rb") as file:
            file.seek(offset)
            return file.read(CHUNK_BYTES)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class RayTrial:
    """A trial on the Ray cluster: a `TrialHost` actor holding `cpus` CPUs of some node runs it there;
    when it ends, its run directory and log are copied back to `run_dir` and `log`."""

    def __init__(self, build_args: Callable[[Path], list[str]], run_dir: Path, log: Path, cpus: float) -> None:
        import ray

        self.ray, self.run_dir, self.log = ray, run_dir, log
        self.error = ""
        self.actor = ray.remote(num_cpus=cpus, max_restarts=0)(TrialHost).remote()
        try:
            self.node, node_run_dir = ray.get(self.actor.where.remote())
            ray.get(self.actor.start.remote(build_args(Path(node_run_dir))))
        except BaseException:
            ray.kill(self.actor)
            raise

    def _call(self, method: str, *args: Any, timeout: float = RAY_CALL_SECONDS) -> Any:
        """One call to the actor; a lost actor (its node gone) sets `error` and raises ConnectionError."""
        try:
            return self.ray.get(getattr(self.actor, method).remote(*args), timeout=timeout)
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.GetTimeoutError) as exc:
            self.error = (
                self.error or f"lost the trial on Ray node {self.node}: {type(exc).__name__}: {first_line(exc)}"
            )
            raise ConnectionError(self.error) from None

    def poll(self) -> tuple[int | None, list[tuple[int, float]]]:
        try:
            return self._call("poll")
        except ConnectionError:
            return LOST_EXIT_CODE, []

    def send_signal(self, sig: signal.Signals) -> None:
        self.actor.send_signal.remote(int(sig))  # not waiting: it may be a signal handler's call

    def kill(self) -> None:
        with contextlib.suppress(ConnectionError):
            self._call("kill")

    def finish(self) -> None:
        """Copy the run directory and log back (in chunks through Ray's object store), then end the actor."""
        try:
            size = self._call("pack")
            with tempfile.TemporaryDirectory(dir=self.run_dir.parent, prefix=".incoming-") as staging:
                tar_path = Path(staging) / "trial.tar"
                with open(tar_path, "wb") as file:
                    while file.tell() < size:
                        file.write(self._call("chunk", file.tell()))
                with tarfile.open(tar_path) as tar:
                    tar.extractall(staging, filter="data")
                run, log = Path(staging) / "run", Path(staging) / "log"
                if run.exists() and self.run_dir.exists():  # (not expected: a trial number is new)
                    shutil.copytree(run, self.run_dir, dirs_exist_ok=True)
                elif run.exists():
                    run.rename(self.run_dir)  # the same file system: nothing copied again
                if log.exists():
                    log.replace(self.log)
        except ConnectionError:
            self.log.write_text(f"drl: error: {self.error}\n")
        finally:
            with contextlib.suppress(ConnectionError):
                self._call("close")
            self.ray.kill(self.actor)


class MetricsFollower:
    """Reads the evaluations a running trial appends to its metrics.jsonl, whole lines only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def evaluations(self) -> list[tuple[int, float]]:
        """(step, eval/mean_return) of the evaluations logged since the last call."""
        try:
            with open(self.path, "rb") as file:
                file.seek(self.offset)
                data = file.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.offset += end
        found = []
        for line in data[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if EVAL_KEY in row and math.isfinite(row[EVAL_KEY]):
                found.append((int(row["step"]), float(row[EVAL_KEY])))
        return found


def _resolved_options(run_dir: Path) -> dict[str, Any]:
    """Every option of a run, flat, as its config.yaml resolved them (empty if unreadable)."""
    try:
        train, agent = configs_from(yaml.safe_load((run_dir / CONFIG_FILE).read_text()))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, ConfigError):
        return {}
    return {name: getattr(leaf.owner, name) for cfg in (train, agent) for name, leaf in leaves(cfg).items()}


def _plain(value: Any) -> Any:
    """YAML-safe: tuples as lists, recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
