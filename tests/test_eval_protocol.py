"""The evaluation protocol: epsilon-random actions, the defaults per algorithm and env, the
Atari frame cap and the count of truncated episodes, the CLI flags, and the off-screen
OpenGL backend chosen for MuJoCo videos on a machine without a display."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from envs import render
from runners.cliargs import add_arguments, apply_namespace
from runners.config import TrainConfig
from runners.evaluate import ATARI_VALUE_BASED_EPSILON, evaluate, evaluation_protocol, random_actions

from conftest import run_drl
from toy_envs import CountdownEnv


class ActionLogEnv(gym.Env):
    """Discrete(4) actions, each appended to the class's `log`; 50 steps per episode."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(4)
    log: list[int] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        ActionLogEnv.log.append(int(action))
        self.t += 1
        return np.zeros(2, np.float32), 0.0, self.t >= 50, False, {}


class RenderFailsEnv(CountdownEnv):
    """Countdown whose frames cannot be rendered: MuJoCo's error on a machine without OpenGL."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode=None):
        super().__init__()
        self.render_mode = render_mode

    def render(self):
        mujoco = pytest.importorskip("mujoco")
        raise mujoco.FatalError("an OpenGL platform library has not been loaded into this process")


for env_id, entry_point, kwargs, limit in (
    ("drl_eval_test/ActionLog-v0", ActionLogEnv, {}, None),
    ("drl_eval_test/Endless-v0", CountdownEnv, {"length": 10**6}, 5),  # always truncated at 5 steps
    ("drl_eval_test/RenderFails-v0", RenderFailsEnv, {}, 100),
):
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=entry_point, kwargs=kwargs, max_episode_steps=limit)


class ConstantAgent:
    """Always action 0 (feed-forward: `predict`; recurrent: `act`, counting the steps its state advanced)."""

    def __init__(self, recurrent: bool = False):
        self.device = torch.device("cpu")
        self.recurrent = recurrent
        self.calls = 0

    def predict(self, obs, deterministic=True, generator=None):
        self.calls += 1
        return torch.zeros(obs.shape[0], dtype=torch.long)

    def initial_state(self, n):
        return torch.zeros(n, 1)

    def act(self, obs, deterministic, generator, state=None, starts=None):
        self.calls += 1
        return SimpleNamespace(action=torch.zeros(obs.shape[0], dtype=torch.long), state=state + 1)


def logged_actions(agent, epsilon, seed=0, episodes=8) -> list[int]:
    ActionLogEnv.log = []
    evaluate(agent, "drl_eval_test/ActionLog-v0", episodes, seed, epsilon=epsilon)
    return list(ActionLogEnv.log)


def test_epsilon_one_plays_uniformly_random_actions_reproducibly():
    actions = logged_actions(ConstantAgent(), epsilon=1.0)
    counts = Counter(actions)
    assert len(actions) == 400 and set(counts) == {0, 1, 2, 3}
    for a in range(4):  # each 100 expected; 4 standard deviations (8.7) apart at most
        assert abs(counts[a] - 100) < 35, counts
    assert logged_actions(ConstantAgent(), epsilon=1.0) == actions  # the evaluation's own generator, seeded
    assert logged_actions(ConstantAgent(), epsilon=1.0, seed=1) != actions


def test_epsilon_zero_plays_the_policy_and_a_fraction_is_random():
    assert set(logged_actions(ConstantAgent(), epsilon=0.0)) == {0}
    actions = logged_actions(ConstantAgent(), epsilon=0.5, episodes=16)  # 800 steps
    share = actions.count(0) / len(actions)
    assert share == pytest.approx(0.5 + 0.5 / 4, abs=0.06)


def test_a_recurrent_policy_advances_its_state_at_every_step_under_epsilon():
    agent = ConstantAgent(recurrent=True)
    actions = logged_actions(agent, epsilon=1.0, episodes=2)
    assert agent.calls == len(actions) // 2 == 50  # two envs, one call per step for both
    assert set(actions) == {0, 1, 2, 3}


def test_random_actions_of_each_space():
    generator = torch.Generator().manual_seed(0)
    multi = random_actions(gym.spaces.MultiDiscrete([3, 2], start=[5, 5]), 2000, generator)
    assert multi.shape == (2000, 2) and multi.dtype == torch.long
    assert set(multi[:, 0].tolist()) == {0, 1, 2} and set(multi[:, 1].tolist()) == {0, 1}  # agents count from 0
    box = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([1.0, 3.0], np.float32))
    values = random_actions(box, 4000, generator)
    assert values.shape == (4000, 2)
    assert (values >= torch.tensor([-2.0, 0.0])).all() and (values <= torch.tensor([1.0, 3.0])).all()
    assert values.mean(0).tolist() == pytest.approx([-0.5, 1.5], abs=0.1)
    unbounded = random_actions(gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), 10, generator)
    assert torch.isfinite(unbounded).all()
    with pytest.raises(ValueError, match="not supported"):
        random_actions(gym.spaces.MultiBinary(2), 1, generator)


def test_episodes_cut_by_the_time_limit_are_counted():
    result = evaluate(ConstantAgent(), "drl_eval_test/Endless-v0", 3, seed=0)
    assert result.truncated == 3 and result.lengths == [5, 5, 5]
    assert result.metrics()["eval/truncated_episodes"] == 3
    ended = evaluate(ConstantAgent(), "toy_envs:Countdown-v0", 3, seed=0)  # ends (terminated) before its limit
    assert ended.truncated == 0 and ended.metrics()["eval/truncated_episodes"] == 0


def test_protocol_defaults():
    assert evaluation_protocol("ppo", "CartPole-v1") == (True, 0.0)
    assert evaluation_protocol("dqn", "CartPole-v1") == (True, 0.0)
    assert evaluation_protocol("sac", "Pendulum-v1") == (True, 0.0)
    assert evaluation_protocol("ppo", "CartPole-v1", False, 0.2) == (False, 0.2)  # given values win


def test_protocol_defaults_on_atari():
    pytest.importorskip("ale_py")
    for algo in ("ppo", "a2c", "appo"):  # policy gradient: sampled actions (rl-baselines3-zoo's enjoy.py)
        assert evaluation_protocol(algo, "ALE/Breakout-v5") == (False, 0.0)
    assert evaluation_protocol("dqn", "ALE/Breakout-v5") == (True, ATARI_VALUE_BASED_EPSILON)  # Dopamine
    assert ATARI_VALUE_BASED_EPSILON == 0.001
    assert evaluation_protocol("dqn", "PongNoFrameskip-v4", None, 0.0) == (True, 0.0)
    assert evaluation_protocol("ppo", "ALE/Breakout-v5", True, None) == (True, 0.0)


def _wrappers(env: gym.Env) -> list[gym.Env]:
    chain = [env]
    while hasattr(chain[-1], "env"):
        chain.append(chain[-1].env)
    return chain


def test_atari_evaluation_episodes_are_capped_at_108k_frames():
    pytest.importorskip("ale_py")
    env = envs.make("ALE/Breakout-v5", 1, "gym", seed=0, training=False)
    try:
        chain = _wrappers(env.env.envs[0])
        limits = [w for w in chain if isinstance(w, gym.wrappers.TimeLimit)]
        preprocessing = next(w for w in chain if isinstance(w, gym.wrappers.AtariPreprocessing))
        raw = chain[-1]
        # the time limit counts steps of the raw env, which steps one emulator frame at a time
        assert [w._max_episode_steps for w in limits] == [108_000]
        assert raw._frameskip == 1 and preprocessing.frame_skip == 4  # 27,000 agent steps
        assert raw.ale.getInt("max_num_frames_per_episode") == 108_000
    finally:
        env.close()


def test_eval_flags_parse():
    parser = argparse.ArgumentParser()
    add_arguments(parser, TrainConfig(), "run options")
    for args, expected in (
        ([], (None, None)),
        (["--eval-deterministic", "--eval-epsilon", "0.05"], (True, 0.05)),
        (["--no-eval-deterministic", "--eval-epsilon", "none"], (False, None)),
    ):
        cfg = TrainConfig()
        apply_namespace(cfg, parser.parse_args(args))
        assert (cfg.eval_deterministic, cfg.eval_epsilon) == expected
        cfg.validate()
    cfg = TrainConfig(eval_epsilon=1.5)
    with pytest.raises(Exception, match="--eval-epsilon must be a probability in"):
        cfg.validate()


def test_drl_rejects_an_epsilon_outside_0_1_in_one_line(tmp_path):
    result = run_drl("train", "ppo", "CartPole-v1", "--eval-epsilon", "2", "--run-dir", "r", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--eval-epsilon must be" in result.stderr, result.stderr
    assert not (tmp_path / "r").exists()
    result = run_drl("eval", "nowhere", "--epsilon", "-0.5", cwd=tmp_path)
    assert result.returncode == 2 and "--epsilon" in result.stderr and "Traceback" not in result.stderr


def test_drl_eval_reports_its_protocol_and_truncations(tmp_path):
    quick = ["--total-steps", "256", "--num-envs", "2", "--n-steps", "64", "--eval-episodes", "1", "--no-progress"]
    trained = run_drl("train", "ppo", "CartPole-v1", "--run-dir", "run", *quick, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    result = run_drl("eval", "run", "--episodes", "2", "--epsilon", "1", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["deterministic"], report["epsilon"], report["truncated_episodes"]) == (True, 1.0, 0)
    text = run_drl("eval", "run", "--episodes", "1", "--stochastic", cwd=tmp_path).stdout
    assert "stochastic policy" in text and "0 truncated by the time limit" in text


def test_a_failed_render_is_one_line_saying_what_to_install(tmp_path):
    pytest.importorskip("moviepy")
    with pytest.raises(render.RenderError) as failure:
        evaluate(ConstantAgent(), "drl_eval_test/RenderFails-v0", 1, seed=0, num_envs=1, video=tmp_path / "v.mp4")
    message = str(failure.value)
    assert "\n" not in message and "libegl1" in message and "libosmesa6" in message and "MUJOCO_GL" in message
    assert not (tmp_path / "v.mp4").exists()


@pytest.fixture
def linux(monkeypatch):
    monkeypatch.setattr(render.sys, "platform", "linux")


def choose(monkeypatch, environ: dict, libraries: set[str]) -> tuple[str | None, dict]:
    monkeypatch.setattr(render, "loadable", lambda names: any(name in libraries for name in names))
    environ = dict(environ)
    return render.choose_headless_gl(environ), environ


def test_headless_gl_prefers_egl_then_osmesa(linux, monkeypatch):
    chosen, environ = choose(monkeypatch, {}, {"libEGL.so.1", "libOSMesa.so.8"})
    assert chosen == "egl" and environ == {"MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}
    chosen, environ = choose(monkeypatch, {"HOME": "/root"}, {"libOSMesa.so.8"})
    assert chosen == "osmesa" and environ == {"HOME": "/root", "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    assert choose(monkeypatch, {}, set()) == (None, {})  # nothing to use: MuJoCo's error then says what to install
    # PyOpenGL's platform already chosen by the user: MUJOCO_GL follows it
    chosen, environ = choose(monkeypatch, {"PYOPENGL_PLATFORM": "osmesa"}, {"libEGL.so.1", "libOSMesa.so.8"})
    assert chosen == "osmesa" and environ["MUJOCO_GL"] == "osmesa"


def test_headless_gl_leaves_a_display_or_a_choice_alone(linux, monkeypatch):
    everything = {"libEGL.so.1", "libOSMesa.so.8"}
    for environ in ({"DISPLAY": ":0"}, {"WAYLAND_DISPLAY": "wayland-0"}, {"MUJOCO_GL": "glfw"}):
        assert choose(monkeypatch, environ, everything) == (None, environ)
    monkeypatch.setattr(render.sys, "platform", "darwin")
    assert choose(monkeypatch, {}, everything) == (None, {})


def raised_in(filename: str, exc: Exception) -> Exception:
    """`exc`, raised by code that a traceback places in `filename`."""
    try:
        exec(compile("raise exc", filename, "exec"), {"exc": exc})
    except Exception as raised:
        return raised
    raise AssertionError("not raised")


def test_only_opengl_failures_count_as_render_failures():
    site = "/venv/lib/python3.11/site-packages"
    assert render.is_render_failure(raised_in(f"{site}/OpenGL/GL/__init__.py", AttributeError("glGetError")))
    assert render.is_render_failure(raised_in(f"{site}/gymnasium/envs/mujoco/mujoco_rendering.py", RuntimeError()))
    # a MuJoCo env's own error (a bad model file) is not about OpenGL
    assert not render.is_render_failure(raised_in(f"{site}/gymnasium/envs/mujoco/mujoco_env.py", ValueError("xml")))
    assert not render.is_render_failure(ValueError("anything"))
    with pytest.raises(render.RenderError, match="install libegl1"), render.render_failures("Env-v0"):
        raise raised_in(f"{site}/mujoco/egl/__init__.py", ImportError("no EGL"))
    with pytest.raises(KeyError), render.render_failures("Env-v0"):
        raise KeyError("not ours to change")
