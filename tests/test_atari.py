"""Atari through ale-py (gym backend) and EnvPool: preprocessing, true game scores, and
`drl train`/`drl eval` end to end on Pong."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from envs.atari import ClipRewardSign, EpisodicLife
from envs.vector import TorchVectorEnv

from conftest import run_drl
from toy_envs import FakeAtariEnv

pytest.importorskip("ale_py")


def fake_atari_vector(training: bool) -> TorchVectorEnv:
    def make():
        env = gym.wrappers.RecordEpisodeStatistics(FakeAtariEnv())
        if training:
            env = ClipRewardSign(EpisodicLife(env))
        return env

    vector = gym.vector.SyncVectorEnv([make], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return TorchVectorEnv(vector, seed=0, scores_from_info=True)


def run(env: TorchVectorEnv, steps: int) -> list[tuple]:
    env.reset()
    out = []
    for _ in range(steps):
        _, reward, terminated, truncated, info = env.step(torch.zeros(1, dtype=torch.long))
        out.append((reward.item(), terminated.item(), info.episode_return.item(), info.episode_length.item()))
    return out


def test_training_wrappers_end_at_lost_lives_clip_rewards_and_log_game_scores():
    steps = run(fake_atari_vector(training=True), 30)
    assert {r for r, *_ in steps} == {1.0}  # 7 points a step, clipped to their sign
    # a life is lost every 5 game steps; after each, the episode "reset" is a no-op step of
    # the same game (as SB3's EpisodicLifeEnv), so the next loss comes 4 agent steps later
    assert [t for t, (_, term, _, _) in enumerate(steps) if term] == [4, 8, 12, 17, 21, 25]
    # only a game over (3 lives, 15 game steps) reports a score: the unclipped 15 * 7
    scores = [(t, ret, length) for t, (_, _, ret, length) in enumerate(steps) if length > 0]
    assert scores == [(12, 105.0, 15), (25, 105.0, 15)]


def test_evaluation_wrappers_keep_the_game_whole():
    steps = run(fake_atari_vector(training=False), 15)
    assert {r for r, *_ in steps} == {7.0}
    assert [t for t, (_, term, _, _) in enumerate(steps) if term] == [14]
    assert steps[14][2:] == (105.0, 15)


def test_the_raw_env_returns_grayscale_and_the_frames_are_those_of_rgb():
    """make_atari asks ale-py for grayscale screens (cheaper; AtariPreprocessing drops them and
    reads the emulator itself): the preprocessed frames are those of the RGB raw env."""
    from envs.atari import make_atari

    spec = gym.spec("ALE/Breakout-v5")
    cheap, rgb = make_atari(spec, training=True), make_atari(spec, training=True, obs_type="rgb")
    assert cheap.unwrapped._obs_type == "grayscale" and rgb.unwrapped._obs_type == "rgb"
    actions = np.random.default_rng(0).integers(0, 4, 300)
    first, _ = cheap.reset(seed=5)
    assert np.array_equal(first, rgb.reset(seed=5)[0])
    for action in actions:
        a, b = cheap.step(int(action)), rgb.step(int(action))
        assert np.array_equal(a[0], b[0]) and a[1:4] == b[1:4]
        if a[2] or a[3]:
            assert np.array_equal(cheap.reset()[0], rgb.reset()[0])
    video = make_atari(spec, training=False, render_mode="rgb_array")  # videos still get colour frames
    video.reset(seed=0)
    assert video.render().shape == (210, 160, 3)


@pytest.mark.parametrize(("game", "frames", "steps"), [("Breakout", 108_000, 1500), ("Pong", 600, 400)])
def test_preprocessing_that_steps_the_emulator_itself_gives_what_gymnasiums_gives(game, frames, steps):
    """envs.atari.Preprocessing skips the raw env's per-frame screens and infos: its frames,
    rewards, ends and infos are gymnasium's AtariPreprocessing's, with sticky actions, across
    game overs (Breakout, random play) and truncations (Pong, a 600-frame cap)."""
    from envs.atari import Preprocessing

    def make(wrapper):
        raw = gym.make(f"ALE/{game}-v5", frameskip=1, obs_type="grayscale", max_num_frames_per_episode=frames)
        return wrapper(raw, noop_max=30, frame_skip=4, screen_size=84)

    ours, theirs = make(Preprocessing), make(gym.wrappers.AtariPreprocessing)
    assert ours._raw is not None  # the fast path is the one under test
    ends = {"terminated": 0, "truncated": 0}
    assert np.array_equal(ours.reset(seed=3)[0], theirs.reset(seed=3)[0])
    for action in np.random.default_rng(0).integers(0, ours.action_space.n, steps):
        a, b = ours.step(int(action)), theirs.step(int(action))
        assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
        if a[2] or a[3]:
            ends["terminated" if a[2] else "truncated"] += 1
            assert np.array_equal(ours.reset()[0], theirs.reset()[0])
    assert ends["terminated" if game == "Breakout" else "truncated"] > 0
    # a time limit on the raw env (evaluation's) counts frames in its wrapper: the plain path
    limited = gym.make(f"ALE/{game}-v5", frameskip=1, max_episode_steps=100)
    assert Preprocessing(limited, noop_max=30, frame_skip=4, screen_size=84)._raw is None


@pytest.mark.parametrize("backend", ["gym", "envpool"])
def test_atari_observations_are_stacked_uint8_frames(backend):
    if backend == "envpool":
        pytest.importorskip("envpool")
    env = envs.make("ALE/Breakout-v5", 2, backend, seed=0)
    try:
        obs, _ = env.reset()
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == torch.uint8
        assert env.single_action_space == gym.spaces.Discrete(4)
        lost_life = game_over = False
        for _ in range(2000):
            obs, reward, terminated, truncated, info = env.step(torch.randint(0, 4, (2,)))
            assert set(reward.tolist()) <= {-1.0, 0.0, 1.0}
            game_over |= bool(info.episode_length.any())
            lost_life |= bool((terminated & (info.episode_length == 0)).any())
            if lost_life and game_over:
                break
        assert lost_life, "training envs end an episode at a lost life"
        assert game_over, "a random Breakout game ends within 2000 steps"
        assert obs.dtype == torch.uint8 and info.final_obs.shape == (2, 4, 84, 84)
    finally:
        env.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["gym", "envpool"])
def test_pong_trains_and_evaluates_with_game_scores(backend, tmp_path):
    if backend == "envpool":
        pytest.importorskip("envpool")
    run_dir = tmp_path / "pong"
    train = run_drl(
        "train", "ppo", "ALE/Pong-v5", "--backend", backend, "--total-steps", "2048", "--run-dir", str(run_dir),
        "--eval-episodes", "0", cwd=tmp_path,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    result = run_drl("eval", str(run_dir), "--episodes", "1", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # a Pong game ends when a side reaches 21: the score is the point difference
    score = report["returns"][0]
    assert score == int(score) and -21 <= score <= 21 and abs(score) >= 1
    assert report["lengths"][0] > 100
    # training stored its frames as uint8 and logged whole-game scores
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["step"] >= 2048


def test_frames_are_stored_as_uint8_in_rollouts_and_replay():
    from agents.dqn import DQN, DQNConfig
    from agents.ppo import PPO, PPOConfig
    from runners.off_policy import OffPolicyLoop
    from runners.rollout import OnPolicyLoop

    env = envs.make("ALE/Pong-v5", 2, "gym", seed=0)
    try:
        spaces = (env.single_observation_space, env.single_action_space)
        ppo = PPO(PPOConfig(n_steps=8, batch_size=8, n_epochs=1), *spaces, 2)
        loop = OnPolicyLoop(env, ppo, total_steps=16)
        loop.reset(seed=0)
        loop.iterate(0)
        assert loop.collector.storage.obs.dtype == torch.uint8
        assert loop.collector.storage.final_obs.dtype == torch.uint8

        cfg = DQNConfig(buffer_size=64, learning_starts=8, batch_size=4, train_every=4)
        dqn = DQN(cfg, *spaces, 2)
        replay = OffPolicyLoop(env, dqn, total_steps=32)
        replay.reset(seed=0)
        for step in range(0, 32, replay.steps_per_iteration):
            metrics = replay.iterate(step)
        assert replay.buffer.observations.obs.dtype == torch.uint8
        assert np.isfinite(float(metrics["losses/td_loss"]))
    finally:
        env.close()
