"""Data-parallel (DDP) training on several processes: `drl train ALGO ENV_ID --nproc G`.

`drl train ... --nproc G` relaunches itself under torchrun (`launch`), on this machine:

    python -m torch.distributed.run --nnodes 1 --nproc-per-node G --rdzv-backend c10d \\
        --rdzv-endpoint 127.0.0.1:0 --rdzv-id UUID --local-addr 127.0.0.1 -m -- runners.cli train ARGS

which is torchrun's `--standalone` with the rendezvous on the loopback address. Started by hand
(`torchrun [its options] -m runners.cli train ALGO ENV_ID ...`, no --nproc needed: the group's
size is the run's) the same code runs across machines. Every worker (a process where torchrun
set `WORLD_SIZE`) joins the process group (`init_from_env`: NCCL on GPUs, each rank on
cuda:LOCAL_RANK; gloo on CPUs) and runs the Trainer, which then:

- steps num_envs / G envs on each rank, and global env i keeps the seed it has in one process:
  rank r's envs start at seed offset r * num_envs / G (`env_shard`); global_step counts the
  steps of all ranks;
- gives each rank's agent the rollout length of one process with all the envs and 1/G of the
  minibatch (`shard_config`), so that the ranks together take the gradient steps that one
  process would take, each on a global minibatch of the same size;
- makes every rank's agent a replica of rank 0's (`join`): weights, optimiser state and
  normaliser statistics broadcast from rank 0 at the start and after loading a checkpoint, and
  the agent's `distributed` flag set, under which gradients are averaged with one all_reduce
  per step (`agents.optim.descend`), normaliser statistics fold in every rank's batch, and
  PPO's target-KL check reads the KL averaged over the ranks;
- sums the episode statistics over the ranks before rank 0 logs them; rank 0 alone writes the
  run directory (config, run.json, metrics, TensorBoard, evaluation, videos, checkpoints) and
  the others write nothing;
- gathers every rank's env and rollout state into rank 0's checkpoint (`gather_payload`). A
  checkpoint resumes on any number of ranks (`shard_payload`): the agent, its optimiser, its
  normalisers and the counters carry over; on as many ranks as wrote it the episodes continue
  where they were, on another number they restart from a seeded reset.

Only on-policy algorithms (PPO, A2C and others of that kind) train this way.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import sys
import traceback
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist

from agents import ConfigError
from runners.run_dir import lock_for_children, lock_run_dir


# ----------------------------------------------------------------- launching
def is_worker() -> bool:
    """Whether this process was started by torchrun (which sets WORLD_SIZE, RANK, LOCAL_RANK)."""
    return "WORLD_SIZE" in os.environ


def should_launch(nproc: int) -> bool:
    """Whether `drl train --nproc nproc` must start torchrun: more than one process asked for
    and this process is not already one of torchrun's workers."""
    return nproc > 1 and not is_worker()


def launch_command(nproc: int, args: list[str]) -> list[str]:
    """torchrun (as `python -m torch.distributed.run`) starting `nproc` copies of
    `python -m runners.cli ARGS` on this machine, rendezvous on 127.0.0.1 at a free port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "127.0.0.1:0",
        "--rdzv-id",
        uuid.uuid4().hex,
        "--local-addr",
        "127.0.0.1",
        "-m",
        "--",  # what follows is ours: torchrun's parser would take --nproc for an abbreviation of its own
        "runners.cli",
        *args,
    ]


def _loopback_interface() -> str | None:
    names = [name for _, name in socket.if_nameindex()] if hasattr(socket, "if_nameindex") else []
    return next((name for name in names if name in ("lo", "lo0")), None)


def check_gpus(device: torch.device, nproc: int) -> None:
    """Raise ConfigError unless each of `nproc` processes training on `device` can have a GPU."""
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and nproc > count:
        raise ConfigError(
            f"--nproc {nproc} on CUDA needs a GPU per process and this machine has {count}; "
            "use at most that many, or --device cpu (gloo)"
        )


def launch(nproc: int, args: list[str], device: torch.device, run_dir: Path) -> int:
    """Run `drl ARGS` as `nproc` torchrun workers on this machine and return torchrun's exit code.

    torchrun runs in its own session, so a Ctrl-C at the terminal reaches it once, through this
    process (which forwards SIGINT, SIGTERM and SIGHUP), and torchrun passes it to each worker once: the
    workers finish the iteration, write a checkpoint and exit (torchrun allows them 30 s before
    it kills them, and then reports the signal with a traceback of its own); the exit code is
    then 130, as for an interrupted single-process run. gloo's sockets are put on the loopback
    interface unless GLOO_SOCKET_IFNAME says otherwise. This process holds the run directory's
    lock (`run_dir.lock_run_dir`) for the workers while they run."""
    check_gpus(device, nproc)
    lock_run_dir(run_dir)
    command = launch_command(nproc, args)
    print(f"drl: starting {nproc} training processes: {shlex.join(command)}", file=sys.stderr, flush=True)
    env = {**os.environ, **lock_for_children(run_dir)}
    loopback = _loopback_interface()
    if loopback is not None:
        env.setdefault("GLOO_SOCKET_IFNAME", loopback)
    process = subprocess.Popen(command, env=env, start_new_session=True)

    forwarded: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        forwarded.append(signum)
        process.send_signal(signum)

    # SIGHUP too: torchrun has a session of its own, so a closed terminal would not reach it
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        code = process.wait()
        # torchrun ends with its own error after passing on a signal: the run was interrupted
        return 130 if forwarded and code != 0 else code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------ process group
COLLECTIVE_TIMEOUT = timedelta(hours=1)
"""How long a rank waits in a collective: the others wait there while rank 0 evaluates, records
a video or writes a checkpoint (NCCL's default, 10 minutes, can be too short for that)."""


def init_from_env(device: torch.device) -> None:
    """In a torchrun worker of a group of more than one: join the process group that torchrun's
    environment describes (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE), with NCCL when training
    on CUDA (this process then uses cuda:LOCAL_RANK) and gloo on the CPU. Elsewhere nothing."""
    if not is_worker() or int(os.environ["WORLD_SIZE"]) == 1 or dist.is_initialized():
        return
    if device.type == "cuda":
        check_gpus(device, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=local, timeout=COLLECTIVE_TIMEOUT)
    else:
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_worker(main: Callable[[], int]) -> NoReturn:
    """Run `main` in a torchrun worker and end the process with its exit code, skipping the
    interpreter's finalisation. gloo's worker threads can still be releasing the tensors of a
    finished collective (a gather's) after the process group is destroyed; during finalisation
    that needs the GIL, and the thread's exit then aborts the process ("terminate called without
    an active exception", SIGABRT; seen here about once in 20 runs, cf. pytorch/pytorch#179291).
    `main` leaves the group and closes everything the rank writes before it returns."""
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks: (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_device(device: torch.device) -> torch.device:
    """The device this rank trains on: cuda:LOCAL_RANK in place of a CUDA device in a group."""
    if device.type == "cuda" and rank_and_world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def _comm_device() -> torch.device:
    """Where tensors must be for the group's backend (NCCL: this rank's GPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _broadcast_(tensor: torch.Tensor) -> None:
    """Overwrite `tensor` with rank 0's, wherever it lives."""
    device = _comm_device()
    if tensor.device.type == device.type:
        dist.broadcast(tensor, src=0)
    else:
        buffer = tensor.to(device)
        dist.broadcast(buffer, src=0)
        tensor.copy_(buffer)


def any_rank(flag: bool) -> bool:
    """Whether `flag` is true on any rank (collective; `flag` itself without a group)."""
    if rank_and_world()[1] == 1:
        return flag
    value = torch.tensor([float(flag)], device=_comm_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def from_rank0(flag: bool) -> bool:
    """Rank 0's `flag` on every rank (collective; `flag` itself without a group)."""
    if rank_and_world()[1] == 1:
        return flag
    value = torch.tensor([float(flag)], device=_comm_device())
    dist.broadcast(value, src=0)
    return bool(value.item())


# --------------------------------------------------------------- sharding
def env_shard(num_envs: int, rank: int, world: int) -> tuple[int, int]:
    """This rank's envs: (how many, index of the first among all ranks' envs)."""
    if num_envs % world:
        raise ConfigError(f"--nproc {world} must divide --num-envs {num_envs}: each process runs num_envs / nproc envs")
    count = num_envs // world
    return count, rank * count


def check_supported(kind: str, algo: str, world: int) -> None:
    if world > 1 and kind != "on_policy":
        raise ConfigError(f"--nproc trains on-policy algorithms (e.g. ppo, a2c), not {algo}; use --nproc 1")


def shard_config(algo_cfg: Any, num_envs: int, world: int) -> Any:
    """The algorithm config of one rank's agent: the rollout length (n_steps) one process with
    all `num_envs` envs would use, and batch_size // world per minibatch (the global minibatch is
    batch_size when world divides it). The run's own config is left as it is."""
    if world == 1:
        return algo_cfg
    changes = {}
    if hasattr(algo_cfg, "steps_per_env"):
        changes["n_steps"] = algo_cfg.steps_per_env(num_envs)
    if hasattr(algo_cfg, "batch_size"):
        changes["batch_size"] = max(1, algo_cfg.batch_size // world)
    return dataclasses.replace(algo_cfg, **changes)


def rank_seed(seed: int, rank: int, step: int) -> int:
    """A seed for rank `rank`'s own stream from `seed`, drawn afresh at env step `step`."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def join(agent: Any, agent_seed: int | None) -> None:
    """Make `agent` this rank's replica in DDP training (collective): rank 0's weights, optimiser
    state and normaliser statistics; the `distributed` flag (gradients and statistics averaged
    over the ranks); and, given the run's `agent_seed` (a fresh run), on ranks other than 0 a
    sampling stream of their own (rank 0 keeps the one of a single process). A resumed run has
    its streams from the checkpoint (`shard_payload`)."""
    rank, world = rank_and_world()
    if world == 1:
        return
    agent.distributed = True
    modules = [agent.net, getattr(agent, "obs_normalizer", None)]
    scaler = getattr(agent, "reward_scaler", None)
    if scaler is not None:
        modules.append(scaler.rms)  # its per-env running returns stay per rank
    tensors = [t for m in modules if m is not None for t in m.state_dict().values()]
    for state in agent.optimizer.state.values():
        tensors += [v for _, v in sorted(state.items()) if torch.is_tensor(v)]
    with torch.no_grad():
        for tensor in tensors:
            _broadcast_(tensor)
    if rank > 0 and agent_seed is not None:
        agent.generator.manual_seed(rank_seed(agent_seed, rank, 0))


def sum_episode_stats(episodes: Any) -> None:
    """Replace each rank's sums of finished episodes (`runners.rollout.EpisodeStats`) with their
    sum over the ranks (collective), so that rank 0 logs every rank's episodes."""
    if rank_and_world()[1] == 1:
        return
    sums = torch.stack(
        [episodes.episode_return_sum, episodes.episode_length_sum.double(), episodes.episode_count.double()]
    )
    buffer = sums.to(_comm_device())
    dist.all_reduce(buffer)
    buffer = buffer.to(sums.device)
    episodes.episode_return_sum.copy_(buffer[0])
    episodes.episode_length_sum.copy_(buffer[1].round().long())
    episodes.episode_count.copy_(buffer[2].round().long())


# ------------------------------------------------------------ checkpoints
def _to_cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _reward_scaler_state(agent_state: dict[str, Any]) -> dict[str, Any] | None:
    return agent_state.get("reward_scaler") if isinstance(agent_state, dict) else None


def gather_payload(payload: dict[str, Any]) -> dict[str, Any] | None:
    """Rank 0's checkpoint payload with every rank's share (collective; returns None on the other
    ranks, `payload` itself without a group). Each rank passes its own payload; rank 0's gets
    `world_size`, `ranks` (each rank's `env` and `loop` state, in rank order, and `env` and
    `loop` set to None: neither alone is the run's), and the reward scaler's per-env running
    returns of all ranks, concatenated in global env order as one process would hold them; each
    rank's `generator` state goes with its share (the agent's is rank 0's)."""
    rank, world = rank_and_world()
    if world == 1:
        return payload
    scaler = _reward_scaler_state(payload["agent"])
    share = {
        "env": payload["env"],
        "loop": _to_cpu(payload["loop"]),
        "returns": None if scaler is None else _to_cpu(scaler["returns"]),
        "generator": payload["agent"].get("generator"),
    }
    shares: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(share, shares, dst=0)
    if shares is None:
        return None
    payload = {**payload, "world_size": world, "env": None, "loop": None}
    payload["ranks"] = [{"env": s["env"], "loop": s["loop"], "generator": s["generator"]} for s in shares]
    if scaler is not None:
        returns = torch.cat([s["returns"] for s in shares]).to(scaler["returns"].device)
        payload["agent"] = {**payload["agent"], "reward_scaler": {**scaler, "returns": returns}}
    return payload


def shard_payload(payload: dict[str, Any], first_env: int, num_envs: int) -> dict[str, Any]:
    """This rank's view of a checkpoint payload written by any number of ranks. When as many
    ranks wrote it as run now: its own `env` and `loop` state, sampling stream and its envs'
    slice of the reward scaler's running returns, so the run continues exactly. Otherwise `env`
    and `loop` None (episodes restart from a reset), zero running returns, `no_env_reason`
    saying why, and on ranks other than 0 a sampling stream seeded afresh (`rank_seed`)."""
    from runners.seeding import derive_seeds

    rank, world = rank_and_world()
    written = int(payload.get("world_size", 1))
    payload = dict(payload)
    agent = payload["agent"] = dict(payload["agent"])
    scaler = _reward_scaler_state(agent)
    if written == world:
        if world > 1:
            share = payload["ranks"][rank]
            payload["env"], payload["loop"], agent["generator"] = share["env"], share["loop"], share["generator"]
        if scaler is not None:
            agent["reward_scaler"] = {**scaler, "returns": scaler["returns"][first_env : first_env + num_envs]}
        return payload
    payload["env"] = payload["loop"] = None
    payload["no_env_reason"] = f"the checkpoint was written by {written} process(es) and this run has {world}"
    if scaler is not None:
        agent["reward_scaler"] = {**scaler, "returns": torch.zeros(num_envs, dtype=scaler["returns"].dtype)}
    if rank > 0 and "generator" in agent:
        seed = rank_seed(derive_seeds(payload["config"]["train"]["seed"]).agent, rank, int(payload["global_step"]))
        device = agent.get("generator_device") or "cpu"
        agent["generator"] = torch.Generator(device).manual_seed(seed).get_state()
    return payload
