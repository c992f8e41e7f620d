"""Small environments registered for tests; use them as `toy_envs:NAME-v0`."""

from __future__ import annotations

import os
import time

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class MultiBinaryActionEnv(gym.Env):
    """An env whose MultiBinary action space no on-policy agent here acts in."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.MultiBinary(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


class CountdownEnv(gym.Env):
    """Observation is the step count; reward 1 per step; terminates after `length` steps."""

    observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 4):
        self.length, self.t = length, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([float(self.t)], np.float32), 1.0, self.t >= self.length, False, {}


class DictTargetEnv(gym.Env):
    """Dict observations: a noise image, a position vector and a Discrete target; reward 1
    when the action equals the target, 8 steps per episode (best return 8, random 2)."""

    observation_space = gym.spaces.Dict(
        {
            "image": gym.spaces.Box(0, 255, (36, 36, 1), np.uint8),
            "position": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
            "target": gym.spaces.Discrete(4),
        }
    )
    action_space = gym.spaces.Discrete(4)

    def _obs(self):
        self.target = int(self.np_random.integers(4))
        return {
            "image": self.np_random.integers(0, 256, (36, 36, 1), dtype=np.uint8),
            "position": self.np_random.uniform(-1, 1, 2).astype(np.float32),
            "target": self.target,
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self.target)
        self.t += 1
        return self._obs(), reward, self.t >= 8, False, {}


class MultiDiscreteTargetEnv(gym.Env):
    """Observation: one-hot codes of two targets (3 and 2 choices); MultiDiscrete([3, 2])
    actions earn 0.5 per matched component; 8 steps per episode (best return 8)."""

    observation_space = gym.spaces.Box(0.0, 1.0, (5,), np.float32)
    action_space = gym.spaces.MultiDiscrete([3, 2])

    def _obs(self):
        self.target = (int(self.np_random.integers(3)), int(self.np_random.integers(2)))
        obs = np.zeros(5, np.float32)
        obs[self.target[0]] = 1.0
        obs[3 + self.target[1]] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = 0.5 * (int(action[0]) == self.target[0]) + 0.5 * (int(action[1]) == self.target[1])
        self.t += 1
        return self._obs(), reward, self.t >= 8, False, {}


class _Lives:
    def __init__(self, env):
        self.env = env

    def lives(self):
        return self.env.lives


class FakeAtariEnv(gym.Env):
    """Stands in for an ALE game below the Atari wrappers: 3 lives, one lost every 5 steps;
    each step scores 7 points (more than a clipped reward)."""

    observation_space = gym.spaces.Box(0, 255, (4,), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.ale = _Lives(self)
        self.lives = 3
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.lives, self.t = 3, 0
        return np.zeros(4, np.uint8), {}

    def step(self, action):
        self.t += 1
        if self.t % 5 == 0:
            self.lives -= 1
        return np.full(4, self.t, np.uint8), 7.0, self.lives == 0, False, {}


class FailingStepEnv(CountdownEnv):
    """A Countdown env whose `step` raises on the 30th call: a user's env with a bug."""

    calls = 0

    def step(self, action):
        self.calls += 1
        if self.calls == 30:
            raise RuntimeError("sensor cable unplugged")
        return super().step(action)


class FaultyEnv(CartPoleEnv):
    """CartPole-v1 (it learns like it) with one fault injected, for the fault-handling tests.

    Configured by environment variables, so that a subprocess `drl train ... toy_envs:Faulty-v0`
    can be told from a test (or by the keyword arguments of the same names, which win):

    - `DRL_FAULT` (`fault`): `none` (the default), `raise`: raise ValueError("injected fault");
      `exit`: `os._exit(3)`, the process ends at once (meant for an async worker; in-process it
      ends the trainer itself, like a crash in C code); `nan`: return a NaN observation (and in
      `step` a NaN reward) instead of the real ones, without an exception; `huge`: a reward of
      3e38 in `step` (finite, but a return or a squared error of it overflows float32).
    - `DRL_FAULT_STEP` (`fault_step`): k, default 1: the fault happens in this env instance's
      k-th step, counted since the env was made, across episodes (every instance of a vector
      env counts its own, so all of them fault at their k-th).
    - `DRL_FAULT_CALL` (`fault_call`): `step` (the default) or `reset`: then the fault happens
      in the k-th reset instead, counting every reset (the first and each autoreset).

    The variables are read at every call, so a resumed run can be given `DRL_FAULT=none`. The
    counts are part of the env's state (pickled into checkpoints): resumed with the same
    settings, it faults again at the same count. Deterministic given its seed: the dynamics are
    CartPole's and the fault depends on the counts only.
    """

    FAULTS = ("none", "raise", "exit", "nan", "huge")
    CALLS = ("step", "reset")

    def __init__(
        self,
        fault: str | None = None,
        fault_step: int | None = None,
        fault_call: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.fault_kwargs = (fault, fault_step, fault_call)
        self.steps = self.resets = 0
        self._config()  # bad settings fail when the env is made

    def _config(self) -> tuple[str, int, str]:
        fault, fault_step, fault_call = self.fault_kwargs
        fault = fault or os.environ.get("DRL_FAULT") or "none"
        fault_step = int(fault_step or os.environ.get("DRL_FAULT_STEP") or 1)
        fault_call = fault_call or os.environ.get("DRL_FAULT_CALL") or "step"
        if fault not in self.FAULTS or fault_call not in self.CALLS:
            raise ValueError(f"DRL_FAULT must be one of {self.FAULTS} and DRL_FAULT_CALL one of {self.CALLS}")
        return fault, fault_step, fault_call

    def _fault(self, call: str, count: int) -> str:
        """The fault to inject in this call ('none' or 'nan'; raise and exit happen here)."""
        fault, fault_step, fault_call = self._config()
        if fault == "none" or call != fault_call or count != fault_step:
            return "none"
        if fault == "raise":
            raise ValueError("injected fault")
        if fault == "exit":
            os._exit(3)
        return fault

    def step(self, action):
        self.steps += 1
        fault = self._fault("step", self.steps)
        obs, reward, terminated, truncated, info = super().step(action)
        if fault == "nan":
            obs, reward = np.full_like(obs, np.nan), float("nan")
        elif fault == "huge":
            reward = 3e38
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed=None, options=None):
        self.resets += 1
        fault = self._fault("reset", self.resets)
        obs, info = super().reset(seed=seed, options=options)
        if fault == "nan":
            obs = np.full_like(obs, np.nan)
        return obs, info


class SlowCartPole(CartPoleEnv):
    """CartPole-v1 whose every step takes at least `step_seconds` (default 0.5 ms): training
    on it is no faster than that on any machine, for tests that depend on the clock."""

    def __init__(self, step_seconds: float = 0.0005, **kwargs):
        super().__init__(**kwargs)
        self.step_seconds = step_seconds

    def step(self, action):
        time.sleep(self.step_seconds)
        return super().step(action)


class SlowRender(CartPoleEnv):
    """CartPole-v1 whose every rendered frame takes 0.5 s, after touching the file that the
    environment variable DRL_RENDERING names (so a test knows a video is being recorded)."""

    def render(self):
        if os.environ.get("DRL_RENDERING"):
            open(os.environ["DRL_RENDERING"], "w").close()
        time.sleep(0.5)
        return super().render()


class SlowToMake(CartPoleEnv):
    """CartPole-v1 whose construction takes 60 s, after touching the file that the environment
    variable DRL_MAKING names (so a test knows the env is being made)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if os.environ.get("DRL_MAKING"):
            open(os.environ["DRL_MAKING"], "w").close()
        time.sleep(60)


gym.register("MultiBinaryAction-v0", entry_point=MultiBinaryActionEnv)
gym.register("Countdown-v0", entry_point=CountdownEnv, max_episode_steps=100)
gym.register("FailingStep-v0", entry_point=FailingStepEnv, max_episode_steps=100)
gym.register("SlowCartPole-v0", entry_point=SlowCartPole, max_episode_steps=500)
gym.register("SlowToMake-v0", entry_point=SlowToMake)
gym.register("SlowRender-v0", entry_point=SlowRender, max_episode_steps=500)
gym.register("Faulty-v0", entry_point=FaultyEnv, max_episode_steps=500, reward_threshold=475.0)
gym.register("DictTarget-v0", entry_point=DictTargetEnv)
gym.register("MultiDiscreteTarget-v0", entry_point=MultiDiscreteTargetEnv)
