"""`drl export`: the exported file acts as the agent does.

For every algorithm and every kind of space (Box, Discrete and Dict observations, images,
Box, Discrete and MultiDiscrete actions, recurrent policies), 1,000 observations from the env
go through the agent's `predict` (deterministic) and through the exported file under
onnxruntime: discrete actions must be equal, continuous ones within 1e-5, and an evaluation
of the file must give the agent's returns. The CLI test runs the issue's acceptance pipeline.
"""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents import get_algorithm
from runners.evaluate import evaluate, random_actions
from runners.export import EXPORT_EXTRA, SUFFIXES, ExportedPolicy, export_policy

from conftest import drl_env, run_drl

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

OBSERVATIONS = 1000


def make_agent(algo: str, env_id: str, **network):
    """A fresh agent for env_id's spaces, with its weights (and normaliser statistics) moved off
    their initial values, so that the file has something to get wrong."""
    spec = get_algorithm(algo)
    cfg = spec.config_cls()
    for key, value in network.items():
        target = cfg.network if hasattr(cfg.network, key) else cfg
        setattr(target, key, value)
    probe = envs.make(env_id, 1, "gym", seed=0, training=False)
    spaces = probe.single_observation_space, probe.single_action_space
    probe.close()
    torch.manual_seed(0)
    agent = spec.make_agent(cfg, *spaces, 4, torch.device("cpu"), 0)
    with torch.no_grad():
        for param in agent.deterministic_policy().parameters():
            param.add_(0.1 * torch.randn_like(param))
    return agent, spaces


def observations(env_id: str, n: int = OBSERVATIONS, num_envs: int = 8) -> torch.Tensor:
    """n observations [n, ...] from the env under uniformly random actions."""
    env = envs.make(env_id, num_envs, "gym", seed=1, training=False)
    generator = torch.Generator().manual_seed(0)
    obs, _ = env.reset()
    seen = [obs]
    while len(seen) * num_envs < n:
        action = random_actions(env.single_action_space, num_envs, generator)
        obs, *_ = env.step(action)
        seen.append(obs)
    env.close()
    return torch.cat(seen)[:n]


def as_env_action(space: gym.Space, action: torch.Tensor) -> torch.Tensor:
    """The agent's action as the env backends pass it on: clipped to a Box, counted from 0."""
    if isinstance(space, gym.spaces.Box):
        return action.clamp(torch.as_tensor(space.low), torch.as_tensor(space.high))
    return action


def export(agent, spaces, tmp_path, fmt="onnx"):
    out = tmp_path / f"policy{SUFFIXES[fmt]}"
    export_policy(agent, *spaces, out, fmt, {"algo": "test"})
    return ExportedPolicy(out, *spaces)


def assert_same_actions(space: gym.Space, expected: torch.Tensor, got: torch.Tensor) -> None:
    assert got.shape == expected.shape
    if isinstance(space, gym.spaces.Box):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    else:
        assert torch.equal(got.long(), expected.long()), (got != expected).sum()


FEED_FORWARD = [
    ("ppo", "CartPole-v1", {}),  # Box observations, Discrete actions
    ("ppo", "Pendulum-v1", {"normalize_obs": True}),  # Box actions (clipped), an observation normaliser
    ("a2c", "toy_envs:MultiDiscreteTarget-v0", {}),  # MultiDiscrete actions
    ("ppo", "toy_envs:DictTarget-v0", {}),  # Dict: an image, a vector and a Discrete key
    ("appo", "Acrobot-v1", {"share_encoder": True}),
    ("dqn", "CartPole-v1", {"dueling": True}),
    ("dqn", "FrozenLake-v1", {}),  # Discrete observations (one-hot)
    ("sac", "Pendulum-v1", {}),  # squashed Gaussian rescaled to the bounds
    ("td3", "MountainCarContinuous-v0", {}),
    ("ddpg", "Pendulum-v1", {}),
]


@pytest.mark.parametrize(("algo", "env_id", "options"), FEED_FORWARD, ids=[f"{a}-{e}" for a, e, _ in FEED_FORWARD])
def test_exported_policy_acts_as_the_agent(algo, env_id, options, tmp_path):
    agent, spaces = make_agent(algo, env_id, **options)
    obs = observations(env_id)
    if getattr(agent, "obs_normalizer", None) is not None:
        agent.obs_normalizer.update(obs)  # statistics far from the initial ones (mean 0, var 1)
    exported = export(agent, spaces, tmp_path)
    with torch.no_grad():
        expected = as_env_action(spaces[1], agent.predict(obs, deterministic=True))
    assert_same_actions(spaces[1], expected, exported.predict(obs))

    episodes = 4 if env_id.startswith("toy_envs") or env_id == "FrozenLake-v1" else 2
    by_agent = evaluate(agent, env_id, episodes, seed=3, max_steps=1000)
    by_file = evaluate(exported, env_id, episodes, seed=3, max_steps=1000)
    assert by_file.lengths == by_agent.lengths
    if isinstance(spaces[1], gym.spaces.Box):  # actions equal to 1e-5: returns to float rounding
        np.testing.assert_allclose(by_file.returns, by_agent.returns, rtol=1e-4)
    else:
        assert by_file.returns == by_agent.returns


def test_bfloat16_trunks_are_exported_in_float32(tmp_path):
    # bfloat16 autocast has no ONNX form: the file computes what the float32 agent does
    agent, spaces = make_agent("sac", "Pendulum-v1", mlp_precision="bfloat16")
    float32_agent, _ = make_agent("sac", "Pendulum-v1")  # the same weights
    obs = observations("Pendulum-v1")
    exported = export(agent, spaces, tmp_path)
    with torch.no_grad():
        expected = as_env_action(spaces[1], float32_agent.predict(obs, deterministic=True))
        in_bfloat16 = as_env_action(spaces[1], agent.predict(obs, deterministic=True))
    assert_same_actions(spaces[1], expected, exported.predict(obs))
    assert not torch.equal(in_bfloat16, expected)


@pytest.mark.parametrize("kind, fmt", [("lstm", "onnx"), ("gru", "onnx"), ("lstm", "pt2")])
def test_exported_recurrent_policy_carries_its_state(kind, fmt, tmp_path):
    env_id = "CartPole-v1"
    agent, spaces = make_agent("ppo", env_id, recurrent=kind, recurrent_size=32)
    exported = export(agent, spaces, tmp_path, fmt)
    obs = observations(env_id).view(-1, 8, 4)  # [T, N, 4]
    starts = torch.zeros(obs.shape[:2], dtype=torch.bool)
    starts[0] = True
    starts[50, :4] = True  # some envs begin new episodes mid-sequence
    state, file_state = agent.initial_state(8), exported.initial_state(8)
    for t in range(obs.shape[0]):
        out = agent.act(obs[t], True, state=state, starts=starts[t])
        got = exported.act(obs[t], True, state=file_state, starts=starts[t])
        assert torch.equal(got.action, out.action)
        torch.testing.assert_close(got.state, out.state, rtol=0, atol=1e-5)
        state, file_state = out.state, got.state

    by_agent = evaluate(agent, env_id, 2, seed=3, max_steps=1000)
    by_file = evaluate(exported, env_id, 2, seed=3, max_steps=1000)
    assert by_file.returns == by_agent.returns


def test_exported_cnn_policy_on_atari_frames(tmp_path):
    pytest.importorskip("ale_py")
    env_id = "ALE/Breakout-v5"
    agent, spaces = make_agent("dqn", env_id)
    obs = observations(env_id, n=256)  # uint8 [256, 4, 84, 84]
    exported = export(agent, spaces, tmp_path)
    with torch.no_grad():
        expected = agent.predict(obs, deterministic=True)
    assert_same_actions(spaces[1], expected, exported.predict(obs))


def test_actions_leave_the_file_as_the_env_takes_them(tmp_path):
    """Discrete actions offset by the space's start, Box actions clipped to its bounds."""
    from runners.export import deployed_policy

    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    spec = get_algorithm("ppo")
    for action_space in (gym.spaces.Discrete(3, start=5), gym.spaces.Box(-0.01, 0.01, (2,), np.float32)):
        agent = spec.make_agent(spec.config_cls(), obs_space, action_space, 1, torch.device("cpu"), 0)
        with torch.no_grad():
            agent.net.policy_head.linear.weight.mul_(1000)  # means far outside the Box
        obs = torch.rand(64, 3) * 2 - 1
        raw = agent.predict(obs, deterministic=True)
        env_action = deployed_policy(agent, obs_space, action_space)(obs)
        if isinstance(action_space, gym.spaces.Discrete):
            assert torch.equal(env_action, raw + 5)
            assert env_action.dtype == torch.int64
        else:
            assert raw.abs().max() > 0.01
            assert torch.equal(env_action, raw.clamp(-0.01, 0.01))
        exported = export(agent, (obs_space, action_space), tmp_path)
        assert_same_actions(action_space, as_env_action(action_space, raw), exported.predict(obs))


def test_the_file_takes_observations_in_the_envs_own_dtype(tmp_path):
    """MuJoCo's observations are float64: the file takes them so, and computes in float32 as the
    env backends (which hand agents float32) do."""
    obs_space = gym.spaces.Box(-np.inf, np.inf, (5,), np.float64)
    action_space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
    spec = get_algorithm("sac")
    agent = spec.make_agent(spec.config_cls(), obs_space, action_space, 1, torch.device("cpu"), 0)
    exported = export(agent, (obs_space, action_space), tmp_path)
    assert exported.meta["inputs"] == '["obs"]' and exported.obs_dtype == np.float64
    obs = torch.randn(300, 5)  # as a backend holds them: float32
    with torch.no_grad():
        expected = agent.predict(obs, deterministic=True)
    assert_same_actions(action_space, expected, exported.predict(obs))


@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_torch_files_act_as_the_agent(fmt, tmp_path):
    agent, spaces = make_agent("ppo", "toy_envs:DictTarget-v0")
    obs = observations("toy_envs:DictTarget-v0", n=200)
    exported = export(agent, spaces, tmp_path, fmt=fmt)
    assert json.loads(exported.meta["inputs"]) == ["image", "position", "target"] and exported.meta["format"] == fmt
    assert_same_actions(spaces[1], agent.predict(obs, deterministic=True), exported.predict(obs))
    assert_same_actions(spaces[1], agent.predict(obs[:1], deterministic=True), exported.predict(obs[:1]))  # any batch


def test_a_pt2_file_needs_no_drl_to_run(tmp_path):
    # what a user does with the file elsewhere: torch.export.load, then call it on raw observations
    agent, spaces = make_agent("sac", "Pendulum-v1")
    export_policy(agent, *spaces, tmp_path / "p.pt2", "pt2", {"algo": "sac"})
    code = (
        "import json, sys, torch; files = {'drl.json': ''}; "
        "m = torch.export.load(sys.argv[1], extra_files=files).module(); "
        "a = m(torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, -8.0]])); "
        "print(json.loads(files['drl.json'])['outputs'], tuple(a.shape), bool(a.abs().max() <= 2.0))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p.pt2")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['["action"]', "(2,", "1)", "True"]


def test_onnx_file_metadata_describes_the_policy(tmp_path):
    import onnx

    agent, spaces = make_agent("ppo", "toy_envs:DictTarget-v0", recurrent="gru", recurrent_size=16)
    export_policy(agent, *spaces, tmp_path / "p.onnx", "onnx", {"algo": "ppo", "env_id": "toy_envs:DictTarget-v0"})
    model = onnx.load(str(tmp_path / "p.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert [i.name for i in model.graph.input] == ["image", "position", "target", "state_in"]
    assert [o.name for o in model.graph.output] == ["action", "state_out"]
    assert json.loads(meta["inputs"]) == ["image", "position", "target", "state_in"]
    assert json.loads(meta["recurrent_state_shape"]) == [1, 16]
    assert json.loads(meta["observation_space"])["spaces"]["image"]["dtype"] == "uint8"
    assert json.loads(meta["action_space"]) == {"type": "Discrete", "n": 4, "start": 0}
    assert meta["opset"] == str(model.opset_import[0].version) and meta["algo"] == "ppo"
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # a dynamic batch axis


@pytest.mark.slow
def test_drl_export_then_eval_policy_gives_the_same_return(tmp_path):
    """The issue's acceptance: train, export, evaluate the file and the run alike."""
    run = tmp_path / "R"
    train = run_drl("train", "ppo", "CartPole-v1", "--run-dir", str(run), "--total-steps", "8192", cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    exported = run_drl("export", str(run), "--out", str(tmp_path / "p.onnx"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith(f"wrote {tmp_path / 'p.onnx'} (onnx, ppo on CartPole-v1")
    by_file = run_drl(
        "eval", str(run), "--policy", str(tmp_path / "p.onnx"), "--episodes", "20", "--json", cwd=tmp_path
    )
    by_run = run_drl("eval", str(run), "--episodes", "20", "--json", cwd=tmp_path)
    assert by_file.returncode == 0 and by_run.returncode == 0, by_file.stderr + by_run.stderr
    file_report, run_report = json.loads(by_file.stdout), json.loads(by_run.stdout)
    assert file_report["returns"] == run_report["returns"]
    assert file_report["mean_return"] == run_report["mean_return"]
    assert file_report["policy"] == str(tmp_path / "p.onnx")


def test_export_and_policy_errors_are_one_line(tmp_path):
    missing = run_drl("export", str(tmp_path / "nothing"), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "no run directory or checkpoint file" in missing.stderr

    run = tmp_path / "R"
    assert (
        run_drl("train", "ppo", "CartPole-v1", "--run-dir", str(run), "--total-steps", "256", cwd=tmp_path).returncode
        == 0
    )
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    junk = run_drl("eval", str(run), "--policy", str(tmp_path / "junk.onnx"), "--episodes", "1", cwd=tmp_path)
    assert junk.returncode == 2 and junk.stderr.count("\n") == 1, junk.stderr
    assert "is not a readable ONNX file" in junk.stderr
    (tmp_path / "junk.pt2").write_bytes(b"not a program")
    junk = run_drl("eval", str(run), "--policy", str(tmp_path / "junk.pt2"), "--episodes", "1", cwd=tmp_path)
    assert junk.returncode == 2 and junk.stderr.count("\n") == 1, junk.stderr
    assert "is not a .pt2 file written by drl export" in junk.stderr

    stochastic = run_drl("eval", str(run), "--policy", str(tmp_path / "junk.onnx"), "--stochastic", cwd=tmp_path)
    assert stochastic.returncode == 2 and "deterministic policy" in stochastic.stderr


def test_export_without_the_extra_says_which_to_install(tmp_path):
    code = (
        "import sys; sys.modules['onnxscript'] = None; from runners.cli import main; "
        f"sys.exit(main(['export', {str(tmp_path)!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=drl_env(), timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"drl: error: {EXPORT_EXTRA}"
