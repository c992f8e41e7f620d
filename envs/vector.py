"""A Gymnasium vector env that speaks torch tensors on one device.

`TorchVectorEnv` wraps Gymnasium's sync or async vector env (same-step autoreset) and
converts each step's arrays to tensors once, for the whole batch. It keeps terminated and
truncated apart, hands back the true final observation of every finished episode for
bootstrapping, tracks episode returns and lengths of the raw rewards (or takes them from
the sub-envs' `RecordEpisodeStatistics` where a wrapper below it changes rewards or
episode ends, as the Atari training wrappers do), and can save and restore the state of
its sub-environments so that a resumed run continues exactly.

A user's env that raises in `reset` or `step`, here or in an async worker process, or whose
worker process dies, surfaces from `TorchVectorEnv.reset` / `step` as `envs.EnvFailure`,
carrying the env's own traceback text: `MarkFaults` marks the exceptions of the env's reset
and step (so that errors of ours, outside the env, keep their own type), and
`GuardedAsyncVectorEnv` keeps the traceback a worker sends (Gymnasium only logs it) and
notices a worker that died instead of waiting for it.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import multiprocessing.connection
import pickle
import queue
import select
import signal
import time
import traceback
from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.async_vector_env import AsyncState, _async_worker

from envs.errors import EnvFailure, first_line
from envs.interface import StepInfo
from envs.spaces import host_tensor, pack_obs, torch_dtype

_FAULT = "_drl_env_fault"
"""The attribute `MarkFaults` sets on an exception raised by its env's reset or step:
(call, the traceback text of the env's own frames). Plain strings, so it travels with the
exception from an async worker process (a pickled exception keeps its __dict__)."""


def _mark(exc: Exception, call: str) -> None:
    """Mark `exc`, raised by the env's `call` below a MarkFaults wrapper, with its traceback
    from the frame below the wrapper's down (the user's code, not ours)."""
    if hasattr(exc, _FAULT):
        return
    tb = exc.__traceback__
    trace = "".join(traceback.format_exception(type(exc), exc, tb.tb_next if tb is not None else None))
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _FAULT, (call, trace))


def _summary(exc: BaseException) -> str:
    """One line: the exception's type name and the first line of its message."""
    name = type(exc).__name__
    try:
        return f"{name}: {first_line(exc)}" if str(exc).strip() else name
    except Exception:  # a user's __str__ that itself fails
        return name


def _exit_status(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit code unknown"
    if exitcode < 0:
        try:
            return f"exit code {exitcode}, {signal.Signals(-exitcode).name}"
        except ValueError:
            pass
    return f"exit code {exitcode}"


class SnapshotWrapper(gym.Wrapper):
    """Outermost wrapper of each sub-env: pickles and restores the whole wrapped env,
    through the vector env's `call`, so it works in async worker processes too."""

    def __init__(self, env: gym.Env, index: int):
        super().__init__(env)
        self.index = index

    def drl_get_state(self) -> bytes | str:
        """The pickled env, or why it cannot be pickled (returned, not raised: an exception
        would end an async worker)."""
        try:
            return pickle.dumps(self.env)
        except Exception as exc:
            return _summary(exc)

    def drl_set_state(self, states: tuple[bytes, ...]) -> None:
        self.env = pickle.loads(states[self.index])


class MarkFaults(gym.Wrapper):
    """Marks each exception that the wrapped env's reset or step raises with the call and the
    traceback text of the env's own frames, so that `TorchVectorEnv` raises it as EnvFailure
    (from an async worker too: the mark travels with the pickled exception). `envs.make` puts
    it right around the user's env, below the wrappers of ours (video recording, snapshots):
    an error of those is not the env's."""

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        try:
            return self.env.step(action)
        except Exception as exc:
            _mark(exc, "step")
            raise

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        try:
            return self.env.reset(seed=seed, options=options)
        except Exception as exc:
            _mark(exc, "reset")
            raise


class WorkerFault(Exception):
    """A worker process of `GuardedAsyncVectorEnv` failed: its env raised `error` (with the
    `trace` the worker sent), or the process died (`error` and `trace` None). `call` is the
    env's call that failed ("reset" or "step"; None for other commands, e.g. `call`)."""

    def __init__(
        self,
        index: int | None,
        call: str | None,
        summary: str,
        trace: str | None = None,
        error: BaseException | None = None,
    ):
        super().__init__(f"worker {index}: {summary}" if index is not None else summary)
        self.index, self.call, self.summary, self.trace, self.error = index, call, summary, trace, error


def _quiet_worker(*args: Any) -> None:
    """Gymnasium's worker, deaf to SIGINT and SIGTERM: a Ctrl-C at the terminal reaches the
    whole process group, and it is the trainer's to handle (it finishes the iteration and
    checkpoints, with these workers still stepping); they end when the parent closes them,
    or when their pipe closes with the parent's death."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    _async_worker(*args)


class GuardedAsyncVectorEnv(gym.vector.AsyncVectorEnv):
    """Gymnasium's AsyncVectorEnv, with worker failures that keep what the user needs.

    - An env that raises in a worker raises `WorkerFault` here with the exception, its type
      and message, and the traceback text the worker sent through the error queue (Gymnasium
      raises `type(e)(e)` and only logs the traceback). A KeyboardInterrupt stays one.
    - A worker process that dies outright (os._exit, a signal, a crash in C code) raises
      `WorkerFault` naming it and its exit code as soon as it is gone: the wait for each
      answer also watches the process, so the parent never blocks on a dead worker.
    - After a failure the env is done (its other calls raise ClosedEnvironmentError), and
      `close()` neither hangs nor raises: the live workers get a few seconds to close their
      envs, then are terminated (killed if need be).
    """

    close_grace_s = 5.0
    """How long `close()` after a failure waits for the live workers to close their envs."""
    liveness_every_s = 0.5
    """While waiting for an answer, how often to check that the worker process still lives.
    (Its pipe's end of file, or its sentinel, would tell at once, but not if a process it
    forked holds them open.)"""

    def __init__(self, *args: Any, **kwargs: Any):
        self._failed = False
        kwargs.setdefault("worker", _quiet_worker)
        super().__init__(*args, **kwargs)
        # per worker, a poll object on its pipe: about 1 us a wait, a fifth of `pipe.poll`'s
        self._watch: list[Any] | None = None
        if hasattr(select, "poll"):
            self._watch = []
            for pipe in self.parent_pipes:
                watch = select.poll()
                watch.register(pipe.fileno(), select.POLLIN)
                self._watch.append(watch)

    def _pending_call(self) -> str | None:
        return {AsyncState.WAITING_RESET: "reset", AsyncState.WAITING_STEP: "step"}.get(self._state)

    def _assert_is_running(self) -> None:
        super()._assert_is_running()
        if self._failed:
            raise gym.error.ClosedEnvironmentError(
                f"a worker process of this {type(self).__name__} failed; close it and make a new one"
            )

    def _fail(self) -> str | None:
        """Mark the env as failed, leaving no call pending; the call that was pending."""
        call = self._pending_call()
        self._failed = True
        self._state = AsyncState.DEFAULT
        return call

    def _died(self, index: int | None, call: str | None, lost: BaseException | None = None) -> WorkerFault:
        if index is None:
            what = f" ({type(lost).__name__})" if lost is not None else ""
            return WorkerFault(None, call, f"lost the connection to its worker processes{what}")
        process = self.processes[index]
        process.join(1.0)  # it closed its pipe as it ended: reap it for its exit code
        return WorkerFault(index, call, f"worker process {index} died ({_exit_status(process.exitcode)})")

    def _find_dead(self, within: float) -> int | None:
        """The index of a worker process that has ended, waiting up to `within` seconds."""
        deadline = time.perf_counter() + within
        while True:
            for index, process in enumerate(self.processes):
                if process.exitcode is not None:
                    return index
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            multiprocessing.connection.wait([p.sentinel for p in self.processes], min(left, 0.1))

    def _lost(self, exc: BaseException, call: str) -> WorkerFault:
        """The fault behind an EOFError or ConnectionError on a worker's pipe: a worker died."""
        self._fail()
        return self._died(self._find_dead(3.0), call, lost=exc)

    def _poll_pipe_envs(self, timeout: float | None = None) -> bool:
        """Wait for an answer on every pipe (up to `timeout` seconds in all, None: no limit),
        watching each worker process: WorkerFault as soon as one ends without answering."""
        self._assert_is_running()
        deadline = None if timeout is None else time.perf_counter() + timeout
        for index, pipe in enumerate(self.parent_pipes):
            if pipe is None or pipe.closed:
                return False
            while True:
                wait = self.liveness_every_s
                if deadline is not None:
                    wait = min(wait, max(deadline - time.perf_counter(), 0.0))
                if self._watch is not None:
                    answered = bool(self._watch[index].poll(math.ceil(1000 * wait)))
                else:
                    answered = pipe.poll(wait)
                if answered:  # an answer, or the end of file of a worker that died (recv raises EOFError)
                    break
                if self.processes[index].exitcode is not None and not pipe.poll(0):
                    raise self._died(index, self._fail())  # it ended without an answer
                if deadline is not None and time.perf_counter() >= deadline:
                    return False
        return True

    def reset_async(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().reset_async(*args, **kwargs)
        except ConnectionError as exc:  # BrokenPipeError: a worker died since the last call
            raise self._lost(exc, "reset") from exc

    def reset_wait(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        try:
            return super().reset_wait(*args, **kwargs)
        except (EOFError, ConnectionError) as exc:
            raise self._lost(exc, "reset") from exc

    def step_async(self, actions: Any) -> None:
        try:
            super().step_async(actions)
        except ConnectionError as exc:
            raise self._lost(exc, "step") from exc

    def step_wait(self, *args: Any, **kwargs: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        try:
            return super().step_wait(*args, **kwargs)
        except (EOFError, ConnectionError) as exc:
            raise self._lost(exc, "step") from exc

    def _next_error(self, failed: list[int], within: float = 5.0) -> tuple[Any, ...] | None:
        """One (index, exctype, value, trace) from the error queue; None when none comes:
        the failed workers ended and sent nothing more (an exception that does not pickle),
        or `within` seconds passed."""
        deadline = time.perf_counter() + within
        while time.perf_counter() < deadline:
            ended = all(self.processes[i].exitcode is not None for i in failed)
            try:
                return self.error_queue.get(timeout=0.5 if ended else 0.1)
            except queue.Empty:
                if ended:
                    return None
            except Exception as exc:  # an exception that does not unpickle here
                return (None, type(exc), None, f"(the worker's exception could not be read: {_summary(exc)})")
        return None

    def _raise_if_errors(self, successes: Iterable[bool]) -> None:
        successes = list(successes)
        if all(successes):
            return
        failed = [i for i, ok in enumerate(successes) if not ok]
        call = self._fail()
        errors: dict[int, tuple[Any, Any, str | None]] = {}
        for _ in failed:
            item = self._next_error(failed)
            if item is None:
                break
            index, exctype, value, trace = item
            errors[failed[0] if index is None else index] = (exctype, value, trace)
        for i in failed:  # these workers have ended (gymnasium's worker stops at its first error)
            if self.parent_pipes[i] is not None:
                self.parent_pipes[i].close()
                self.parent_pipes[i] = None
        index = min(errors) if errors else failed[0]
        exctype, value, trace = errors.get(index, (None, None, None))
        if exctype is KeyboardInterrupt or isinstance(value, KeyboardInterrupt):
            raise KeyboardInterrupt
        if not isinstance(value, BaseException):  # gymnasium's worker sends the instance itself
            value = None
        if value is not None:
            summary = _summary(value)
        else:
            lines = [line.strip() for line in (trace or "").splitlines() if line.strip()]
            summary = lines[-1] if lines else "an exception that could not be sent back"
        if call is None:  # a failed `call` or `set_attr`: the worker's own exception, as gymnasium
            if value is None:
                raise WorkerFault(index, None, summary, trace)
            if trace and hasattr(value, "add_note"):
                value.add_note(f"in worker {index}:\n{trace}")
            raise value
        mark = getattr(value, _FAULT, None)
        if mark is not None:  # the env's own reset or step raised (also in an autoreset within step)
            raise WorkerFault(index, mark[0], summary, mark[1], value)
        raise WorkerFault(index, call, summary, trace, value)

    def close_extras(self, timeout: float | None = None, terminate: bool = False) -> None:
        if not self._failed:
            try:
                super().close_extras(timeout=timeout, terminate=terminate)
                return
            except (EOFError, ConnectionError, WorkerFault):  # a worker died since the last call
                self._failed = True
        self._close_after_failure(0.0 if terminate else self.close_grace_s)

    def _close_after_failure(self, grace: float) -> None:
        """Ask the live workers to close their envs, wait up to `grace` seconds, then end
        those left (SIGTERM, then SIGKILL)."""
        if grace > 0:
            for pipe in self.parent_pipes:
                if pipe is not None and not pipe.closed:
                    with contextlib.suppress(OSError):
                        pipe.send(("close", None))
            deadline = time.perf_counter() + grace
            for process in self.processes:
                process.join(max(deadline - time.perf_counter(), 0.0))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(1.0)
            if process.is_alive():
                process.kill()
                process.join()
        for i, pipe in enumerate(self.parent_pipes):
            if pipe is not None:
                pipe.close()
                self.parent_pipes[i] = None


class TorchVectorEnv(gym.vector.VectorEnv):
    """Batched env with tensor inputs and outputs; see the module docstring.

    step(actions [N, ...]) returns (obs, reward, terminated, truncated, StepInfo), tensors
    on `device` with leading dimension N (see `envs.interface.StepInfo`); `episodes_ended`
    is always a host bool here. A user's env that raises in reset or step, or whose async
    worker process dies, raises `envs.EnvFailure` naming `env_id` (default: the spec's id).
    With `scores_from_info`, episode_return and episode_length come from the sub-envs'
    RecordEpisodeStatistics (info["episode"]) instead: the true game score and length, which
    with episodic life arrive only when the game is over, not at every lost life.
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        scores_from_info: bool = False,
        env_id: str | None = None,
    ):
        if env.metadata.get("autoreset_mode") != gym.vector.AutoresetMode.SAME_STEP:
            raise ValueError("TorchVectorEnv needs a vector env with autoreset_mode=SAME_STEP")
        self.env = env
        self.device = torch.device(device)
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self.metadata = env.metadata
        self.render_mode = env.render_mode
        self.spec = env.spec
        self.env_id = env_id or (env.spec.id if env.spec is not None else type(env).__name__)
        self.obs_dtype = torch_dtype(self.single_observation_space)
        self.scores_from_info = scores_from_info
        self._first_seed = seed
        self._episode_return = np.zeros(self.num_envs, dtype=np.float64)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        # StepInfo's episode_return and episode_length on steps where no episode ended (read-only)
        self._no_episodes = (
            torch.zeros(self.num_envs, device=self.device),
            torch.zeros(self.num_envs, dtype=torch.int64, device=self.device),
        )
        space = self.single_action_space
        self._action_low = self._action_high = None
        if isinstance(space, gym.spaces.Box):
            self._action_low, self._action_high = space.low, space.high
        self._action_offset: np.ndarray | None = None  # Discrete.start: agents act in 0..n-1
        if isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)) and np.any(space.start):
            self._action_offset = np.asarray(space.start)

    def _obs(self, obs: Any) -> torch.Tensor:
        return self._tensor(pack_obs(self.single_observation_space, obs), self.obs_dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        if seed is None:
            seed, self._first_seed = self._first_seed, None
        try:
            obs, info = self.env.reset(seed=seed, options=options)
        except Exception as exc:
            self._raise_failure(exc)
            raise
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        return self._obs(obs), info

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, StepInfo]:
        actions = actions.detach().cpu().numpy()
        if self._action_low is not None:
            # Sampled Gaussian actions may leave the bounds; the env gets them clipped (the
            # agent keeps the unclipped ones for its log-probabilities). np.clip, in two ufuncs.
            actions = np.minimum(np.maximum(actions, self._action_low), self._action_high)
        elif self._action_offset is not None:
            actions = actions + self._action_offset
        try:
            obs, reward, terminated, truncated, info = self.env.step(actions)
        except Exception as exc:
            self._raise_failure(exc)
            raise

        done = terminated | truncated
        any_done = bool(done.any())
        episodes_ended = False
        episode_return, episode_length = self._no_episodes
        if self.scores_from_info:
            # with same-step autoreset, the info of the finished episode is the final_info
            final_info = info.get("final_info", {})
            ended = final_info.get("_episode", np.zeros(self.num_envs, dtype=bool)) & done
            if ended.any():
                episodes_ended = True
                returns, lengths = np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=np.int64)
                returns[ended] = final_info["episode"]["r"][ended]
                lengths[ended] = final_info["episode"]["l"][ended]
                episode_return, episode_length = (
                    self._tensor(returns, torch.float32),
                    self._tensor(lengths, torch.int64),
                )
        else:
            self._episode_return += reward
            self._episode_length += 1
            if any_done:
                episodes_ended = True
                episode_return = self._tensor(np.where(done, self._episode_return, 0.0), torch.float32)
                episode_length = self._tensor(np.where(done, self._episode_length, 0), torch.int64)
                self._episode_return[done] = 0.0
                self._episode_length[done] = 0

        space = self.single_observation_space
        packed = pack_obs(space, obs)
        obs_t = self._tensor(packed, self.obs_dtype)
        final_obs = obs_t
        if any_done:
            final = packed.copy()
            for i in np.flatnonzero(info["_final_obs"]):
                one = info["final_obs"][i]
                final[i] = pack_obs(space, {k: [v] for k, v in one.items()} if isinstance(one, dict) else [one])[0]
            final_obs = self._tensor(final, self.obs_dtype)
        return (
            obs_t,
            self._tensor(reward, torch.float32),
            self._tensor(terminated, torch.bool),
            self._tensor(truncated, torch.bool),
            StepInfo(final_obs, episode_return, episode_length, episodes_ended),
        )

    def _raise_failure(self, exc: Exception) -> None:
        """Raise EnvFailure from `exc` if it is a failure of the user's env (raised by its reset
        or step, or a worker's); return for any other exception (ours: it keeps its type)."""
        if isinstance(exc, WorkerFault):
            if exc.call is not None:
                cause = exc.error if exc.error is not None else exc
                raise EnvFailure(self.env_id, exc.call, exc.summary, exc.trace) from cause
            return
        mark = getattr(exc, _FAULT, None)
        if mark is not None:
            raise EnvFailure(self.env_id, mark[0], _summary(exc), mark[1]) from exc

    def _tensor(self, array: Any, dtype: torch.dtype) -> torch.Tensor:
        return host_tensor(array, self.device, dtype)

    def render(self):
        return self.env.render()

    def close(self, **kwargs: Any) -> None:
        self.env.close(**kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue these episodes exactly: each sub-env pickled
        (its physics state, RNG and time-limit counter) and the episode statistics.
        Raises TypeError for envs that cannot be pickled."""
        states = list(self.env.call("drl_get_state"))
        for state in states:
            if isinstance(state, str):
                raise TypeError(f"cannot pickle the env: {state}")
        return {
            "envs": states,
            "episode_return": self._episode_return.tolist(),
            "episode_length": self._episode_length.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.call("drl_set_state", tuple(state["envs"]))
        self._episode_return[:] = state["episode_return"]
        self._episode_length[:] = state["episode_length"]
