"""The hand-written backward passes (networks/manual.py) and SAC's fused update against autograd."""

import copy
import os
import platform
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from torch import nn

from agents.config import ConfigError
from agents.off_policy import adam_step
from agents.sac import SAC, SACConfig, update_dtype
from networks import NetworkConfig
from networks.encoders import EnsembleLinear
from networks.manual import ManualMLP
from runners.precision import bf16_matmul_mode, cpu_matmul_precision, denormals_flushed
from runners.replay import ReplayBuffer

PENDULUM = gym.make("Pendulum-v1")
PENDULUM_SPACES = (PENDULUM.observation_space, PENDULUM.action_space, 1)


def random_mlp(members: int, sizes: list[int], linear_last: bool) -> list[nn.Module]:
    """EnsembleLinear layers (the last an nn.Linear when `linear_last`, as the SAC actor's head)."""
    widths = zip(sizes[:-2], sizes[1:-1], strict=True)
    layers: list[nn.Module] = [EnsembleLinear(members, a, b, ortho_gain=None) for a, b in widths]
    if linear_last:
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
    else:
        layers.append(EnsembleLinear(members, sizes[-2], sizes[-1], ortho_gain=None))
    for layer in layers:  # non-zero biases, so their gradients and the bias path are tested too
        nn.init.uniform_(layer.bias, -0.5, 0.5)
    return layers


def autograd_forward(layers: list[nn.Module], x: torch.Tensor, activation: str) -> torch.Tensor:
    act = {"relu": torch.relu, "tanh": torch.tanh}[activation]
    h = x
    for i, layer in enumerate(layers):
        ensemble = isinstance(layer, EnsembleLinear)
        h = layer(h.expand(layer.weight.shape[0], *h.shape[-2:]) if ensemble else h)
        if i < len(layers) - 1:
            h = act(h)
    return h


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("members, linear_last", [(2, False), (1, True), (3, False)])
def test_manual_mlp_matches_autograd(activation, members, linear_last):
    torch.manual_seed(0)
    layers = random_mlp(members, [5, 16, 12, 3], linear_last)
    x = torch.randn(7, 5, requires_grad=True)
    grad_out = torch.randn(members, 7, 3)

    reference = autograd_forward(layers, x, activation)
    (reference * grad_out).sum().backward()
    expected = {name: p.grad.clone() for name, p in nn.ModuleList(layers).named_parameters()}
    expected_input = x.grad.clone()
    for p in nn.ModuleList(layers).parameters():
        p.grad = torch.full_like(p, 99.0)  # backward must overwrite, not accumulate

    mlp = ManualMLP(layers, activation)
    out, tape = mlp.forward(x.detach())
    assert torch.allclose(out, reference, atol=1e-6)
    grad_input = mlp.backward(tape, grad_out, input_columns=slice(2, None))
    for name, p in nn.ModuleList(layers).named_parameters():
        assert torch.allclose(p.grad, expected[name], atol=1e-5), name
    # the input is shared by the members: its gradient is the members' sum
    assert torch.allclose(grad_input.sum(0), expected_input[:, 2:], atol=1e-5)
    # params=False leaves the parameters' gradients alone
    before = [p.grad.clone() for p in nn.ModuleList(layers).parameters()]
    mlp.backward(tape, torch.randn(members, 7, 3), params=False, input_columns=slice(None))
    assert all(torch.equal(b, p.grad) for b, p in zip(before, nn.ModuleList(layers).parameters(), strict=True))


BF16_MODES = [False] + ([True] if bf16_matmul_mode() else [])  # the matmul mode needs a CPU with AMX


def test_bf16_matmul_mode_rounds_operands_to_bfloat16_and_leaves_the_setting_alone():
    precision = cpu_matmul_precision()
    bf16_matmul_mode.cache_clear()
    available = bf16_matmul_mode()
    assert cpu_matmul_precision() == precision
    if not available:
        pytest.skip("oneDNN's bf16 matmul mode is not plain bfloat16 on this CPU")
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 64, 256, generator=g), torch.randn(2, 256, 32, generator=g)
    rounded = torch.bmm(a.bfloat16().double(), b.bfloat16().double())
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    try:
        product = torch.bmm(a, b)
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = precision
    assert torch.allclose(product.double(), rounded, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(torch.bmm(a, b).double(), rounded, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "products, fast_path, plain_bf16",
    [([256.256] * 4, True, False), ([256.0] * 4, False, True), ([256.256, 256.0, 256.0, 256.0], False, False)],
    ids=["float32-accurate", "plain-bfloat16", "mixed"],
)
def test_the_bf16_mode_checks_tell_float32_accurate_from_plain_bfloat16(products, fast_path, plain_bf16, monkeypatch):
    import runners.precision as precision

    monkeypatch.setattr(precision, "_products_in_bf16_mode", lambda: products)
    before = cpu_matmul_precision()
    try:
        assert precision.enable_fast_cpu_matmul() is fast_path
        assert cpu_matmul_precision() == ("bf16" if fast_path else before)
    finally:
        precision.restore_cpu_matmul_precision(before)
    precision.bf16_matmul_mode.cache_clear()
    try:
        assert precision.bf16_matmul_mode() is plain_bf16
    finally:
        precision.bf16_matmul_mode.cache_clear()


@pytest.mark.parametrize("bf16_mode", BF16_MODES, ids=lambda mode: "matmul-mode" if mode else "cast-copies")
def test_manual_mlp_in_bfloat16_runs_hidden_layers_in_bfloat16_and_stays_close(bf16_mode):
    torch.manual_seed(0)
    layers = random_mlp(2, [4, 256, 256, 1], linear_last=False)
    x = torch.randn(64, 4)
    mlp = ManualMLP(layers, "relu", torch.bfloat16, bf16_mode=bf16_mode)
    assert mlp.math == [torch.float32, torch.bfloat16, torch.float32]  # narrow layers stay float32
    assert mlp.dtypes == [torch.float32, torch.float32 if bf16_mode else torch.bfloat16, torch.float32]
    assert mlp.describe() == ("bfloat16 (matmul mode)" if bf16_mode else "bfloat16 (cast copies)")
    assert ManualMLP(layers, "relu").describe() == "float32"
    precision = cpu_matmul_precision()
    out, tape = mlp.forward(x)
    reference = autograd_forward(layers, x, "relu")
    assert out.dtype == torch.float32
    assert torch.allclose(out, reference, rtol=0.02, atol=0.02)
    assert not torch.allclose(out, ManualMLP(layers, "relu").forward(x)[0], rtol=1e-4, atol=1e-4)  # not float32
    mlp.backward(tape, torch.randn(2, 64, 1), input_columns=slice(None))
    assert cpu_matmul_precision() == precision  # the matmul mode is switched back
    with torch.no_grad():
        layers[1].weight.mul_(2)
    if not bf16_mode:  # refresh() re-casts the copies after the float32 master weights change
        assert not torch.allclose(mlp.forward(x)[0], autograd_forward(layers, x, "relu"), atol=0.02)
        mlp.refresh()
    assert torch.allclose(mlp.forward(x)[0], autograd_forward(layers, x, "relu"), rtol=0.02, atol=0.02)


def filled_buffer(seed: int = 0) -> ReplayBuffer:
    """Pendulum-shaped transitions with terminations, so the bootstrap mask matters."""
    g = torch.Generator().manual_seed(seed)
    space = PENDULUM
    buffer = ReplayBuffer(1000, 1, space.observation_space, space.action_space, "cpu")
    for _ in range(600):
        buffer.add(
            torch.randn(1, 3, generator=g),
            torch.rand(1, 1, generator=g) * 4 - 2,
            torch.randn(1, generator=g),
            torch.rand(1, generator=g) < 0.1,
            torch.zeros(1, dtype=torch.bool),
            torch.randn(1, 3, generator=g),
        )
    return buffer


def make_sac(**overrides) -> SAC:
    torch.manual_seed(1)
    net = NetworkConfig(hidden_sizes=(64, 64), activation="relu", ortho_init=False)
    cfg = SACConfig(learning_rate=1e-3, network=net)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return SAC(cfg, *PENDULUM_SPACES, seed=3)


def named_grads(agent: SAC) -> dict[str, torch.Tensor]:
    grads = {f"actor.{n}": p.grad for n, p in agent.actor.named_parameters()}
    grads.update({f"critic.{n}": p.grad for n, p in agent.critic.named_parameters()})
    if agent.tune_alpha:
        grads["log_alpha"] = agent.log_alpha.grad
    return grads


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"ent_coef": 0.2},
        {"n_critics": 3, "target_update_interval": 2},
        {"network": NetworkConfig(hidden_sizes=(32, 48), activation="tanh", ortho_init=False)},
    ],
    ids=["tuned-alpha", "fixed-alpha", "three-critics", "tanh"],
)
def test_fused_sac_update_equals_the_autograd_update(overrides):
    fused, reference = make_sac(**overrides), make_sac(fused_update=False, **overrides)
    assert fused.fused is not None and reference.fused is None
    buffer = filled_buffer()
    for steps in (1, 1, 3):  # the first step creates the optimisers' state, later ones skip optimizer.step()
        m_fused, m_ref = fused.train(buffer, steps, 0.0, 0), reference.train(buffer, steps, 0.0, 0)
        for key in m_ref:
            assert float(m_fused[key]) == pytest.approx(float(m_ref[key]), rel=1e-5, abs=1e-6), key
        # the last step's gradients
        ref_grads = named_grads(reference)
        for name, grad in named_grads(fused).items():
            assert torch.allclose(grad, ref_grads[name], rtol=1e-4, atol=1e-6), name
    for module in ("actor", "critic", "critic_target"):
        pairs = zip(getattr(fused, module).named_parameters(), getattr(reference, module).parameters(), strict=True)
        for (name, a), b in pairs:
            # Adam divides by sqrt(v): where a gradient is ~0, rounding differences grow to ~lr
            assert torch.allclose(a, b, atol=1e-5), f"{module}.{name}"
    assert torch.allclose(fused.log_alpha, reference.log_alpha)
    assert fused.gradient_steps == reference.gradient_steps == 5


@pytest.mark.parametrize("bf16_mode", BF16_MODES, ids=lambda mode: "matmul-mode" if mode else "cast-copies")
def test_fused_sac_update_in_bfloat16_follows_the_float32_gradients(bf16_mode, monkeypatch):
    monkeypatch.setattr("networks.manual.bf16_matmul_mode", lambda: bf16_mode)
    torch.manual_seed(0)
    mixed, reference = make_sac(update_dtype="bfloat16"), make_sac(fused_update=False)
    buffer = filled_buffer()
    m_mixed, m_ref = mixed.train(buffer, 1, 0.0, 0), reference.train(buffer, 1, 0.0, 0)
    for key in m_ref:
        assert float(m_mixed[key]) == pytest.approx(float(m_ref[key]), rel=0.02, abs=0.01), key
    ref_grads = named_grads(reference)
    for name, grad in named_grads(mixed).items():
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), ref_grads[name].flatten(), dim=0)
        assert cosine > 0.99, (name, float(cosine))


def test_sac_falls_back_to_autograd_where_the_fused_update_does_not_apply():
    agent = SAC(SACConfig(), gym.spaces.Discrete(5), PENDULUM.action_space, 1)
    assert agent.fused is None  # one-hot observations
    with pytest.raises(ConfigError, match="update-dtype bfloat16 needs the fused update"):
        SAC(SACConfig(update_dtype="bfloat16"), gym.spaces.Discrete(5), PENDULUM.action_space, 1)
    with pytest.raises(ConfigError, match="needs the fused update"):
        SAC(SACConfig(update_dtype="bfloat16", fused_update=False), *PENDULUM_SPACES)


def test_update_dtype_auto_follows_the_cpu(monkeypatch):
    assert update_dtype("float32", torch.device("cpu")) == torch.float32
    assert update_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    assert update_dtype("auto", torch.device("cuda")) == torch.float32
    cases = ((True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, torch.float32))
    for avx512_bf16, amx, expected in cases:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert update_dtype("auto", torch.device("cpu")) == expected


def test_adam_step_equals_optimizer_step():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 5)), nn.Parameter(torch.randn(5)), nn.Parameter(torch.tensor(0.3))]
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    opt = torch.optim.Adam(params, lr=1e-2, fused=True)
    twin_opt = torch.optim.Adam(twins, lr=1e-2, fused=True)
    for step in range(4):
        grads = [torch.randn_like(p) for p in params]
        if step == 2:
            grads[1] = torch.zeros_like(grads[1])
        for p, q, g in zip(params, twins, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        adam_step(opt)
        twin_opt.step()
        for p, q in zip(params, twins, strict=True):
            assert torch.equal(p, q)
    for p, q in zip(params, twins, strict=True):
        assert torch.equal(opt.state[p]["exp_avg_sq"], twin_opt.state[q]["exp_avg_sq"])
        assert float(opt.state[p]["step"]) == float(twin_opt.state[q]["step"]) == 4
    # the step counts are views of one tensor; torch's own step, a checkpoint round trip and a
    # parameter left out of a step all keep counting each parameter's steps
    restored = torch.optim.Adam(params, lr=1e-2, fused=True)
    for step in range(3):
        if step == 1:
            restored.load_state_dict(copy.deepcopy(opt.state_dict()))
        grads = [torch.randn_like(p) for p in params]
        grads[2] = None if step == 2 else grads[2]
        for p, q, g in zip(params, twins, grads, strict=True):
            p.grad, q.grad = (None, None) if g is None else (g.clone(), g.clone())
        opt.step() if step == 0 else adam_step(restored)
        twin_opt.step()
        for p, q in zip(params, twins, strict=True):
            assert torch.equal(p, q)
    counts = [float(restored.state[p]["step"]) for p in params]
    assert counts == [float(twin_opt.state[q]["step"]) for q in twins] == [7, 7, 6]


def test_flushing_denormals_zeroes_them_in_the_calling_thread():
    try:
        assert torch.set_flush_denormal(True)  # x86 has it
        assert float(torch.tensor(1e-39) * 1.0) == 0.0  # a 0-d op runs on this thread
        assert denormals_flushed() > 0.0  # this thread's share of a parallel op at least
        torch.set_flush_denormal(False)
        assert float(torch.tensor(1e-39) * 1.0) > 0.0
        assert denormals_flushed() < 1.0  # worker threads keep the mode they started with
    finally:
        torch.set_flush_denormal(False)


@pytest.mark.parametrize("flush", [True, False])
def test_a_run_flushes_denormals_unless_told_not_to(flush):
    from runners.config import TrainConfig
    from runners.trainer import Trainer

    torch.set_flush_denormal(False)
    try:
        train = TrainConfig(algo="sac", env_id="Pendulum-v1", total_steps=10, flush_denormal=flush, progress=False)
        Trainer(train, SACConfig()).env.close()
        assert (float(torch.tensor(1e-39) * 1.0) == 0.0) == flush
    finally:
        torch.set_flush_denormal(False)


def test_exploration_draws_the_action_sample_would_draw():
    agent = make_sac()
    obs = torch.randn(5, 3)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    with torch.no_grad():
        assert torch.equal(agent.actor.sample_action(obs, g1), agent.actor.sample(obs, g2)[0])
    assert torch.equal(g1.get_state(), g2.get_state())
    # the fused update's exploration (plain tensor calls) draws the same actions as the modules'
    assert agent.fused is not None
    agent.generator.manual_seed(11)
    explored = agent.explore(obs, 0.5)
    with torch.no_grad():
        expected = agent.to_env(agent.actor.sample_action(obs, torch.Generator().manual_seed(11)))
    assert torch.equal(explored, expected)


MMAP_SCRIPT = """
import ctypes, sys
import torch
from runners.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in names.split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory()
mapped = libc.mallinfo2().hblkhd
x = torch.ones(4 << 20)  # 16 MiB
print(libc.mallinfo2().hblkhd - mapped >= x.nbytes)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
@pytest.mark.parametrize("keep", [True, False])
def test_keeping_freed_memory_serves_tensors_from_the_heap(keep):
    """glibc maps a fresh 16 MiB block for a 16 MiB tensor (its mmap threshold starts at 128 KiB)
    and unmaps it when it is freed; with keep_freed_memory the tensor comes from the heap, whose
    freed memory the process keeps for the next tensors (no page faults to fault it in again)."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", MMAP_SCRIPT, "keep" if keep else "default"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split()[-1] == ("False" if keep else "True")


@pytest.mark.parametrize("keep", [True, False])
def test_a_run_keeps_freed_memory_unless_told_not_to(keep, monkeypatch):
    import runners.trainer
    from runners.config import TrainConfig

    calls = []
    monkeypatch.setattr(runners.trainer, "keep_freed_memory", lambda: calls.append(True) or True)
    train = TrainConfig(algo="sac", env_id="Pendulum-v1", total_steps=10, keep_freed_memory=keep, progress=False)
    runners.trainer.Trainer(train, SACConfig()).env.close()
    assert calls == ([True] if keep else [])


@pytest.mark.parametrize(
    "overrides",
    [{}, {"ent_coef": 0.2, "n_critics": 3, "network": NetworkConfig(hidden_sizes=(32, 48), activation="tanh")}],
    ids=["tuned-alpha", "fixed-alpha-three-tanh-critics"],
)
def test_compiled_sac_update_equals_the_autograd_update(overrides):
    """The whole step as one torch.compile graph (agents/sac_graph.py), float32: the same losses
    and parameters as autograd's, its Adam state and step counts included."""
    compiled, reference = make_sac(compile_update=True, **overrides), make_sac(fused_update=False, **overrides)
    buffer = filled_buffer()
    for steps in (1, 1, 3):  # the first step creates the optimisers' state, uncompiled
        m_compiled, m_ref = compiled.train(buffer, steps, 0.0, 0), reference.train(buffer, steps, 0.0, 0)
        for key in m_ref:
            assert float(m_compiled[key]) == pytest.approx(float(m_ref[key]), rel=1e-5, abs=1e-6), key
    assert compiled.fused.graph is not None and compiled.fused.graph.compile_seconds is not None  # it ran compiled
    for module in ("actor", "critic", "critic_target"):
        pairs = zip(getattr(compiled, module).named_parameters(), getattr(reference, module).parameters(), strict=True)
        for (name, a), b in pairs:
            assert torch.allclose(a, b, atol=1e-5), f"{module}.{name}"
    assert torch.allclose(compiled.log_alpha, reference.log_alpha)
    for name in ("critic_optimizer", "actor_optimizer"):
        states = getattr(compiled, name).state_dict()["state"]
        ref_states = getattr(reference, name).state_dict()["state"]
        for i, state in states.items():
            assert float(state["step"]) == float(ref_states[i]["step"]) == 5
            assert torch.allclose(state["exp_avg_sq"], ref_states[i]["exp_avg_sq"], rtol=1e-4, atol=1e-10)
    assert compiled.gradient_steps == reference.gradient_steps == 5


def test_compiled_sac_update_in_bfloat16_follows_the_float32_update():
    """The preset's configuration (bfloat16 hidden layers, cast inside the graph): one compiled
    step's losses and parameter changes against autograd's float32 step."""
    mixed, reference = make_sac(compile_update=True, update_dtype="bfloat16"), make_sac(fused_update=False)
    buffer = filled_buffer()
    mixed.train(buffer, 1, 0.0, 0), reference.train(buffer, 1, 0.0, 0)  # uncompiled: creates Adam's state

    def params(agent: SAC) -> list[torch.Tensor]:
        return [*agent.actor.parameters(), *agent.critic.parameters()]

    before = [p.detach().clone() for p in params(mixed)]
    ref_before = [p.detach().clone() for p in params(reference)]
    m_mixed, m_ref = mixed.train(buffer, 1, 0.0, 0), reference.train(buffer, 1, 0.0, 0)
    assert mixed.fused.graph.compile_seconds is not None
    for key in m_ref:
        assert float(m_mixed[key]) == pytest.approx(float(m_ref[key]), rel=0.02, abs=0.01), key
    for p, start, q, ref_start in zip(params(mixed), before, params(reference), ref_before, strict=True):
        cosine = torch.nn.functional.cosine_similarity((p - start).flatten(), (q - ref_start).flatten(), dim=0)
        assert cosine > 0.95, float(cosine)


def test_compiled_sac_update_falls_back_to_the_fused_update_where_compiling_fails():
    agent = make_sac(compile_update=True)
    buffer = filled_buffer()
    agent.train(buffer, 1, 0.0, 0)  # uncompiled: creates the optimisers' state

    def no_compiler(*args):
        raise RuntimeError("C++ compile error\ncompiler not found")

    agent.fused.graph.step = no_compiler
    before = [p.detach().clone() for p in agent.critic.parameters()]
    with pytest.warns(RuntimeWarning, match=r"compiling SAC's update failed \(RuntimeError: C\+\+ compile error\); "):
        metrics = agent.train(buffer, 2, 0.0, 0)
    assert agent.fused.graph is None and agent.gradient_steps == 3
    assert all(torch.isfinite(torch.as_tensor(v)) for v in metrics.values())
    assert not any(torch.equal(a, b) for a, b in zip(before, agent.critic.parameters(), strict=True))


def test_compile_update_applies_to_the_fused_update_only():
    """A preset's compile_update does not stand in the way of --no-fused-update (autograd)."""
    agent = SAC(SACConfig(compile_update=True, fused_update=False), *PENDULUM_SPACES)
    assert agent.fused is None
    assert make_sac(compile_update=True).fused.graph is not None
    assert make_sac().fused.graph is None


def test_compiled_sac_update_continues_from_a_loaded_checkpoint():
    """A checkpoint load replaces the optimisers' state tensors: the compiled step must update
    the loaded ones, and continue exactly as the run that saved them did."""
    agent, buffer = make_sac(compile_update=True), filled_buffer()
    agent.train(buffer, 3, 0.0, 0)
    saved = copy.deepcopy(agent.state_dict())
    agent.train(buffer, 2, 0.0, 0)
    expected = [p.detach().clone() for p in agent.actor.parameters()]
    expected_steps = agent.critic_optimizer.state_dict()["state"][0]["step"].clone()
    agent.load_state_dict(copy.deepcopy(saved))
    assert not torch.equal(next(agent.actor.parameters()), expected[0])
    agent.train(buffer, 2, 0.0, 0)
    assert all(torch.equal(a, b) for a, b in zip(agent.actor.parameters(), expected, strict=True))
    assert torch.equal(agent.critic_optimizer.state_dict()["state"][0]["step"], expected_steps)
