"""Heads against torch.distributions, ensemble layers against plain matmuls, the space builder."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from networks import NetworkConfig, UnsupportedSpaceError, build_actor_critic
from networks.encoders import BFLOAT16_MIN_ROWS, NARROW, EnsembleLinear, Linear, MLPEncoder
from networks.heads import CategoricalHead, DiagGaussianHead
from networks.precision import native_bfloat16


def test_categorical_head_matches_torch_distribution():
    head = CategoricalHead(3, 4)
    logits = torch.randn(5, 4)
    actions = torch.tensor([0, 1, 2, 3, 1])
    reference = torch.distributions.Categorical(logits=logits)
    assert torch.allclose(head.log_prob(logits, actions), reference.log_prob(actions), atol=1e-6)
    assert torch.allclose(head.entropy(logits), reference.entropy(), atol=1e-6)
    log_prob, entropy = head.log_prob_entropy(logits, actions)
    assert torch.allclose(log_prob, reference.log_prob(actions), atol=1e-6)
    assert torch.allclose(entropy, reference.entropy(), atol=1e-6)
    assert head.mode(logits).tolist() == logits.argmax(-1).tolist()


def test_categorical_sampling_frequencies_follow_the_probabilities():
    head = CategoricalHead(1, 3)
    probs = torch.tensor([0.1, 0.2, 0.7])
    logits = probs.log().expand(200_000, 3)
    samples = head.sample(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(samples, minlength=3).float() / samples.numel()
    assert torch.allclose(freq, probs, atol=0.005)


def test_gaussian_head_matches_torch_distribution():
    head = DiagGaussianHead(3, 2, log_std_init=-0.5)
    mean = torch.randn(6, 2)
    actions = torch.randn(6, 2)
    reference = torch.distributions.Normal(mean, torch.exp(head.log_std))
    assert torch.allclose(head.log_prob(mean, actions), reference.log_prob(actions).sum(-1), atol=1e-5)
    assert torch.allclose(head.entropy(mean), reference.entropy().sum(-1), atol=1e-5)
    samples = head.sample(mean[:1].expand(100_000, 2), torch.Generator().manual_seed(1))
    assert torch.allclose(samples.mean(0), mean[0], atol=0.01)
    assert torch.allclose(samples.std(0), torch.exp(head.log_std).detach(), atol=0.01)


def test_ensemble_linear_equals_separate_linear_layers():
    layer = EnsembleLinear(3, 4, 5)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 7, 4)
    out = layer(x)
    for k in range(3):
        assert torch.allclose(out[k], x[k] @ layer.weight[k] + layer.bias[k], atol=1e-6)


def test_orthogonal_init_gain_per_member():
    layer = EnsembleLinear(2, 4, 64, ortho_gain=np.sqrt(2))
    for k in range(2):
        w = layer.weight[k].detach()  # [in, out]: the rows of nn.Linear's [out, in] are orthogonal
        assert torch.allclose(w @ w.T, 2.0 * torch.eye(4), atol=1e-5)


def test_mlp_members_are_independent_trunks():
    encoder = MLPEncoder(3, (8, 8), members=2)
    out = encoder(torch.randn(5, 3))
    assert out.shape == (2, 5, 8)
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize(
    "layer, x",
    [
        (EnsembleLinear(2, 64, 1, ortho_gain=None), torch.randn(2, 16, 64)),  # a critic's Q-value out
        (EnsembleLinear(2, 4, 64), torch.randn(2, 16, 4)),  # a critic's observation and action in
        (Linear(64, 2), torch.randn(16, 64)),  # an actor's head
        (Linear(64, 2), torch.randn(3, 16, 64)),  # ... on a [T, B] sequence
        (EnsembleLinear(2, 64, NARROW + 1), torch.randn(2, 16, 64)),  # wide enough for a matmul
    ],
)
def test_narrow_layers_compile_to_a_product_and_a_sum_with_the_matmuls_values(layer, x):
    graphs = []

    def capture(gm, example_inputs):  # a torch.compile backend that runs the captured graph as it is
        graphs.append(gm)
        return gm.forward

    x.requires_grad_(True)

    def loss(x):
        return layer(x).square().sum()

    compiled_loss = torch.compile(loss, backend=capture, fullgraph=True)
    eager = torch.autograd.grad(loss(x), [x, *layer.parameters()])
    torch.testing.assert_close(compiled_loss(x), loss(x))
    compiled = torch.autograd.grad(compiled_loss(x), [x, *layer.parameters()])
    for c, e in zip(compiled, eager, strict=True):
        torch.testing.assert_close(c, e)
    (graph,) = graphs
    called = {str(node.target) for node in graph.graph.nodes if node.op in ("call_function", "call_method")}
    matmuls = {target for target in called if "mm" in target or "linear" in target}
    narrow = min(layer.weight.shape[-2:]) <= NARROW
    assert bool(matmuls) != narrow, called


def test_mlp_precisions_give_the_float32_features():
    # bfloat16 autocast keeps about three significant digits of features and gradients, and
    # float32 weights; auto decides when the trunk is moved to its device, before any forward
    torch.manual_seed(0)
    reference = MLPEncoder(3, (256, 256), "relu", members=2)
    x = torch.randn(64, 3)
    want = reference(x)
    want.square().mean().backward()
    for precision in ("bfloat16", "auto"):
        net = MLPEncoder(3, (256, 256), "relu", members=2, precision=precision)
        net.load_state_dict(reference.state_dict())
        net.to("cpu")
        assert net.arithmetic == ("float32" if precision == "auto" and not native_bfloat16(x.device) else "bfloat16")
        got = net(x)
        assert got.dtype == torch.float32 and all(p.dtype == torch.float32 for p in net.parameters())
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.02 * float(want.abs().max()))
        if net.arithmetic == "bfloat16":
            assert not torch.equal(got, want)  # computed otherwise
        few = x[: BFLOAT16_MIN_ROWS - 1]  # (an env step's action) in float32
        assert torch.equal(net(few), reference(few))
        got.square().mean().backward()
        for a, b in zip(net.parameters(), reference.parameters(), strict=True):
            cosine = torch.nn.functional.cosine_similarity(a.grad.flatten(), b.grad.flatten(), dim=0)
            assert cosine > 0.99, (precision, float(cosine))
    with pytest.raises(ValueError, match="precision must be one of"):
        MLPEncoder(3, (8,), precision="float16")


@pytest.mark.parametrize("in_dim", [3, 17])  # a first layer narrow (NARROW) or not
def test_bfloat16_trunk_computes_what_autocast_computes(in_dim):
    # the trunk writes autocast's casts out (a graph holding autocast misses torch.compile's
    # AOTAutograd cache); its features and gradients are autocast's bit for bit
    torch.manual_seed(0)
    net = MLPEncoder(in_dim, (256, 256), "relu", members=2, precision="bfloat16")
    x = torch.randn(64, in_dim)
    reference = MLPEncoder(in_dim, (256, 256), "relu", members=2)  # float32, run under autocast
    reference.load_state_dict(net.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = reference(x).float()
    got = net(x)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    for a, b in zip(
        torch.autograd.grad(got.square().sum(), list(net.parameters())),
        torch.autograd.grad(want.square().sum(), list(reference.parameters())),
        strict=True,
    ):
        assert a.dtype == torch.float32 and torch.equal(a, b)


@pytest.mark.parametrize(
    "obs_space, action_space",
    [
        (gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2)),
        (gym.spaces.Box(-1, 1, (3, 2)), gym.spaces.Box(-2, 2, (3,))),
        (gym.spaces.Discrete(5, start=1), gym.spaces.Discrete(3)),
    ],
)
@pytest.mark.parametrize("share", [False, True])
def test_builder_shapes_and_gradients(obs_space, action_space, share):
    net = build_actor_critic(obs_space, action_space, NetworkConfig(hidden_sizes=(16, 16), share_encoder=share))
    obs = torch.as_tensor(np.stack([obs_space.sample() for _ in range(6)]))
    out = net.act(obs, generator=torch.Generator().manual_seed(0))
    assert out.action.shape == (6, *action_space.shape)
    assert out.log_prob.shape == (6,) and out.value.shape == (6,)
    log_prob, entropy, value = net.evaluate(obs, out.action)
    assert torch.allclose(log_prob, out.log_prob, atol=1e-6)
    (log_prob.mean() + entropy.mean() + value.mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_separate_trunks_do_not_share_gradients():
    net = build_actor_critic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), NetworkConfig(hidden_sizes=(8,)))
    net.value(torch.randn(5, 4)).sum().backward()
    trunk = net.encoder.net[0]
    assert trunk.weight.grad[0].abs().sum() == 0  # the actor's trunk
    assert trunk.weight.grad[1].abs().sum() > 0  # the critic's trunk


def test_unsupported_spaces_raise():
    cfg = NetworkConfig()
    with pytest.raises(UnsupportedSpaceError, match="action space"):
        build_actor_critic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.MultiBinary(3), cfg)
    with pytest.raises(UnsupportedSpaceError, match="observation space"):
        build_actor_critic(gym.spaces.Tuple([gym.spaces.Discrete(2)]), gym.spaces.Discrete(2), cfg)
