"""CNN encoders, recurrent cores, Dict and MultiDiscrete spaces: shapes, dtypes, gradients
and the numbers they must give."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents.on_policy import OnPolicyBase
from envs.spaces import pack_obs, storage_shape, torch_dtype
from networks.builder import NetworkConfig, UnsupportedSpaceError, build_actor_critic, build_encoder, build_q_network
from networks.cnn import CHANNELS_LAST, ImpalaCNN, NatureCNN, frozen_weights
from networks.heads import MultiCategoricalHead
from networks.precision import native_bfloat16
from networks.recurrent import RecurrentCore

ATARI = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
DICT = gym.spaces.Dict(
    {
        "image": gym.spaces.Box(0, 255, (36, 36, 3), np.uint8),
        "position": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
        "target": gym.spaces.Discrete(4),
    }
)


def atari_batch(batch: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("cls", "features"), [(NatureCNN, 512), (ImpalaCNN, 256)])
def test_cnn_shapes_dtypes_and_gradients(cls, features):
    torch.manual_seed(0)
    net = cls(ATARI.shape)
    out = net(atari_batch())
    assert out.shape == (3, features) and out.dtype == torch.float32
    out.sum().backward()
    first = next(net.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_nature_cnn_layout_matches_the_dqn_paper():
    net = NatureCNN(ATARI.shape)
    convs = [m for m in net.body if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (32, (8, 8), (4, 4)),
        (64, (4, 4), (2, 2)),
        (64, (3, 3), (1, 1)),
    ]
    assert net.fc[0].in_features == 64 * 7 * 7


def test_cnn_scales_uint8_images_and_reads_channels_last():
    torch.manual_seed(0)
    first = NatureCNN((84, 84, 4))  # channels last: permuted to [B, 4, 84, 84]
    second = NatureCNN((4, 84, 84))
    second.load_state_dict(first.state_dict())
    images = atari_batch()
    assert torch.allclose(first(images.permute(0, 2, 3, 1)), second(images), atol=1e-6)
    # uint8 is divided by 255 on the device: the same as feeding the scaled floats
    assert torch.allclose(second(images), second(images.float() / 255.0), atol=1e-6)


@pytest.mark.parametrize("cls", [NatureCNN, ImpalaCNN])
def test_cnn_precisions_give_the_float32_features(cls):
    # channels-last float32 is float32 arithmetic in another order; bfloat16 autocast keeps
    # about three significant digits of features and gradients, and float32 weights
    torch.manual_seed(0)
    reference = cls(ATARI.shape)
    layout = torch.channels_last if CHANNELS_LAST["float32"] else torch.contiguous_format
    assert reference.body[0].weight.is_contiguous(memory_format=layout)
    images = atari_batch(16)
    want = reference(images)
    want.square().mean().backward()
    for precision in ("bfloat16", "auto"):
        net = cls(ATARI.shape, precision=precision)
        net.load_state_dict(reference.state_dict())
        got = net(images)
        assert got.dtype == torch.float32 and all(p.dtype == torch.float32 for p in net.parameters())
        assert net.arithmetic == (
            "bfloat16" if precision == "bfloat16" or native_bfloat16(images.device) else "float32"
        )
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.02 * float(want.abs().max()))
        got.square().mean().backward()
        for a, b in zip(net.parameters(), reference.parameters(), strict=True):
            cosine = torch.nn.functional.cosine_similarity(a.grad.flatten(), b.grad.flatten(), dim=0)
            assert cosine > 0.99, (precision, float(cosine))
    with pytest.raises(ValueError, match="precision must be one of"):
        cls(ATARI.shape, precision="float16")


def test_uint8_images_become_the_bfloat16_autocast_would_make():
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    scale = NatureCNN(ATARI.shape).input
    assert torch.equal(scale(pixels, torch.bfloat16), scale(pixels).to(torch.bfloat16))


@pytest.mark.parametrize("cls", [NatureCNN, ImpalaCNN])
def test_frozen_bfloat16_weights_give_the_autocast_features(cls):
    """A rollout's forwards run on bfloat16 copies of the weights made on entry: the same features,
    only within the context and without gradients, and nothing of them in the state dict."""
    torch.manual_seed(0)
    net = cls(ATARI.shape, precision="bfloat16")
    images = atari_batch(8)
    with torch.no_grad():
        want = net(images)
    keys = set(net.state_dict())
    with frozen_weights(net):
        assert set(net.state_dict()) == keys
        with torch.no_grad():
            assert torch.equal(net(images), want)
        assert net(images).requires_grad  # a gradient forward is autocast's, on the float32 weights
    assert "_frozen" not in net.__dict__
    with torch.no_grad():
        next(net.parameters()).mul_(2)  # weights changed after the rollout are the ones used
        changed = net(images)
        with frozen_weights(net):
            assert torch.equal(net(images), changed) and not torch.equal(changed, want)


def test_builder_picks_a_cnn_for_images_and_honours_the_choice():
    auto = build_actor_critic(ATARI, gym.spaces.Discrete(6), NetworkConfig(share_encoder=True))
    assert isinstance(auto.encoder.members[0], NatureCNN)
    impala = build_actor_critic(ATARI, gym.spaces.Discrete(6), NetworkConfig(network="impala-cnn"))
    assert len(impala.encoder.members) == 2 and isinstance(impala.encoder.members[1], ImpalaCNN)
    out = impala.act(atari_batch())
    assert out.action.shape == (3,) and out.value.shape == (3,)
    q = build_q_network(ATARI, gym.spaces.Discrete(6), NetworkConfig(), dueling=True)
    assert q(atari_batch()).shape == (3, 6)
    with pytest.raises(UnsupportedSpaceError, match="needs image observations"):
        build_encoder(gym.spaces.Box(-1, 1, (4,)), NetworkConfig(network="nature-cnn"))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_core_resets_at_episode_starts(kind):
    torch.manual_seed(0)
    core = RecurrentCore(kind, 5, 8)
    x = torch.randn(6, 2, 5)
    state = torch.randn(2, core.state_slots, 8)
    starts = torch.zeros(6, 2, dtype=torch.bool)
    starts[3, 0] = True
    out, last = core(x, state, starts)
    assert out.shape == (6, 2, 8) and last.shape == (2, core.state_slots, 8)
    # env 0 from step 3 on equals a fresh run from a zero state on x[3:]
    fresh, fresh_last = core(x[3:, :1], core.initial_state(1, "cpu"), torch.zeros(3, 1, dtype=torch.bool))
    assert torch.allclose(out[3:, :1], fresh, atol=1e-6)
    assert torch.allclose(last[:1], fresh_last, atol=1e-6)
    # env 1 never resets: the same as stepping one step at a time, carrying the state
    h = state[1:]
    for t in range(6):
        step, h = core(x[t : t + 1, 1:], h, torch.zeros(1, 1, dtype=torch.bool))
        assert torch.allclose(out[t, 1:], step[0], atol=1e-6)


@pytest.mark.parametrize(("space", "recurrent"), [(ATARI, "lstm"), (DICT, "gru")])
def test_recurrent_actor_critic_from_atari_and_dict_spaces(space, recurrent):
    torch.manual_seed(0)
    cfg = NetworkConfig(recurrent=recurrent, recurrent_size=32)
    net = build_actor_critic(space, gym.spaces.Discrete(4), cfg, envs.packing(space))
    obs_space = gym.vector.utils.batch_space(space, 6)
    obs_space.seed(0)
    obs = torch.as_tensor(pack_obs(space, obs_space.sample()), dtype=torch_dtype(space)).view(3, 2, -1)
    obs = obs.view(3, 2, *storage_shape(space))
    state = net.initial_state(2, "cpu")
    starts = torch.zeros(3, 2, dtype=torch.bool)
    log_prob, entropy, value = net.evaluate(obs, torch.zeros(3, 2, dtype=torch.long), state, starts)
    assert log_prob.shape == entropy.shape == value.shape == (6,)
    (log_prob.sum() + value.sum()).backward()
    assert all(p.grad is not None for p in net.core.parameters())
    assert next(net.encoder.parameters()).grad.abs().sum() > 0
    # step by step with act gives the same values as the sequence
    step_values = []
    for t in range(3):
        out = net.act(obs[t], state, starts[t])
        state = out.state
        step_values.append(out.value)
    assert torch.allclose(torch.stack(step_values).flatten(), value, atol=1e-5)


def test_dict_observations_are_packed_and_encoded_per_key():
    assert storage_shape(DICT) == (36 * 36 * 3 + 2 + 1,) and torch_dtype(DICT) == torch.float32
    sample = {"image": np.full((1, 36, 36, 3), 7, np.uint8), "position": np.array([[0.5, -0.5]]), "target": [2]}
    packed = pack_obs(DICT, sample)
    assert packed.shape == (1, 36 * 36 * 3 + 3)
    assert packed[0, -3:].tolist() == [0.5, -0.5, 2.0] and packed[0, 0] == 7.0
    net = build_actor_critic(DICT, gym.spaces.Discrete(4), NetworkConfig(), envs.dict_layout(DICT))
    extractor = net.encoder.extractor
    assert extractor.out_dim == 256 + 2 + 4  # CNN features, the position, the one-hot target
    features = extractor(torch.as_tensor(packed, dtype=torch.float32))
    assert features.shape == (1, 262)
    assert features[0, 256:258].tolist() == [0.5, -0.5] and features[0, 258:].tolist() == [0, 0, 1, 0]


def test_multi_categorical_head_matches_torch_distributions():
    torch.manual_seed(0)
    head = MultiCategoricalHead(4, [3, 2])
    logits = head(torch.randn(5, 4))
    actions = head.sample(logits, torch.Generator().manual_seed(1))
    assert actions.shape == (5, 2) and actions.dtype == torch.int64
    assert (actions[:, 0] < 3).all() and (actions[:, 1] < 2).all()
    log_prob, entropy = head.log_prob_entropy(logits, actions)
    parts = [torch.distributions.Categorical(logits=p) for p in logits.split([3, 2], dim=-1)]
    expected_lp = sum(d.log_prob(actions[:, i]) for i, d in enumerate(parts))
    expected_ent = sum(d.entropy() for d in parts)
    assert torch.allclose(log_prob, expected_lp, atol=1e-6) and torch.allclose(entropy, expected_ent, atol=1e-6)
    assert head.mode(logits).tolist() == torch.stack([p.argmax(-1) for p in logits.split([3, 2], -1)], -1).tolist()


def test_chunks_are_sequences_of_one_env():
    x = torch.arange(8 * 3).view(8, 3)  # value = 3 t + n
    chunks = OnPolicyBase.chunk(x, 4)  # [4, 2*3]: chunk k of env n at k*3 + n
    assert chunks.shape == (4, 6)
    assert chunks[:, 0].tolist() == [0, 3, 6, 9]  # env 0, steps 0-3
    assert chunks[:, 4].tolist() == [13, 16, 19, 22]  # env 1, steps 4-7
    assert OnPolicyBase.chunk(x, 1).flatten().tolist() == x.flatten().tolist()
