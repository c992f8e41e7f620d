"""Frame-sharing replay (runners/replay.py, `SharedFrames`): the stacks it rebuilds equal those
the plain buffer stores, on the same stream of steps, across episode ends (terminated and
truncated, episodes of one step included), wrap-around and n-step windows; transitions whose
frames were overwritten are never sampled; Atari envs of both backends stack frames as it
assumes; DQN on Atari uses it by default, and a buffer the machine cannot hold is refused."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import envs
from agents import ConfigError
from agents.dqn import DQN, DQNConfig
from runners.off_policy import OffPolicyLoop
from runners.replay import ReplayBuffer, SharedFrames, WholeObservations

from conftest import run_drl

K, H, W = 4, 2, 3
OBS_SPACE = gym.spaces.Box(0, 2**30, (K, H, W), dtype="int32")
ACTIONS = gym.spaces.Discrete(3)


class StackedStream:
    """N envs of frame-stack observations [K, H, W] whose every frame is unique (its number
    fills it), with the same-step autoreset of the suite's backends: an ending step returns the
    next episode's first stack as obs and the finished one's last as final_obs. First stacks
    hold K new frames, or one frame repeated (as Gymnasium's FrameStackObservation pads)."""

    def __init__(self, num_envs: int, end_probability: float, seed: int, period: int = 0):
        """Episodes end with `end_probability` at each step, or every `period` steps (env i's
        first after period - i)."""
        self.n, self.p, self.period = num_envs, end_probability, period
        self.g = torch.Generator().manual_seed(seed)
        self.counter = self.t = 0
        self.obs = torch.stack([self.first_stack() for _ in range(num_envs)])

    def frame(self) -> torch.Tensor:
        self.counter += 1
        return torch.full((1, H, W), self.counter, dtype=torch.int32)

    def first_stack(self) -> torch.Tensor:
        if torch.rand((), generator=self.g) < 0.5:
            return self.frame().expand(K, H, W).clone()
        return torch.cat([self.frame() for _ in range(K)])

    def step(self):
        final = torch.stack([torch.cat([self.obs[i, 1:], self.frame()]) for i in range(self.n)])
        ended = torch.rand(self.n, generator=self.g) < self.p
        if self.period:
            self.t += 1
            ended = (self.t + torch.arange(self.n)) % self.period == 0
        terminated = ended & (torch.rand(self.n, generator=self.g) < 0.5)
        truncated = ended & ~terminated
        obs = torch.stack([self.first_stack() if ended[i] else final[i] for i in range(self.n)])
        actions = torch.randint(0, 3, (self.n,), generator=self.g)
        rewards = torch.randn(self.n, generator=self.g)
        return actions, rewards, terminated, truncated, final, obs


def buffers(capacity: int, num_envs: int, n_step: int) -> tuple[ReplayBuffer, ReplayBuffer]:
    common = dict(obs_dtype=torch.int32, n_step=n_step, gamma=0.9)
    return (
        ReplayBuffer(capacity, num_envs, OBS_SPACE, ACTIONS, "cpu", **common),
        ReplayBuffer(capacity, num_envs, OBS_SPACE, ACTIONS, "cpu", share_frames=True, **common),
    )


def sampleable(plain: ReplayBuffer) -> torch.Tensor:
    """The plain buffer's complete transitions, as flat slots."""
    rows = [(plain.pos - plain.filled + i) % plain.rows for i in range(plain.filled - plain.n_step + 1)]
    return torch.tensor([r * plain.num_envs + e for r in rows for e in range(plain.num_envs)])


def assert_same(got, want) -> None:
    for name, a, b in zip(got._fields, got, want, strict=True):
        assert torch.equal(a, b), name


def feed(plain: ReplayBuffer, shared: ReplayBuffer, stream: StackedStream, steps: int, check_every: int) -> int:
    """Add `steps` steps of `stream` to both buffers, comparing every few steps; returns how
    many of the plain buffer's transitions the shared one could not rebuild (and never samples)."""
    lost = 0
    for step in range(steps):
        obs = stream.obs
        actions, rewards, terminated, truncated, final, next_obs = stream.step()
        for buffer in (plain, shared):
            buffer.add(obs, actions, rewards, terminated, truncated, final)
        stream.obs = next_obs
        if len(plain) and step % check_every == 0:
            slots = sampleable(plain)
            kept = slots[shared.tree.leaves(slots) > 0]
            lost = max(lost, len(slots) - len(kept))
            assert_same(shared.transitions(kept), plain.transitions(kept))
            batch = shared.sample(64, torch.Generator().manual_seed(step))
            assert set(batch.indices.tolist()) <= set(kept.tolist())
            assert_same(batch, plain.transitions(batch.indices))
    return lost


@pytest.mark.parametrize("n_step", [1, 3])
def test_shared_frames_rebuild_the_plain_buffers_stacks(n_step):
    # episodes of about 20 steps (60 in all), some of one step; 40 rows of 3 envs, each
    # overwritten 10 times; equality is checked every 7 steps, at all phases of the wrap-around
    plain, shared = buffers(120, 3, n_step)
    assert isinstance(shared.observations, SharedFrames) and isinstance(plain.observations, WholeObservations)
    feed(plain, shared, StackedStream(3, 1 / 20, seed=n_step), steps=400, check_every=7)


def test_episodes_of_8k_steps_lose_no_transition():
    # the stream holds rows + rows // 8 frames and more: a first step takes K + 1 frames
    plain, shared = buffers(120, 3, 1)
    assert feed(plain, shared, StackedStream(3, 0.0, seed=0, period=8 * K), steps=400, check_every=1) == 0


def test_transitions_that_lost_a_frame_are_never_sampled():
    # episodes of 1-2 steps take K + 1 frames a step: the oldest rows lose frames before their
    # rows are overwritten; those are excluded, all others still equal the plain buffer's
    plain, shared = buffers(80, 2, 1)
    lost = feed(plain, shared, StackedStream(2, 0.7, seed=5), steps=300, check_every=3)
    assert lost > 0


@pytest.mark.parametrize(("capacity", "steps"), [(64, 100), (512, 20)], ids=["wrapped", "young"])
def test_a_checkpointed_buffer_continues_as_the_plain_one(capacity, steps):
    plain, shared = buffers(capacity, 2, 2)
    stream = StackedStream(2, 0.1, seed=3)
    feed(plain, shared, stream, steps=steps, check_every=1000)
    restored = buffers(capacity, 2, 2)[1]
    state = shared.state_dict()
    written = int(shared.observations.head.max())  # frames appended to the longest stream
    assert state["frames"].shape[1] == min(written, shared.observations.length)
    if steps == 20:  # a young buffer's checkpoint holds what was written, not the whole stream
        assert written < shared.observations.length // 4 and len(state["newest"]) == 20
    restored.load_state_dict(state)
    # a checkpoint from before, with whole tensors, loads as well
    frames = shared.observations
    whole = {**state, "frames": frames.frames.clone(), "owner": frames.owner.clone(), "newest": frames.newest.clone()}
    from_whole = buffers(capacity, 2, 2)[1]
    from_whole.load_state_dict(whole)
    draws = [buffer.sample(32, torch.Generator().manual_seed(0)) for buffer in (restored, from_whole, shared)]
    assert_same(draws[0], draws[2])
    assert_same(draws[1], draws[2])
    feed(plain, restored, stream, steps=60, check_every=1)  # heads, owners and starts came back too
    with pytest.raises(ValueError, match="resume with --share-frames"):
        buffers(capacity, 2, 2)[0].load_state_dict(shared.state_dict())
    with pytest.raises(ValueError, match="resume with --no-share-frames"):
        restored.load_state_dict(plain.state_dict())


def test_an_atari_buffer_needs_a_seventh_of_the_memory():
    shape = (4, 84, 84)
    whole = ReplayBuffer.memory_need(1_000_000, 1, shape, torch.uint8, ACTIONS, 1, share_frames=False)
    shared = ReplayBuffer.memory_need(1_000_000, 1, shape, torch.uint8, ACTIONS, 1, share_frames=True)
    assert 56e9 < whole < 57e9  # 2 x 4 x 84 x 84 bytes a transition
    assert 7.9e9 < shared < 8.1e9  # one 84 x 84 frame a transition, and 1/8 more for episode starts
    # what a small buffer states is what it allocates
    space = gym.spaces.Box(0, 255, shape, dtype="uint8")
    for share, prioritized in ((False, False), (False, True), (True, False), (True, True)):
        buffer = ReplayBuffer(1000, 4, space, ACTIONS, "cpu", torch.uint8, share_frames=share, prioritized=prioritized)
        tensors = [*vars(buffer).values(), *vars(buffer.observations).values()]
        tensors = [t for t in tensors if torch.is_tensor(t)] + ([buffer.tree.tree] if buffer.tree else [])
        allocated = sum(t.numel() * t.element_size() for t in tensors)
        assert abs(buffer.nbytes - allocated) < 1000, (share, prioritized, buffer.nbytes, allocated)


@pytest.mark.parametrize("backend", ["gym", "envpool"])
def test_atari_frames_stack_as_the_buffer_assumes(backend):
    # Breakout's lives end training episodes (terminated) every few dozen random steps
    if backend == "envpool":
        pytest.importorskip("envpool")
    assert envs.frame_stack("ALE/Breakout-v5") == 4 and envs.frame_stack("CartPole-v1") == 0
    env = envs.make("ALE/Breakout-v5", 2, backend, seed=0)
    try:
        plain = ReplayBuffer(200, 2, env.single_observation_space, env.single_action_space, "cpu", torch.uint8)
        shared = ReplayBuffer(
            200, 2, env.single_observation_space, env.single_action_space, "cpu", torch.uint8, share_frames=True
        )
        obs, _ = env.reset(seed=0)
        ends = 0
        for step in range(400):
            actions = torch.randint(0, 4, (2,), generator=torch.Generator().manual_seed(step))
            next_obs, reward, terminated, truncated, info = env.step(actions)
            for buffer in (plain, shared):
                buffer.add(obs, actions, reward, terminated, truncated, info.final_obs)
            ends += int((terminated | truncated).sum())
            obs = next_obs
        slots = sampleable(plain)
        assert bool((shared.tree.leaves(slots) > 0).all())
        assert_same(shared.transitions(slots), plain.transitions(slots))
        assert ends >= 2
    finally:
        env.close()


def test_dqn_on_atari_shares_frames_by_default():
    env = envs.make("ALE/Pong-v5", 1, "gym", seed=0)
    try:
        spaces = (env.single_observation_space, env.single_action_space)
        for share, kind in ((None, SharedFrames), (False, WholeObservations)):
            dqn = DQN(DQNConfig(buffer_size=64, share_frames=share), *spaces, 1)
            loop = OffPolicyLoop(env, dqn, 100, frame_stack=envs.frame_stack("ALE/Pong-v5"))
            assert isinstance(loop.buffer.observations, kind)
    finally:
        env.close()
    cartpole = envs.make("CartPole-v1", 1, "gym", seed=0)
    try:
        dqn = DQN(DQNConfig(share_frames=True), cartpole.single_observation_space, cartpole.single_action_space, 1)
        with pytest.raises(ConfigError, match="--share-frames needs observations that stack frames"):
            OffPolicyLoop(cartpole, dqn, 100, frame_stack=envs.frame_stack("CartPole-v1"))
    finally:
        cartpole.close()


def test_drl_states_the_buffers_memory_and_refuses_one_it_cannot_hold(tmp_path):
    common = ["--total-steps", "64", "--learning-starts", "32", "--batch-size", "8", "--num-envs", "1"]
    common += ["--eval-episodes", "1", "--no-progress"]
    result = run_drl("train", "dqn", "ALE/Pong-v5", "--buffer-size", "1000", *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "drl: replay buffer of 1,000 transitions, 0.0 GB, frames shared" in result.stderr
    result = run_drl("train", "dqn", "ALE/Pong-v5", "--buffer-size", "100000000", *common, cwd=tmp_path)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("drl: error: cannot allocate a replay buffer of 100,000,000 transitions: it needs 7")
    assert last.endswith("GB are free; lower --buffer-size"), last


def test_runs_from_before_frame_sharing_resume_with_whole_observations():
    from runners.config import TrainConfig
    from runners.trainer import configs_from, run_config

    saved = run_config(TrainConfig(algo="dqn", env_id="ALE/Pong-v5"), DQNConfig())
    assert configs_from(saved)[1].share_frames is None  # a run of today: shared on Atari
    del saved["agent"]["share_frames"]
    assert configs_from(saved)[1].share_frames is False  # its checkpoints hold whole observations
