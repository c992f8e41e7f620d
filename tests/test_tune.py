"""`drl tune`: search spaces name real options, and a small study through the real `drl` (pruning,
the preset it writes, continuing from its storage, bad input, optuna missing)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents import get_algorithm
from runners.cliargs import leaves, set_values
from runners.config import TrainConfig
from runners.tune import MetricsFollower
from runners.tune_spaces import SPACES

from conftest import drl_env, run_drl

optuna = pytest.importorskip("optuna")

# A study of tiny CartPole trials: 3072 steps, an evaluation every 512, pruning from the first
# completed trial on and from the first evaluation. The flags after `--` fix the rollout and the
# epochs of every trial (fast trials); the other sampled values (learning rate, discounting,
# network, ...) still differ, and with seed 0 trials 1 and 2 evaluate below trial 0 and are pruned.
SMALL_STUDY = [
    "--steps", "3072", "--eval-every", "512",
    "--startup-trials", "1", "--pruner-startup", "1", "--pruner-warmup", "0",
]  # fmt: skip
SMALL_TRIALS = ["--", "--n-steps", "32", "--n-epochs", "2", "--eval-episodes", "2", "--num-envs", "4"]


def trial_lines(stdout: str) -> list[str]:
    """The trials `drl tune` printed a line for, in order."""
    return [line.split(":")[0] for line in stdout.splitlines() if line.startswith("trial ")]


@pytest.mark.parametrize("algo", sorted(SPACES))
def test_search_spaces_set_options_that_exist(algo):
    spec = get_algorithm(algo)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    for _ in range(20):
        trial = study.ask()
        options = SPACES[algo](trial)
        train, agent = TrainConfig(algo=algo), spec.config_cls()
        known = {**leaves(train), **leaves(agent)}
        assert set(options) <= set(known), set(options) - set(known)
        set_values([train, agent], options, "search space")  # typed parsing, as from a preset file
        agent.validate()  # a sampled value that cannot work would stop a study (exit 2 from drl train)
        study.tell(trial, 0.0)


def test_metrics_follower_reads_whole_lines_only(tmp_path):
    path = tmp_path / "metrics.jsonl"
    follower = MetricsFollower(path)
    assert follower.evaluations() == []  # no file yet
    path.write_text(json.dumps({"step": 100, "charts/sps": 1.0}) + "\n" + '{"step": 200, "eval/mean_return": 9')
    assert follower.evaluations() == []
    with open(path, "a") as file:
        file.write('.5}\n{"step": 300, "eval/mean_return": 12.0}\n')
    assert follower.evaluations() == [(200, 9.5), (300, 12.0)]
    assert follower.evaluations() == []


def test_small_study_prunes_writes_a_preset_and_continues(tmp_path):
    study_dir = tmp_path / "study"
    first = run_drl(
        "tune", "ppo", "CartPole-v1", "--trials", "3", *SMALL_STUDY, "--study-dir", "study", *SMALL_TRIALS, cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr + first.stdout
    assert "0 of 3 trials done, 3 to run" in first.stderr
    assert trial_lines(first.stdout) == ["trial 0", "trial 1", "trial 2"]
    assert (study_dir / "best_preset.yaml").is_file()
    assert (study_dir / "optimization_history.png").stat().st_size > 0

    # Continue: the same study in its default storage, two more trials, numbered on.
    second = run_drl(
        "tune", "ppo", "CartPole-v1", "--trials", "5", *SMALL_STUDY, "--study-dir", "study", *SMALL_TRIALS, cwd=tmp_path
    )
    assert second.returncode == 0, second.stderr + second.stdout
    assert "3 of 5 trials done, 2 to run" in second.stderr
    assert trial_lines(second.stdout) == ["trial 3", "trial 4"]
    study = optuna.load_study(study_name="ppo_CartPole-v1", storage=f"sqlite:///{study_dir / 'study.db'}")
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3, 4]

    # A real prune: the pruner stopped the trial's process (SIGTERM), which checkpointed and ended
    # as an interrupted run before its budget, after reporting its evaluations.
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [(t.number, t.state, t.intermediate_values) for t in study.trials]
    for trial in pruned:
        status = json.loads((study_dir / f"trial_{trial.number}" / "run.json").read_text())
        assert status["status"] == "interrupted" and status["global_step"] < 3072, status
        assert trial.intermediate_values

    # Every trial is an ordinary run: `drl runs` lists them from the study directory.
    runs = run_drl("runs", "study", "--json", cwd=tmp_path)
    assert runs.returncode == 0, runs.stderr
    assert len(json.loads(runs.stdout)) == 5

    # The preset holds the best trial's values, and `drl train --preset FILE` takes it.
    preset = (study_dir / "best_preset.yaml").read_text()
    best = study.best_trial
    assert f"best trial {best.number} " in preset and "n_steps: 32" in preset
    trained = run_drl(
        "train", "ppo", "CartPole-v1", "--preset", "study/best_preset.yaml", "--total-steps", "128",
        "--eval-episodes", "1", "--run-dir", "from_preset", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    config = (tmp_path / "from_preset" / "config.yaml").read_text()
    assert "preset: study/best_preset.yaml" in config and "num_envs: 4" in config
    assert "param_importances.png" in second.stdout or "no parameter importances" in second.stdout


def test_bad_train_flags_stop_the_study_with_one_line(tmp_path):
    result = run_drl(
        "tune", "ppo", "CartPole-v1", "--trials", "4", "--study-dir", "s", "--", "--no-such-flag", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("drl: error: trial 0 ") and "--no-such-flag" in last, result.stderr
    assert "trial 1:" not in result.stdout  # stopped after the first


def test_without_optuna_one_line_and_exit_2(tmp_path):
    code = (
        "import sys; sys.modules['optuna'] = None; from runners.cli import main; "
        "sys.exit(main(['tune', 'ppo', 'CartPole-v1', '--trials', '1']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=drl_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr == "drl: error: drl tune needs optuna: pip install 'drl[tune]'\n"
    assert not (tmp_path / "runs").exists()


def test_trials_run_on_a_ray_cluster_and_their_runs_come_back(tmp_path, ray_cluster):
    pytest.importorskip("ray")
    study_dir = tmp_path / "study"
    result = run_drl(
        "tune", "ppo", "CartPole-v1", "--trials", "3", "--jobs", "2", "--ray-address", ray_cluster,
        *SMALL_STUDY, "--study-dir", "study", *SMALL_TRIALS, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith("trial ")]
    assert sorted(line.split(":")[0] for line in lines) == ["trial 0", "trial 1", "trial 2"], result.stdout
    study = optuna.load_study(study_name="ppo_CartPole-v1", storage=f"sqlite:///{study_dir / 'study.db'}")
    nodes = {t.user_attrs["node"] for t in study.trials}  # the cluster's one node (Ray may name another address)
    assert len(nodes) == 1 and all(line.endswith(f"; on Ray node {min(nodes)}") for line in lines), lines
    # Each trial wrote into a directory of its Ray node; it came back whole into the study directory.
    for trial in study.trials:
        run_dir = study_dir / f"trial_{trial.number}"
        status = json.loads((run_dir / "run.json").read_text())
        assert status["status"] in ("finished", "solved", "interrupted"), status
        assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.jsonl").stat().st_size > 0
        assert (study_dir / "logs" / f"trial_{trial.number}.log").is_file()
    runs = run_drl("runs", "study", "--json", cwd=tmp_path)
    assert runs.returncode == 0 and len(json.loads(runs.stdout)) == 3, runs.stderr
    assert (study_dir / "best_preset.yaml").is_file()


def test_a_cluster_too_small_for_the_jobs_is_refused_in_one_line(tmp_path, ray_cluster):
    pytest.importorskip("ray")
    result = run_drl(
        "tune", "ppo", "CartPole-v1", "--trials", "3", "--jobs", "3", "--trial-cpus", "2", "--ray-address",
        ray_cluster, "--study-dir", "study", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "drl: error: the Ray cluster has 4 CPUs and --jobs 3 trials of --trial-cpus 2 need 6; "
        "ask for fewer or add machines"
    ), result.stderr


def trial_pids(token: str) -> list[int]:
    """The running `drl train` processes whose command line holds `token`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"runners.cli" in command and token.encode() in command:
            pids.append(int(proc.name))
    return pids


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; trials die with their parent on Linux only")
@pytest.mark.parametrize("on_ray", [False, True], ids=["local", "ray"])
def test_a_killed_tuner_leaves_no_trial_running(tmp_path, request, on_ray):
    """SIGKILL to the tuner (no chance to stop its trials): its trial processes die with it."""
    steps = str(900_000 + secrets.randbelow(99_999))  # marks this test's trials among the machine's processes
    ray = ["--ray-address", request.getfixturevalue("ray_cluster")] if on_ray else []
    command = [shutil.which("drl"), "tune", "ppo", "CartPole-v1", "--trials", "2", "--steps", steps, *ray]
    tuner = subprocess.Popen(command, cwd=tmp_path, env=drl_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not trial_pids(steps):
            assert tuner.poll() is None, tuner.stderr.read().decode()
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.2)
    finally:
        tuner.kill()
        tuner.wait()
    deadline = time.monotonic() + 30
    while trial_pids(steps) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not trial_pids(steps)


def test_two_tuners_on_one_storage_run_the_trials_asked_for(tmp_path):
    """Two tuners (two machines, say) share a study: together they run --trials trials, not more."""
    command = [shutil.which("drl"), "tune", "ppo", "CartPole-v1", "--trials", "3", *SMALL_STUDY]
    command += ["--study-dir", "study", "--pruner-startup", "9", *SMALL_TRIALS]  # fmt: skip
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    tuners = [subprocess.Popen(command, cwd=tmp_path, env=drl_env(), **pipes) for _ in range(2)]
    outputs = [tuner.communicate(timeout=300) for tuner in tuners]
    assert [tuner.returncode for tuner in tuners] == [0, 0], outputs
    ran = sorted(line.split(":")[0] for out, _ in outputs for line in out.splitlines() if line.startswith("trial "))
    assert len(ran) == 3, outputs
    study = optuna.load_study(study_name="ppo_CartPole-v1", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    counted = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(f"trial {t.number}" for t in counted) == ran
    assert all(t.user_attrs.get("surplus") for t in study.trials if t not in counted)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_trial_whose_ray_actor_dies_fails_in_one_line_and_the_study_goes_on(tmp_path, ray_cluster):
    pytest.importorskip("ray")
    steps = str(900_000 + secrets.randbelow(99_999))  # marks this test's trials among the machine's processes
    command = [shutil.which("drl"), "tune", "ppo", "CartPole-v1", "--trials", "2", "--steps", steps]
    command += ["--eval-every", "512", "--ray-address", ray_cluster, "--study-dir", "study"]
    command += ["--", "--n-steps", "32", "--num-envs", "4", "--eval-episodes", "1"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    tuner = subprocess.Popen(command, cwd=tmp_path, env=drl_env(), **pipes)
    try:
        deadline = time.monotonic() + 90
        while not (pids := trial_pids(steps)):
            assert tuner.poll() is None and time.monotonic() < deadline, "no trial started"
            time.sleep(0.2)
        actor = int(Path(f"/proc/{pids[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its parent
        os.kill(actor, signal.SIGKILL)  # the trial's Ray actor (its node, as far as the tuner can tell)
        deadline = time.monotonic() + 60
        while len(trial_pids(steps)) < 1 or trial_pids(steps) == pids:  # the next trial started
            assert tuner.poll() is None and time.monotonic() < deadline, "no second trial"
            time.sleep(0.2)
    finally:
        tuner.kill()
        out, err = tuner.communicate()
    lost = [line for line in out.splitlines() if line.startswith("trial 0:")]
    assert lost and "failed: lost the trial on Ray node" in lost[0], out + err
    log = (tmp_path / "study" / "logs" / "trial_0.log").read_text()
    assert log.startswith("drl: error: lost the trial on Ray node") and len(log.splitlines()) == 1
