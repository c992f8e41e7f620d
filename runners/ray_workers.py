"""Rollout workers on Ray: many processes, on one machine or many, collect; one learner updates.

Each worker is a Ray actor holding its own vector env (any registered backend, on its CPU)
and a CPU copy of the policy. It runs the local trainer's `OnPolicyCollector` and returns
fixed-length, time-major unrolls ([T, M, ...]; observations in their storage dtype, so
images stay uint8) stamped with the version of the policy that produced them. Worker k
holds the run's envs k*M .. k*M + M - 1, seeded as those envs are in a local run (env i
starts from the run's env seed + i), and a worker needs nothing but the env id, the backend
name and the agent's config: the same code runs in-process, in local Ray processes, or on
another machine of a cluster.

Two loops drive the workers; the learner is the trainer's own agent, on its own device:

- `RaySyncLoop` (PPO, A2C): each iteration broadcasts the policy once (`shared_policy`: packed
  inside the calls when small, else one `ray.put`; by `Pipe` to the workers on the learner's
  node, where Ray's round trip costs four times a pipe's), waits for every worker's unroll,
  concatenates them along the env axis in worker order and copies the result to the device once.
  With a CPU learner (and `exact_workers`, the default) the learner sees the rollout a local run
  with K*M envs would collect, exactly: a worker evaluates the policy on a batch of the whole
  run's shape (K*M rows, its own M filled by `ShardView`; the CPU's matmul kernels round
  differently for different batch sizes) and samples from the learner's generator state, so that
  every row's arithmetic and random draw is the local run's. The price is K times one worker's
  share of inference. On a GPU learner, or with `--no-exact-workers`, each worker computes on
  its own envs with its own random stream.
- `RayAsyncLoop` (APPO): workers keep collecting with the newest policy they were sent; at
  most two unrolls per worker are in flight (back-pressure), the learner updates on each unroll
  as it arrives, logs the policy lag (learner updates since the policy that collected it), and
  drops unrolls older than the agent's `max_policy_lag`.

Faults: a worker whose process dies is restarted by Ray (up to MAX_RESTARTS times), its
unroll in flight is discarded and requested again, and `workers/restarts` counts the new
processes; a worker that stays dead for RETRY_SECONDS ends the run with one line. A worker whose env
raises ends the run with one line naming the env id, the worker and the error (the env's own
traceback follows in Ray's log). Checkpoints hold no env state and nothing that depends on
the number of workers: a run resumes with any worker count, its episodes restarting.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from typing import Any, NamedTuple

import numpy as np
import torch

import envs
from agents import Metrics, OnPolicyAgent, Progress, Rollout, get_algorithm
from envs import StepInfo, VectorEnvBackend, first_line
from runners.guard import FiniteCheck
from runners.rollout import EpisodeStats, OnPolicyCollector

MAX_RESTARTS = 100
"""How often Ray restarts one worker whose process died, over a run."""
RETRY_SECONDS = 60.0
"""How long requests to a dead worker are retried (while Ray restarts it) before the run ends."""


# ------------------------------------------------------------------------------ the workers
@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to build itself (sent to its process)."""

    index: int  # k
    env_id: str
    backend: str
    env_seed: int  # the run's env seed: env i starts from env_seed + i
    first: int  # the run's index of this worker's first env (k * M)
    count: int  # M, its envs
    total: int  # K * M, the run's envs
    padded: bool  # exact sync mode: the policy on batches of the run's shape, the learner's random stream
    algo: str
    agent_config: Any
    n_steps: int  # T, steps per unroll
    threads: int = 1  # torch threads in the worker's process


class ShardView:
    """M real envs seen as rows first .. first + M - 1 of a batch of `total` envs.

    The other rows are placeholders: zero observations, no rewards, episodes that never end,
    and their actions are ignored. A worker's collector steps the view, so it computes on
    batches of the whole run's shape (see the module docstring)."""

    def __init__(self, env: VectorEnvBackend, first: int, total: int):
        self.env, self.first, self.num_envs = env, first, total
        self.rows = slice(first, first + env.num_envs)
        self.device = env.device
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.obs_dtype = env.obs_dtype

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        padded = torch.zeros((self.num_envs, *x.shape[1:]), dtype=x.dtype, device=x.device)
        padded[self.rows] = x
        return padded

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        obs, info = self.env.reset(seed=None if seed is None else seed + self.first, options=options)
        return self._pad(obs), info

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, StepInfo]:
        obs, reward, terminated, truncated, info = self.env.step(actions[self.rows])
        padded = StepInfo(
            self._pad(info.final_obs),
            self._pad(info.episode_return),
            self._pad(info.episode_length),
            info.episodes_ended,
        )
        return self._pad(obs), self._pad(reward), self._pad(terminated), self._pad(truncated), padded

    def state_dict(self) -> dict[str, Any]:
        return self.env.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.load_state_dict(state)

    def close(self) -> None:
        self.env.close()

    def render(self) -> Any:
        return self.env.render()


class Unroll(NamedTuple):
    """One worker's T steps of its M envs, as NumPy arrays (see `to_numpy`)."""

    worker: int
    version: int  # the learner update whose policy collected it
    rollout: Rollout  # of arrays [T, M, ...], with final_obs and last_obs
    episode_returns: np.ndarray  # [T, M] raw return of episodes ending at each step, else 0
    episode_lengths: np.ndarray  # [T, M]
    generator: np.ndarray | None  # the sampling generator's state after the unroll (exact mode)
    env_seconds: float
    inference_seconds: float
    pid: int  # the worker's process: a new one means Ray restarted it


class WorkerEnvError(RuntimeError):
    """A worker's env raised; the message is one line naming the env, the worker and the error."""


def to_numpy(x: torch.Tensor | None) -> np.ndarray | None:
    """A tensor as a NumPy array for Ray's object store: Ray moves NumPy arrays as raw buffers,
    torch tensors through pickle (measured here: 26 small tensors each way took 24 ms a round
    trip as tensors, 7 ms as arrays)."""
    return None if x is None else x.detach().cpu().contiguous().numpy()


def state_to_numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: to_numpy(v) for k, v in state.items()}


def state_from_numpy(state: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v) for k, v in state.items()}  # (a copy: Ray's arrays are read-only)


INLINE_BYTES = 100 * 1024
"""Ray's `max_direct_call_object_size`: an argument or result up to this size travels inside
the call itself; a larger one goes through the object store (and a worker fetches it from there)."""


def array_bytes(value: Any) -> int:
    """The bytes of the NumPy arrays in `value` (nested dicts, tuples and lists)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (tuple, list)):
        return 0
    return sum(array_bytes(v) for v in value)


def pack(value: Any) -> Any:
    """`value` for a call to or from a worker: one pickled `bytes` when its arrays are small
    enough to travel inside the call, else `value` itself, whose arrays Ray moves through its
    object store without copies. Ray's serialiser walks a structure of many small arrays
    (a CartPole policy: 11; an unroll: 10) at a cost of about 0.5 ms a round trip on the 2-core
    CPU of the benchmarks, where a 256-step CartPole iteration takes 31 ms; one bytes object
    takes its fast path. `unpack` undoes it."""
    return pickle.dumps(value, protocol=5) if array_bytes(value) <= INLINE_BYTES else value


def unpack(value: Any) -> Any:
    return pickle.loads(value) if isinstance(value, bytes) else value


def shared_policy(ray: Any, state: dict[str, Any]) -> Any:
    """`state` as the argument of the workers' calls: packed inside each call when small (a
    CartPole MLP: about 40 KB), which spares the `ray.put` (1.25 ms on the 2-core CPU of the
    benchmarks, of a 35-ms CartPole iteration) and the worker's fetch; else one `ray.put` that
    every call shares (an Atari CNN: about 7 MB, put once, not once per call)."""
    packed = pack(state)
    return packed if isinstance(packed, bytes) else ray.put(state)


def policy_state(agent: OnPolicyAgent, version: int, with_generator: bool) -> dict[str, Any]:
    """What a worker needs to act as the learner's agent does now, as NumPy arrays."""
    state: dict[str, Any] = {"version": version, "net": state_to_numpy(agent.net.state_dict())}
    if agent.obs_normalizer is not None:
        state["obs_normalizer"] = state_to_numpy(agent.obs_normalizer.state_dict())
    if with_generator:
        state["generator"] = to_numpy(agent.generator.get_state())
    return state


class RolloutWorker:
    """The body of one Ray actor (`ray.remote` applied in `WorkerPool`).

    Its constructor only stores the spec: Ray re-runs it when it restarts a dead worker, and
    errors are reported from methods, where Ray passes them on as they are. The env, the
    policy copy and the collector are built on first use."""

    def __init__(self, spec: WorkerSpec):
        torch.set_num_threads(spec.threads)  # this actor's own process
        self.spec = spec
        self.env: VectorEnvBackend | None = None
        self.collector: OnPolicyCollector | None = None
        self.rows = slice(spec.first, spec.first + spec.count) if spec.padded else slice(None)
        self.lock = threading.Lock()  # Ray's calls and the pipe's thread take turns at the envs

    def _describe(self, exc: BaseException, doing: str) -> str:
        s = self.spec
        summary = exc.summary if isinstance(exc, envs.EnvFailure) else f"{type(exc).__name__}: {first_line(exc)}"
        return f"{s.env_id} raised in rollout worker {s.index} while {doing}: {summary}"

    def spaces(self) -> tuple[Any, Any, torch.dtype]:
        """Make the envs (if not yet) and return their spaces and observation dtype."""
        if self.env is None:
            s = self.spec
            try:
                env = envs.make(s.env_id, s.count, s.backend, seed=s.env_seed + s.first, device="cpu")
            except Exception as exc:
                raise WorkerEnvError(self._describe(exc, "creating its envs")) from exc
            self.env = ShardView(env, s.first, s.total) if s.padded and s.count < s.total else env
        return self.env.single_observation_space, self.env.single_action_space, self.env.obs_dtype

    def _collector(self) -> OnPolicyCollector:
        if self.collector is None:
            s = self.spec
            obs_space, action_space, _ = self.spaces()
            seed = int(np.random.SeedSequence([s.env_seed, s.index]).generate_state(1)[0])  # async mode's own draws
            agent = get_algorithm(s.algo).make_agent(
                s.agent_config, obs_space, action_space, self.env.num_envs, "cpu", seed
            )
            self.collector = OnPolicyCollector(self.env, agent, s.n_steps)
            self._reset(self.collector, None)  # the first episodes, from the envs' make seeds
        return self.collector

    def _reset(self, collector: OnPolicyCollector, seed: int | None) -> None:
        try:
            collector.reset(seed)
        except Exception as exc:
            raise WorkerEnvError(self._describe(exc, "resetting")) from exc

    def pid(self) -> int:
        return os.getpid()

    def reset(self, seed: int) -> None:
        """Start new episodes, env i of the run from seed + i."""
        with self.lock:
            self._reset(self._collector(), seed)

    def collect(self, policy: Any) -> Any:
        """T steps with `policy` (`policy_state`, maybe packed), as a packed `Unroll`."""
        with self.lock:
            return pack(self._collect(unpack(policy)))

    def listen(self, node: str) -> tuple[str, bytes] | None:
        """Where the learner can reach this worker by pipe: a Unix socket and its key, served by a
        thread of this process, when the worker runs on the learner's node (Ray node id `node`);
        None elsewhere. See `Pipe`."""
        import ray

        if ray.get_runtime_context().get_node_id() != node:
            return None
        authkey = os.urandom(32)
        try:
            listener = Listener(family="AF_UNIX", authkey=authkey)  # in a private temporary directory
        except (OSError, ValueError):  # a temporary directory's path too long for a socket; no AF_UNIX (Windows)
            return None
        threading.Thread(target=self._serve, args=(listener,), name="drl-pipe", daemon=True).start()
        return listener.address, authkey

    def _serve(self, listener: Listener) -> None:
        """Answer the learner's requests on the pipe (one learner, one request at a time) until it
        closes it: a packed policy in, `Pipe.UNROLL` + a pickled `Unroll` or `Pipe.ERROR` + one line out."""
        with listener:
            try:
                conn = listener.accept()
            except Exception:  # OSError, or AuthenticationError: not our learner
                return
        with conn:
            while True:
                try:
                    request = conn.recv_bytes()
                except (EOFError, OSError):
                    return  # the learner is gone
                try:
                    with self.lock:
                        reply = Pipe.UNROLL + pickle.dumps(self._collect(unpack(request)), protocol=5)
                except Exception as exc:
                    traceback.print_exc()  # the env's traceback (or ours), to the worker's log: Ray shows it
                    if isinstance(exc, WorkerEnvError):
                        line = str(exc)
                    else:
                        line = f"rollout worker {self.spec.index} failed: {type(exc).__name__}: {first_line(exc)}"
                    reply = Pipe.ERROR + line.encode()
                try:
                    conn.send_bytes(reply)
                except OSError:
                    return

    def _collect(self, policy: dict[str, Any]) -> Unroll:
        c = self._collector()
        agent = c.agent
        agent.net.load_state_dict(state_from_numpy(policy["net"]))
        if agent.obs_normalizer is not None:
            agent.obs_normalizer.load_state_dict(state_from_numpy(policy["obs_normalizer"]))
        if "generator" in policy:
            agent.generator.set_state(torch.tensor(policy["generator"]))
        env_seconds, inference_seconds = c.env_seconds, c.inference_seconds
        try:
            rollout = c.collect()
        except Exception as exc:
            raise WorkerEnvError(self._describe(exc, "stepping")) from exc
        # (arrays that may share the storage's memory: pack or Ray copies them out before the next call)
        rows = self.rows
        columns = Rollout(
            *(None if x is None else to_numpy(x[:, rows]) for x in rollout[:-1]), to_numpy(rollout.last_obs[rows])
        )
        s = c.storage
        return Unroll(
            self.spec.index,
            policy["version"],
            columns,
            to_numpy(s.episode_returns[:, rows]),
            to_numpy(s.episode_lengths[:, rows]),
            to_numpy(agent.generator.get_state()) if "generator" in policy else None,
            c.env_seconds - env_seconds,
            c.inference_seconds - inference_seconds,
            os.getpid(),
        )


# ------------------------------------------------------------------------------ the learner side
def _ray():
    try:
        import ray
    except ImportError:
        raise envs.EnvError("--num-workers needs Ray: pip install -e .[distributed]") from None
    return ray


def connect(address: str | None, cpus_needed: int, demand: str) -> bool:
    """Join the Ray cluster at `address` (auto: the one this machine belongs to), or start a
    local instance of our own with `cpus_needed` CPUs at least (node address 127.0.0.1, though Ray
    2.60 listens on every interface and authenticates with its token); returns whether this
    call started or joined Ray (and so the caller should leave it). One-line EnvError when it
    cannot, or when the cluster has fewer CPUs than `demand` (e.g. "--num-workers 3, one CPU
    each") needs: its actors would wait forever."""
    ray = _ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": "error", "log_to_driver": True}
    try:
        if address:
            ray.init(address=address, **options)
        else:
            # "local": a new instance of our own, even where `ray start` runs a cluster on this machine
            ray.init(
                address="local", num_cpus=max(os.cpu_count() or 1, cpus_needed), _node_ip_address="127.0.0.1", **options
            )
    except Exception as exc:  # ConnectionError, or Ray's own
        where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
        raise envs.EnvError(f"cannot {where}: {type(exc).__name__}: {first_line(exc)}") from None
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus < cpus_needed:
        ray.shutdown()
        raise envs.EnvError(
            f"the Ray cluster has {cpus:g} CPUs and {demand} need {cpus_needed}; ask for fewer or add machines"
        )
    return True


def start_workers(specs: list[WorkerSpec]) -> list[Any]:
    actor = _ray().remote(num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=0)(RolloutWorker)
    return [actor.remote(spec) for spec in specs]


class Pipe:
    """The learner's end of a pipe to one worker on its own node.

    Ray's actor call costs 2.8-3.5 ms a round trip on the 2-core CPU of the benchmarks between
    a learner and a worker that were busy (each wakes a chain of Ray's threads), a pipe
    0.6-0.7 ms with the same payloads; a CartPole iteration takes about 31 ms. So the
    synchronous loop sends the policy and takes the unroll through a Unix socket to a thread of
    each worker on the learner's node (`RolloutWorker.listen`), and through Ray's calls to the
    others. Ray still starts, places, restarts and stops the workers: a pipe that breaks (its
    worker died) is dropped, the request goes through Ray, which waits for the restarted
    worker, and a new pipe is opened to the new process (`WorkerPool.received`)."""

    UNROLL, ERROR = b"u", b"e"

    def __init__(self, conn: Connection):
        self.conn = conn

    def send(self, policy: bytes) -> bool:
        try:
            self.conn.send_bytes(policy)
            return True
        except OSError:
            return False

    def receive(self) -> Unroll | None:
        """The unroll, or None when the pipe broke; a worker's error is raised as one line."""
        try:
            reply = self.conn.recv_bytes()
        except (EOFError, OSError):
            return None
        if reply[:1] == self.ERROR:
            raise envs.EnvError(reply[1:].decode())
        return pickle.loads(reply[1:])

    def close(self) -> None:
        self.conn.close()


class WorkerPool:
    """The workers of a run, their restarts, and the conversion of Ray's errors into ours."""

    def __init__(self, specs: list[WorkerSpec], address: str | None):
        self.specs = specs
        self.owns_ray = connect(address, len(specs), f"--num-workers {len(specs)}, one CPU each,")
        self.ray = _ray()
        self.restarts = 0
        self.pids: dict[int, int] = {}
        self.failing_since: dict[int, float] = {}
        self.pipes: dict[int, Pipe | None] | None = None  # once `open_pipes` was called: by worker, None for Ray only
        try:
            self.actors = start_workers(specs)
            self.spaces = [self.get(ref) for ref in [a.spaces.remote() for a in self.actors]][0]
        except BaseException:
            self.close()
            raise

    def get(self, ref: Any) -> Any:
        """`ray.get` (unpacked), with a worker's env error as one line (the cause of Ray's wrapper)."""
        try:
            return unpack(self.ray.get(ref))
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            if isinstance(cause, WorkerEnvError):
                raise envs.EnvError(str(cause)) from None
            raise

    def received(self, unroll: Unroll) -> None:
        """Count a restart when a worker's unroll comes from a new process (and open a pipe to it)."""
        k = unroll.worker
        restarted = self.pids.setdefault(k, unroll.pid) != unroll.pid
        if restarted:
            self.restarts += 1
            self.pids[k] = unroll.pid
        if self.pipes is not None and (restarted or k not in self.pipes):
            self.drop_pipe(k)
            self.open_pipe(k)
        self.failing_since.pop(k, None)

    def open_pipes(self) -> None:
        """Open a `Pipe` to each worker on this node (for the synchronous loop)."""
        self.pipes = {}
        for k in range(len(self.actors)):
            self.open_pipe(k)

    def open_pipe(self, k: int) -> None:
        assert self.pipes is not None
        try:
            where = self.get(self.actors[k].listen.remote(self.ray.get_runtime_context().get_node_id()))
            self.pipes[k] = None if where is None else Pipe(Client(where[0], family="AF_UNIX", authkey=where[1]))
        except self.ray.exceptions.RayActorError:
            pass  # a dead worker: Ray's calls reach it when it is back, and `received` opens one then
        except Exception:  # no pipe to this worker (OSError, AuthenticationError): Ray's calls reach it
            self.pipes[k] = None

    def drop_pipe(self, k: int) -> None:
        pipe = (self.pipes or {}).pop(k, None)
        if pipe is not None:
            pipe.close()

    def lost(self, k: int, exc: BaseException) -> None:
        """A request to worker k failed: return (after a pause) when its process died and Ray may
        restart it, so the request can be sent again; raise anything else, and a death that
        lasts longer than RETRY_SECONDS, as a one-line error."""
        if not isinstance(exc, self.ray.exceptions.RayActorError):
            raise exc
        since = self.failing_since.setdefault(k, time.monotonic())
        if time.monotonic() - since > RETRY_SECONDS:
            raise envs.EnvError(
                f"rollout worker {k} died and Ray did not bring it back within {RETRY_SECONDS:g} s "
                f"({type(exc).__name__}: {first_line(exc)})"
            ) from None
        time.sleep(0.5)

    def reset(self, seed: int) -> None:
        for ref in [a.reset.remote(seed) for a in self.actors]:
            self.get(ref)

    def close(self) -> None:
        for k in list(self.pipes or {}):
            self.drop_pipe(k)
        self.pipes = None
        for actor in getattr(self, "actors", []):
            self.ray.kill(actor, no_restart=True)
        self.actors = []
        if self.owns_ray:
            self.ray.shutdown()
            self.owns_ray = False


def concat(unrolls: list[Unroll], device: torch.device) -> tuple[Rollout, torch.Tensor, torch.Tensor]:
    """The unrolls side by side along the env axis, on `device` (one copy each)."""

    def join(parts: list[np.ndarray | None], dim: int) -> torch.Tensor | None:
        if parts[0] is None:
            return None
        return torch.from_numpy(np.concatenate(parts, axis=dim)).to(device, non_blocking=True)

    fields = [
        join([u.rollout[i] for u in unrolls], 0 if name == "last_obs" else 1) for i, name in enumerate(Rollout._fields)
    ]
    return (Rollout(*fields), *episode_stats(unrolls, device))


def worker_specs(
    env_id: str,
    backend: str,
    env_seed: int,
    num_workers: int,
    envs_per_worker: int,
    padded: bool,
    algo: str,
    agent_config: Any,
    n_steps: int,
) -> list[WorkerSpec]:
    total = num_workers * envs_per_worker
    return [
        WorkerSpec(
            k,
            env_id,
            backend,
            env_seed,
            k * envs_per_worker,
            envs_per_worker,
            total,
            padded,
            algo,
            agent_config,
            n_steps,
        )
        for k in range(num_workers)
    ]


def episode_stats(unrolls: list[Unroll], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The unrolls' episode returns and lengths [T, sum of M], on `device`."""
    returns = np.concatenate([u.episode_returns for u in unrolls], axis=1)
    lengths = np.concatenate([u.episode_lengths for u in unrolls], axis=1)
    return torch.from_numpy(returns).to(device), torch.from_numpy(lengths).to(device)


class WorkerLoop:
    """What both loops over Ray workers share: the pool, the counters, episode statistics and
    their checkpointed state (nothing that depends on the number of workers)."""

    def __init__(self, pool: WorkerPool, agent: OnPolicyAgent, total_steps: int, steps_per_iteration: int):
        self.pool, self.agent, self.total_steps = pool, agent, total_steps
        self.steps_per_iteration = steps_per_iteration
        self.version = 0  # learner updates so far: the version of the policy workers get next
        self.episodes = EpisodeStats(agent.device)
        self.seconds = {"env": 0.0, "inference": 0.0, "update": 0.0}
        self.finite = FiniteCheck()  # read by the trainer

    def reset(self, seed: int | None) -> None:
        if seed is not None:
            self.pool.reset(seed)

    def policy(self, with_generator: bool) -> Any:
        """The learner's current policy as the argument of the workers' calls (`shared_policy`)."""
        return shared_policy(self.pool.ray, policy_state(self.agent, self.version, with_generator))

    def update(self, rollout: Rollout, global_step: int) -> Metrics:
        self.finite.watch("observations", rollout.obs)
        self.finite.watch("rewards", rollout.rewards)
        t0 = time.perf_counter()
        metrics = self.agent.update(rollout, Progress(global_step + self.steps_per_iteration, self.total_steps))
        self.seconds["update"] += time.perf_counter() - t0
        self.version += 1
        return metrics

    def pop_episode_stats(self) -> dict[str, Any]:
        return self.episodes.pop()

    def state_dict(self, with_buffer: bool = False) -> dict[str, Any]:
        return {"seconds": dict(self.seconds), **self.episodes.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        self.seconds.update(state["seconds"])
        self.episodes.load_state_dict(state)
        return False

    def close(self) -> None:
        self.pool.close()


class RaySyncLoop(WorkerLoop):
    """On-policy training through Ray workers that wait for each update; see the module docstring."""

    def __init__(self, pool: WorkerPool, agent: OnPolicyAgent, total_steps: int):
        spec = pool.specs[0]
        super().__init__(pool, agent, total_steps, spec.n_steps * spec.total)
        pool.open_pipes()

    def collect(self) -> list[Unroll]:
        """Every worker's unroll with the current policy, by pipe where there is one (a small
        policy, a worker on this node), else through Ray; a worker that died is asked again."""
        exact = self.pool.specs[0].padded  # then the learner's random stream travels with the weights
        policy = self.policy(with_generator=exact)
        actors, piped = self.pool.actors, {}
        for k, pipe in list((self.pool.pipes or {}).items()):
            if pipe is not None and isinstance(policy, bytes):
                if pipe.send(policy):
                    piped[k] = pipe
                else:  # its worker died: Ray brings it back, and `received` opens a new pipe
                    self.pool.drop_pipe(k)
        refs = {k: actor.collect.remote(policy) for k, actor in enumerate(actors) if k not in piped}  # all at once
        unrolls: list[Unroll | None] = [None] * len(actors)
        for k, pipe in piped.items():
            unrolls[k] = pipe.receive()
            if unrolls[k] is None:  # the pipe broke: its worker died; Ray brings it back
                self.pool.drop_pipe(k)
                refs[k] = actors[k].collect.remote(policy)
            else:
                self.pool.received(unrolls[k])
        while refs:
            for k, ref in list(refs.items()):
                try:
                    unrolls[k] = self.pool.get(ref)
                except Exception as exc:
                    self.pool.lost(k, exc)  # its process died: Ray restarts it, and it collects again
                    refs[k] = actors[k].collect.remote(policy)
                    continue
                self.pool.received(unrolls[k])
                del refs[k]
        return unrolls  # type: ignore[return-value]

    def iterate(self, global_step: int) -> dict[str, Any]:
        unrolls = self.collect()
        rollout, returns, lengths = concat(unrolls, self.agent.device)
        if unrolls[0].generator is not None:
            self.agent.generator.set_state(
                torch.from_numpy(unrolls[0].generator.copy())
            )  # where the local run's is now
        self.episodes.add(returns, lengths)
        self.seconds["env"] += max(u.env_seconds for u in unrolls)
        self.seconds["inference"] += max(u.inference_seconds for u in unrolls)
        return {**self.update(rollout, global_step), "workers/restarts": self.pool.restarts}


class RayAsyncLoop(WorkerLoop):
    """APPO's loop: workers collect without waiting for the learner; see the module docstring.

    One iteration is one learner update on one unroll (T x M env steps, the budget counting
    the steps learned from). Each worker has at most `IN_FLIGHT` unrolls requested at a time;
    as one arrives the worker is asked for the next, with the newest policy."""

    IN_FLIGHT = 2

    def __init__(self, pool: WorkerPool, agent: OnPolicyAgent, total_steps: int):
        spec = pool.specs[0]
        super().__init__(pool, agent, total_steps, spec.n_steps * spec.count)
        self.max_policy_lag = agent.config.max_policy_lag
        self.sent: Any = None  # the policy the next requests carry
        self.pending: dict[Any, int] = {}  # Ray object ref -> worker index
        self.lags: list[int] = []
        self.dropped = 0

    def _request(self, k: int) -> None:
        self.pending[self.pool.actors[k].collect.remote(self.sent)] = k

    def next_unroll(self) -> Unroll:
        """The next unroll to arrive whose policy lag is within bounds."""
        ray = self.pool.ray
        if self.sent is None:
            self.sent = self.policy(with_generator=False)
            for k in range(len(self.pool.actors)):
                for _ in range(self.IN_FLIGHT):
                    self._request(k)
        while True:
            (ref,), _ = ray.wait(list(self.pending), num_returns=1)
            k = self.pending.pop(ref)
            try:
                unroll = self.pool.get(ref)
            except Exception as exc:
                self.pool.lost(k, exc)  # its process died: this unroll is lost, the next one asked for
                self._request(k)
                continue
            self.pool.received(unroll)
            self._request(k)
            lag = self.version - unroll.version
            if lag > self.max_policy_lag:
                self.dropped += 1
                self.episodes.add(*episode_stats([unroll], self.agent.device))  # its episodes were played all the same
                continue
            self.lags.append(lag)
            return unroll

    def iterate(self, global_step: int) -> dict[str, Any]:
        unroll = self.next_unroll()
        rollout, returns, lengths = concat([unroll], self.agent.device)
        self.episodes.add(returns, lengths)
        self.seconds["env"] += unroll.env_seconds / len(self.pool.actors)  # workers step in parallel
        self.seconds["inference"] += unroll.inference_seconds / len(self.pool.actors)
        metrics = self.update(rollout, global_step)
        self.sent = self.policy(with_generator=False)
        return {**metrics, "workers/restarts": self.pool.restarts, "workers/dropped_unrolls": self.dropped}

    def pop_episode_stats(self) -> dict[str, Any]:
        """Episode statistics and the policy lag of the unrolls learned from since the last call."""
        lags = self.lags or [0]
        self.lags = []
        return {
            **super().pop_episode_stats(),
            "workers/policy_lag_min": min(lags),
            "workers/policy_lag_mean": sum(lags) / len(lags),
            "workers/policy_lag_max": max(lags),
        }

    def state_dict(self, with_buffer: bool = False) -> dict[str, Any]:
        return {**super().state_dict(), "dropped": self.dropped}

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        self.dropped = int(state.get("dropped", 0))
        return super().load_state_dict(state)
