"""A user's env that fails at run time surfaces as one exception, `envs.EnvFailure`, carrying
the env id, the call, the exception and the env's own traceback (issue 18, item 5): raised in
`reset` or `step` in this process (gym backend) or in a worker process (async backend), or a
worker process that dies outright. Faults come from `toy_envs:Faulty-v0` (see its docstring)."""

from __future__ import annotations

import faulthandler
import os
import pickle
import re
import signal
import threading
import time
from unittest import mock

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from envs.vector import GuardedAsyncVectorEnv, SnapshotWrapper, TorchVectorEnv

FAULTY = "toy_envs:Faulty-v0"
SOURCE_LINE = 'raise ValueError("injected fault")'


@pytest.fixture(autouse=True)
def no_hang():
    """A hang fails the test (its process ends with every thread's traceback) instead of the suite."""
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def faulty(monkeypatch, backend: str, num_envs: int = 2, **fault: str):
    """Faulty-v0 told by environment variables, as `drl train` in a subprocess would be."""
    for name in ("DRL_FAULT", "DRL_FAULT_STEP", "DRL_FAULT_CALL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in fault.items():
        monkeypatch.setenv(name, value)
    return envs.make(FAULTY, num_envs, backend, seed=0)


def run_until_failure(env, steps: int = 100) -> envs.EnvFailure:
    actions = torch.zeros(env.num_envs, dtype=torch.int64)  # always left: episodes of about 10 steps
    with pytest.raises(envs.EnvFailure) as info:
        env.reset()
        for _ in range(steps):
            env.step(actions)
    return info.value


def close_promptly(env, within: float = 5.0) -> None:
    start = time.perf_counter()
    env.close()
    assert time.perf_counter() - start < within


def test_env_failure_is_one_line_and_not_an_input_error():
    failure = envs.EnvFailure("my_envs:Robot-v0", "step", "ValueError: boom", "Traceback ...\nValueError: boom\n")
    assert str(failure) == "my_envs:Robot-v0 raised ValueError: boom in step()"
    assert not isinstance(failure, envs.EnvError)  # bad input is EnvError (exit 2); this is a fault at run time
    failure.step = 512  # the trainer adds the step; it survives pickling (Ray)
    copy = pickle.loads(pickle.dumps(failure))
    assert (copy.env_id, copy.call, copy.summary, copy.env_traceback, copy.step) == (
        "my_envs:Robot-v0",
        "step",
        "ValueError: boom",
        "Traceback ...\nValueError: boom\n",
        512,
    )
    assert str(copy) == str(failure)


@pytest.mark.parametrize("backend", ["gym", "async"])
@pytest.mark.parametrize(
    "call, fault_step",
    [
        ("step", "3"),
        ("reset", "1"),  # the vector env's reset
        ("reset", "2"),  # an autoreset, inside the vector env's step: still the env's reset that raised
    ],
)
def test_an_env_that_raises_gives_env_failure_with_its_traceback(monkeypatch, backend, call, fault_step):
    env = faulty(monkeypatch, backend, DRL_FAULT="raise", DRL_FAULT_STEP=fault_step, DRL_FAULT_CALL=call)
    failure = run_until_failure(env)
    assert failure.env_id == FAULTY
    assert failure.call == call
    assert failure.summary == "ValueError: injected fault"
    assert str(failure) == f"{FAULTY} raised ValueError: injected fault in {call}()"
    # the env's own traceback: the user's file and line, for them to debug; none of our frames
    assert "toy_envs.py" in failure.env_traceback and SOURCE_LINE in failure.env_traceback
    assert failure.env_traceback.rstrip().endswith("ValueError: injected fault")
    assert "envs/vector.py" not in failure.env_traceback
    assert isinstance(failure.__cause__, ValueError)  # raised from the original
    close_promptly(env)


def test_a_worker_that_exits_gives_env_failure_at_once_and_closes(monkeypatch):
    env = faulty(monkeypatch, "async", DRL_FAULT="exit", DRL_FAULT_STEP="3")
    env.reset()
    actions = torch.zeros(2, dtype=torch.int64)
    env.step(actions)
    env.step(actions)
    start = time.perf_counter()
    with pytest.raises(envs.EnvFailure) as info:
        env.step(actions)
    assert time.perf_counter() - start < 5
    failure = info.value
    assert (failure.env_id, failure.call, failure.env_traceback) == (FAULTY, "step", None)
    assert re.fullmatch(r"worker process [01] died \(exit code 3\)", failure.summary), failure.summary
    assert str(failure) == f"{FAULTY} raised {failure.summary} in step()"
    close_promptly(env)


def test_a_worker_killed_between_steps_gives_env_failure(monkeypatch):
    env = faulty(monkeypatch, "async", num_envs=3)
    actions = torch.zeros(3, dtype=torch.int64)
    env.reset()
    env.step(actions)
    victim = env.env.processes[1]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(5)
    with pytest.raises(envs.EnvFailure) as info:
        env.step(actions)
    assert info.value.summary == "worker process 1 died (exit code -9, SIGKILL)"
    assert info.value.call == "step"
    with pytest.raises(gym.error.ClosedEnvironmentError):  # it is done: no silent half-stepped batch
        env.step(actions)
    close_promptly(env)
    assert not any(process.is_alive() for process in env.env.processes)


class ForkThenDie(gym.Env):
    """Forks a child that keeps the worker's pipe open (no end of file), then ends its process."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, pid_file: str):
        self.pid_file = pid_file

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        child = os.fork()
        if child == 0:
            time.sleep(30)
            os._exit(0)
        with open(self.pid_file, "w") as f:
            f.write(str(child))
        os._exit(7)


def test_a_worker_that_dies_is_noticed_even_when_its_pipe_stays_open(tmp_path):
    pid_file = tmp_path / "child.pid"
    vector = GuardedAsyncVectorEnv(
        [lambda: SnapshotWrapper(ForkThenDie(str(pid_file)), 0)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        context="fork",
    )
    env = TorchVectorEnv(vector, env_id="ForkThenDie")
    try:
        env.reset()
        start = time.perf_counter()
        with pytest.raises(envs.EnvFailure, match=r"ForkThenDie raised worker process 0 died \(exit code 7\) in step"):
            env.step(torch.zeros(1, dtype=torch.int64))
        assert time.perf_counter() - start < 3
        close_promptly(env)
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("backend", ["gym", "async"])
def test_nan_fault_returns_nan_without_an_exception(monkeypatch, backend):
    env = faulty(monkeypatch, backend, DRL_FAULT="nan", DRL_FAULT_STEP="2")
    env.reset()
    actions = torch.zeros(2, dtype=torch.int64)
    obs, reward, *_ = env.step(actions)
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all()
    obs, reward, *_ = env.step(actions)  # each env's 2nd step: NaN, for the trainer to detect
    assert torch.isnan(obs).all() and torch.isnan(reward).all()
    obs, reward, *_ = env.step(actions)
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all()
    close_promptly(env)


def test_no_fault_is_cartpole_and_deterministic(monkeypatch):
    def rollout():
        env = faulty(monkeypatch, "gym", DRL_FAULT="none")
        observations = [env.reset()[0]]
        for _ in range(30):
            observations.append(env.step(torch.ones(2, dtype=torch.int64))[0])
        env.close()
        return torch.stack(observations)

    first = rollout()
    assert first.shape == (31, 2, 4) and torch.isfinite(first).all()
    assert torch.equal(first, rollout())


def test_our_own_errors_keep_their_type(monkeypatch):
    """Only the env's own reset and step become EnvFailure: an error outside them stays as it is."""
    env = faulty(monkeypatch, "gym")
    env.reset()
    with (
        mock.patch.object(gym.vector.SyncVectorEnv, "step", side_effect=RuntimeError("a bug of ours")),
        pytest.raises(RuntimeError, match="a bug of ours"),
    ):
        env.step(torch.zeros(2, dtype=torch.int64))
    env.close()


class Unpicklable(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.lock = threading.Lock()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 1.0, False, False, {}


def test_an_env_that_cannot_be_pickled_keeps_its_async_workers(monkeypatch):
    """state_dict raises TypeError (the trainer then saves no env state) and the workers live on:
    an exception inside a Gymnasium worker would end it."""
    vector = GuardedAsyncVectorEnv(
        [lambda i=i: SnapshotWrapper(Unpicklable(), i) for i in range(2)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        context="fork",
    )
    env = TorchVectorEnv(vector, env_id="Unpicklable")
    env.reset()
    with pytest.raises(TypeError, match="cannot pickle the env"):
        env.state_dict()
    _, reward, *_ = env.step(torch.zeros(2, dtype=torch.int64))
    assert reward.tolist() == [1.0, 1.0]
    close_promptly(env)
