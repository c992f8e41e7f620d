"""`drl export`: a trained run's deterministic policy as one file that needs no drl to run.

    drl export RUN_DIR_OR_CHECKPOINT [--format onnx|pt2|torchscript] [--out FILE]

The file holds one graph from the raw observation, as the env returns it, to the action the
env accepts (`DeployedPolicy`):

- in: the observation [B, ...] in the env's own dtype (uint8 images stay uint8, MuJoCo's float64
  is taken as float64 and computed in float32, as the env backends do); a Dict
  observation as one input per key, named by the key, in the space's order;
- the observation normaliser with the statistics frozen at the checkpoint, uint8 scaling, Dict
  packing, the network, the most likely action (argmax, the Gaussian's mean, the squashed
  Gaussian's mode rescaled to the Box bounds);
- out: `action` [B, ...]: Box actions clipped to the space's bounds (as the env backends clip
  them), Discrete and MultiDiscrete ones offset by the space's `start` (int64);
- recurrent policies also take `state_in` [B, S, H] (zeros at an episode's first step) and
  return `state_out`, to be fed back at the next step.

The batch axis is dynamic. Networks are exported in float32 whatever `--cnn-precision` or
`--mlp-precision` trained them (bfloat16 autocast is not an ONNX type), so a policy trained in
bfloat16 may pick a different action where two are within bfloat16 rounding of each other. The
file's metadata (ONNX `metadata_props`; the extra file `drl.json` of the torch formats) records
the algorithm, env id, step, opset, input and output names, and both spaces as JSON
(`space_to_json`).

Formats: `onnx` (onnxruntime and every ONNX runtime); `pt2`, torch.export's ExportedProgram
(`torch.export.save`, the same captured graph the ONNX export starts from; `torch.export.load`
runs it in Python, AOTInductor compiles it for C++); `torchscript` (`torch.jit.trace`, which
torch deprecates as of 2.13 in favour of torch.export: kept for runtimes that still load
TorchScript).

`ExportedPolicy` runs such a file through onnxruntime (or torch) and acts as an agent does in
`runners.evaluate.evaluate`: `drl eval RUN_DIR --policy FILE` plays it on the run's env.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents import ConfigError
from envs import first_line
from envs.spaces import dict_layout, torch_dtype
from networks.precision import MixedPrecision
from runners.cliargs import ArgumentParser

OPSET = 18
FORMATS = ("onnx", "pt2", "torchscript")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".pt"}
EXPORT_EXTRA = "drl export needs onnx, onnxscript and onnxruntime for ONNX files: pip install 'drl[export]'"


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A JSON-able description of a Box, Discrete, MultiDiscrete or Dict space."""
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist()}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {key: space_to_json(sub) for key, sub in space.spaces.items()}}
    raise ConfigError(f"cannot export a policy for the space {space}")


def input_names(observation_space: gym.Space, recurrent: bool) -> list[str]:
    names = list(observation_space.spaces) if isinstance(observation_space, gym.spaces.Dict) else ["obs"]
    return [*names, "state_in"] if recurrent else names


def output_names(recurrent: bool) -> list[str]:
    return ["action", "state_out"] if recurrent else ["action"]


class DeployedPolicy(nn.Module):
    """Raw observation(s) [B, ...] (and `state_in`) -> the env's action [B, ...] (and `state_out`):
    Dict packing, then the agent's deterministic policy, then the action as the env takes it."""

    def __init__(self, policy: nn.Module, observation_space: gym.Space, action_space: gym.Space, recurrent: bool):
        super().__init__()
        self.policy, self.recurrent = policy, recurrent
        self.layout = dict_layout(observation_space) if isinstance(observation_space, gym.spaces.Dict) else None
        self.packed_dtype = torch_dtype(observation_space)
        self.n_obs = len(self.layout) if self.layout else 1
        self.clip = isinstance(action_space, gym.spaces.Box)
        if self.clip:
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32))
        self.offset = isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete))
        if self.offset:
            self.register_buffer("start", torch.as_tensor(np.asarray(action_space.start), dtype=torch.int64))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        parts = inputs[: self.n_obs]
        if self.layout is None:  # in the env's own dtype (MuJoCo's float64), computed as the backends hold it
            obs = parts[0].to(self.packed_dtype)
        else:  # as envs.spaces.pack_obs: each key flattened, in the space's order, one dtype
            obs = torch.cat([part.reshape(part.shape[0], -1).to(self.packed_dtype) for part in parts], dim=1)
        if self.recurrent:
            action, state = self.policy(obs, inputs[self.n_obs])
        else:
            action, state = self.policy(obs), None
        if self.clip:
            action = torch.minimum(torch.maximum(action, self.low), self.high)
        elif self.offset:
            action = action.long() + self.start
        return action if state is None else (action, state)


def deployed_policy(agent: Any, observation_space: gym.Space, action_space: gym.Space) -> DeployedPolicy:
    """A float32 CPU copy of the agent's deterministic policy, wrapped for export."""
    policy = copy.deepcopy(agent.deterministic_policy()).cpu().eval()
    for module in policy.modules():
        if isinstance(module, MixedPrecision):  # bfloat16 autocast has no ONNX form
            module.set_precision("float32")
    return DeployedPolicy(policy, observation_space, action_space, bool(getattr(agent, "recurrent", False)))


def example_inputs(
    observation_space: gym.Space, state_shape: tuple[int, ...] | None, batch: int = 2
) -> tuple[torch.Tensor, ...]:
    """Sample inputs of `batch` observations (and a zero state) in the env's dtypes."""
    spaces = (
        list(observation_space.spaces.values())
        if isinstance(observation_space, gym.spaces.Dict)
        else [observation_space]
    )
    parts = [torch.as_tensor(np.stack([space.sample() for _ in range(batch)])) for space in spaces]
    if state_shape is not None:
        parts.append(torch.zeros(batch, *state_shape))
    return tuple(parts)


def export_policy(
    agent: Any,
    observation_space: gym.Space,
    action_space: gym.Space,
    out: Path,
    fmt: str,
    metadata: dict[str, Any],
) -> dict[str, str]:
    """Write the deployed policy to `out` (in one of FORMATS); returns the metadata written."""
    model = deployed_policy(agent, observation_space, action_space)
    state_shape = tuple(agent.initial_state(1).shape[1:]) if model.recurrent else None
    inputs = example_inputs(observation_space, state_shape)
    names_in, names_out = input_names(observation_space, model.recurrent), output_names(model.recurrent)
    meta = {
        **{key: str(value) for key, value in metadata.items()},
        "format": fmt,
        "inputs": json.dumps(names_in),
        "outputs": json.dumps(names_out),
        "observation_space": json.dumps(space_to_json(observation_space)),
        "action_space": json.dumps(space_to_json(action_space)),
        "recurrent_state_shape": json.dumps(list(state_shape) if state_shape else None),
        "opset": str(OPSET) if fmt == "onnx" else "",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / out.name  # written whole, then renamed: no half file at `out`
        if fmt == "onnx":
            _write_onnx(model, inputs, names_in, names_out, meta, staged)
        elif fmt == "pt2":
            program = torch.export.export(model, inputs, dynamic_shapes=batch_axes(inputs))
            with warnings.catch_warnings():  # (tensors sharing storage: a warning for weights off the CPU, not ours)
                warnings.filterwarnings("ignore", "No complete tensor found", UserWarning)
                torch.export.save(program, staged, extra_files={"drl.json": json.dumps(meta)})
        else:
            traced = torch.jit.trace(model, inputs, check_trace=False)
            torch.jit.save(traced, str(staged), _extra_files={"drl.json": json.dumps(meta)})
        staged.replace(out)
    return meta


def batch_axes(inputs: tuple[torch.Tensor, ...]) -> tuple[tuple[dict[int, Any], ...]]:
    """torch.export's `dynamic_shapes` for `DeployedPolicy.forward(*inputs)`: one batch axis, the
    first of every input."""
    batch = torch.export.Dim("batch", min=1)
    return (tuple({0: batch} for _ in inputs),)


def _write_onnx(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    names_in: list[str],
    names_out: list[str],
    meta: dict[str, str],
    path: Path,
) -> None:
    import onnx

    quiet = logging.getLogger("torch.onnx")  # it warns that torchvision's ops are missing: not ours to export
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                inputs,
                input_names=names_in,
                output_names=names_out,
                dynamic_shapes=batch_axes(inputs),
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


class ExportedPolicy:
    """An exported file acting as an agent does in `runners.evaluate.evaluate` (deterministic
    only): it takes the backends' packed observations and returns actions counted from 0."""

    device = torch.device("cpu")

    def __init__(self, path: str | Path, observation_space: gym.Space, action_space: gym.Space):
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--policy {path}: no such file")
        if path.suffix == ".onnx":
            self._load_onnx(path)
        elif path.suffix == ".pt2":
            self._load_pt2(path)
        else:
            self._load_torchscript(path)
        expected = json.dumps(space_to_json(observation_space))
        if self.meta.get("observation_space") != expected:
            raise ConfigError(f"--policy {path} was exported for another observation space than this run's env")
        self.layout = dict_layout(observation_space) if isinstance(observation_space, gym.spaces.Dict) else None
        self.obs_dtype = None if self.layout else np.dtype(observation_space.dtype)  # the file's input, the env's
        self.start = None
        if isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
            self.start = torch.as_tensor(np.asarray(action_space.start), dtype=torch.int64)
        shape = json.loads(self.meta.get("recurrent_state_shape", "null"))
        self.recurrent = shape is not None
        self.state_shape = tuple(shape or ())

    def _load_onnx(self, path: Path) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ConfigError(EXPORT_EXTRA) from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for unreadable files
            raise ConfigError(f"--policy {path} is not a readable ONNX file ({first_line(exc)})") from None
        self.meta = dict(session.get_modelmeta().custom_metadata_map)
        names = [i.name for i in session.get_inputs()]

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            return session.run(None, dict(zip(names, inputs, strict=True)))

        self._run = run

    def _load_pt2(self, path: Path) -> None:
        files = {"drl.json": ""}
        quiet = logging.getLogger("torch.export")  # it logs a traceback before it tries an older format
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            if not zipfile.is_zipfile(path):
                raise ValueError("not a zip archive")
            module = torch.export.load(path, extra_files=files).module()
            self.meta = json.loads(files["drl.json"])
        except Exception as exc:  # zipfile's, torch's and json's errors for a file that is not ours
            raise ConfigError(f"--policy {path} is not a .pt2 file written by drl export ({first_line(exc)})") from None
        finally:
            quiet.setLevel(level)
        self._run = self._torch_runner(module)

    def _load_torchscript(self, path: Path) -> None:
        files = {"drl.json": ""}
        try:
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
            self.meta = json.loads(files["drl.json"])
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"--policy {path} is not a TorchScript file written by drl export ({exc})") from None
        self._run = self._torch_runner(module)

    @staticmethod
    def _torch_runner(module: Any) -> Any:
        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            with torch.no_grad():
                out = module(*(torch.from_numpy(x) for x in inputs))
            return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

        return run

    def _inputs(self, obs: torch.Tensor) -> list[np.ndarray]:
        """The backends' packed observation [N, ...] as the file's inputs (one per Dict key)."""
        obs = obs.detach().cpu()
        if self.layout is None:
            return [obs.numpy().astype(self.obs_dtype, copy=False)]
        parts = []
        for entry in self.layout:
            part = obs[:, entry.start : entry.end]
            if isinstance(entry.space, gym.spaces.Discrete):
                parts.append(part.reshape(-1).numpy().astype(np.int64))
            else:
                parts.append(part.reshape(-1, *entry.space.shape).numpy().astype(entry.space.dtype))
        return parts

    def _action(self, action: np.ndarray) -> torch.Tensor:
        action = torch.from_numpy(np.asarray(action))
        return action if self.start is None else action - self.start  # the env backends add start back

    def predict(self, obs: torch.Tensor, deterministic: bool = True, generator: Any = None) -> torch.Tensor:
        return self._action(self._run(self._inputs(obs))[0])

    def initial_state(self, num_envs: int) -> torch.Tensor:
        return torch.zeros(num_envs, *self.state_shape)

    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = True,
        generator: Any = None,
        state: torch.Tensor | None = None,
        starts: torch.Tensor | None = None,
    ) -> SimpleNamespace:
        """One recurrent step: the state is zeroed where an episode starts."""
        assert state is not None and starts is not None
        state = state * (~starts.cpu()).to(state.dtype).view(-1, 1, 1)
        action, new_state = self._run([*self._inputs(obs), state.numpy().astype(np.float32)])
        return SimpleNamespace(action=self._action(action), state=torch.from_numpy(new_state))


def cmd_export(args: list[str]) -> int:
    from runners.trainer import load_trained

    parser = ArgumentParser(
        prog="drl export",
        description="Write a trained run's deterministic policy, with its preprocessing and action "
        "post-processing, as one ONNX (or torch.export .pt2, or TorchScript) file.",
    )
    parser.add_argument(
        "path", metavar="RUN_DIR_OR_CHECKPOINT", help="a run directory (its latest checkpoint) or a checkpoint file"
    )
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="file format (default: onnx)")
    parser.add_argument(
        "--out", type=Path, default=None, help="the file to write (default: RUN_DIR/policy.onnx, .pt2 or .pt)"
    )
    namespace = parser.parse_args(args)
    if namespace.format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise ConfigError(EXPORT_EXTRA) from None
    trained = load_trained(namespace.path, "cpu")
    out = namespace.out or trained.run_dir / f"policy{SUFFIXES[namespace.format]}"
    began = time.perf_counter()
    metadata = {
        "producer": "drl export",
        "algo": trained.train_cfg.algo,
        "env_id": trained.train_cfg.env_id,
        "global_step": trained.payload.get("global_step"),
        "checkpoint": trained.payload["path"],
    }
    meta = export_policy(
        trained.agent, trained.observation_space, trained.action_space, Path(out), namespace.format, metadata
    )
    print(
        f"wrote {out} ({namespace.format}, {trained.train_cfg.algo} on {trained.train_cfg.env_id} at step "
        f"{metadata['global_step']}; inputs {', '.join(json.loads(meta['inputs']))}; outputs "
        f"{', '.join(json.loads(meta['outputs']))}; {time.perf_counter() - began:.1f} s)"
    )
    return 0
