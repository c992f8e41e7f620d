"""Dict observations and MultiDiscrete actions through the real `drl`, end to end."""

from __future__ import annotations

import json

import pytest

from conftest import run_drl

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("env_id", "random_return"),
    [
        ("toy_envs:DictTarget-v0", 2.0),  # an image, a vector and a Discrete key; act on the Discrete one
        ("toy_envs:MultiDiscreteTarget-v0", 3.33),  # two action components, 0.5 per match
    ],
)
def test_ppo_trains_and_evaluates(env_id, random_return, tmp_path):
    run_dir = tmp_path / "run"
    train = run_drl(
        "train", "ppo", env_id, "--num-envs", "4", "--n-steps", "128", "--batch-size", "128",
        "--total-steps", "12288", "--run-dir", str(run_dir), "--eval-episodes", "0", cwd=tmp_path,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    result = run_drl("eval", str(run_dir), "--episodes", "20", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    mean = json.loads(result.stdout)["mean_return"]
    assert mean >= 6.0 > random_return, mean  # best 8: each of the 8 steps matched
