"""`drl tune`: search spaces name real options, and a small study through the real `drl` (pruning,
the preset it writes, continuing from its storage, bad input, optuna missing)."""

from __future__ import annotations

import json
import subprocess
import sys

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
