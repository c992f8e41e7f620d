"""`--compile`: the compiled gradient step computes what the eager one computes, for every
algorithm, and a compile failure falls back to the eager step with a warning."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
import torch

from agents import ALGORITHMS, Progress, Transitions
from agents import optim as optim_module
from networks import NetworkConfig

OBS = gym.spaces.Box(-1.0, 1.0, (3,))
SPACES = {"discrete": gym.spaces.Discrete(2), "box": gym.spaces.Box(-2.0, 2.0, (1,))}


def agent_pair(algo: str):
    spec = ALGORITHMS[algo]
    action_space = SPACES["discrete" if issubclass(gym.spaces.Discrete, spec.action_spaces) else "box"]
    agents = []
    for compile in (False, True):
        cfg = spec.config_cls()
        cfg.network = NetworkConfig(**{**cfg.network.__dict__, "hidden_sizes": (16, 16)})
        if spec.kind == "on_policy":
            cfg.n_steps, cfg.lr_schedule = 4, "linear"  # a schedule: the compiled step must follow it
        torch.manual_seed(0)
        agents.append(spec.make_agent(cfg, OBS, action_space, 2, torch.device("cpu"), 0, compile=compile))
    return spec, action_space, agents


def transitions(action_space: gym.Space, seed: int, B: int = 32) -> Transitions:
    g = torch.Generator().manual_seed(seed)
    if isinstance(action_space, gym.spaces.Discrete):
        actions = torch.randint(0, 2, (B,), generator=g)
    else:
        actions = torch.rand((B, 1), generator=g) * 4 - 2
    weights = torch.rand(B, generator=g)
    obs, next_obs = torch.randn(B, 3, generator=g), torch.randn(B, 3, generator=g)
    discounts = torch.where(torch.rand(B, generator=g) < 0.2, 0.0, 0.99)
    return Transitions(obs, actions, torch.randn(B, generator=g), discounts, next_obs, weights, torch.arange(B))


def rollout(agent, action_space: gym.Space, seed: int, T: int = 4, N: int = 2):
    from agents import Rollout

    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, N, 3, generator=g)
    with torch.no_grad():
        out = agent.act(obs.flatten(0, 1), generator=torch.Generator().manual_seed(seed))
    actions = out.action.view(T, N, *out.action.shape[1:])
    values = out.value.view(T, N)
    done = torch.rand(T, N, generator=g) < 0.2
    return Rollout(
        obs,
        actions,
        out.log_prob.view(T, N),
        values,
        torch.randn(T, N, generator=g),
        done,
        torch.zeros(T, N, dtype=torch.bool),
        torch.randn(T, N, generator=g),
        final_obs=torch.randn(T, N, 3, generator=g),  # as the collector fills them (APPO re-values them)
        last_obs=torch.randn(N, 3, generator=g),
    )


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_the_compiled_step_computes_what_the_eager_step_computes(algo):
    spec, action_space, (eager, compiled) = agent_pair(algo)
    for step, done in enumerate((100, 200, 300, 1000)):  # the last at the schedule's end (learning rate 0)
        progress = Progress(done, 1000)
        if spec.kind == "on_policy":
            batch = rollout(eager, action_space, step)
            out = [agent.update(batch, progress) for agent in (eager, compiled)]
        else:
            batch = transitions(action_space, step)
            out = [agent.update(batch, progress)[0] for agent in (eager, compiled)]
        for key, value in out[0].items():
            assert float(out[1][key]) == pytest.approx(float(value), rel=1e-4, abs=1e-5), key
    a, b = eager.state_dict(), compiled.state_dict()
    for name, tensor in (("net", a.get("net")), *((k, a[k]) for k in ("critic", "actor", "q_net") if k in a)):
        if tensor is None:
            continue
        for key, value in tensor.items():
            torch.testing.assert_close(b[name][key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_a_compiled_step_at_learning_rate_0_moves_no_parameter(kind):
    # The last update of a linear schedule runs at learning rate 0. Compiled, torch's Adam with a
    # tensor learning rate divides by it: a weight whose gradient was always 0 became NaN
    # (pytorch/pytorch#126514; native CartPole PPO with --compile ended every run "diverged").
    def make(compile: bool):
        w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        lr = torch.tensor(1e-3) if compile else 1e-3
        if kind == "adam":
            opt = optim_module.adam([w], lr, torch.device("cpu"), compile)
        else:
            opt = torch.optim.RMSprop([w], lr=lr, foreach=not compile)
            optim_module.materialize_state(opt)

        def step(x):
            optim_module.descend(opt, (w * x).sum())

        return w, opt, optim_module.compiled(step, compile, torch.device("cpu"))

    x = torch.tensor([1.0, 0.0])  # no gradient ever reaches w[1]: its second moment stays 0
    runs = [make(compile) for compile in (False, True)]
    torch.set_flush_denormal(True)  # as `drl train` does by default: a denormal step size is 0
    try:
        for w, opt, step in runs:
            step(x)
            step(x)
            optim_module.set_learning_rate(opt, 0.0)
            before = w.detach().clone()
            step(x)
            assert torch.equal(w.detach(), before), (kind, w)
    finally:
        torch.set_flush_denormal(False)  # (this process's default)
    torch.testing.assert_close(runs[1][0].detach(), runs[0][0].detach())
    eager_state, compiled_state = (r[1].state_dict()["state"][0] for r in runs)
    for key, value in eager_state.items():
        assert torch.equal(compiled_state[key], value), key


def test_a_failed_compile_warns_and_runs_the_eager_step(monkeypatch):
    def broken(fn, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("no C++ compiler\nsecond line")

        return fail

    monkeypatch.setattr(optim_module.torch, "compile", broken)
    spec, action_space, (eager, compiled) = agent_pair("dqn")
    batch = transitions(action_space, 0)
    with pytest.warns(
        RuntimeWarning, match="compiling DQN.gradient_step failed .RuntimeError: no C\\+\\+ compiler.; continuing"
    ):
        compiled.update(batch, Progress(10, 100))
    eager.update(batch, Progress(10, 100))
    for p, q in zip(eager.q_net.parameters(), compiled.q_net.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the next steps run eagerly without another word
        compiled.update(batch, Progress(20, 100))
