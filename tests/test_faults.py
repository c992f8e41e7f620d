"""Faults at run time, injected into real `drl` processes (as RLlib's fault-injection tests):
an env that raises or whose worker process dies, NaN, SIGKILL at random moments, SIGTERM in
an evaluation, a second signal, a full disk, a damaged checkpoint, two writers. Each case
checks the exit status, the one-line message, run.json's status, that the last checkpoint
loads and that `--resume` continues."""

from __future__ import annotations

import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from agents.dqn import DQNConfig
from networks import NetworkConfig
from runners.checkpoint import list_checkpoints, load_checkpoint
from runners.config import TrainConfig
from runners.guard import Diverged, FiniteCheck
from runners.run_dir import create_run_dir
from runners.trainer import Trainer

from conftest import drl_env, read_metrics, run_drl

# 4 envs x 32 steps = 128 env steps per iteration; a log row and a checkpoint every iteration
RUN = ["--num-envs", "4", "--n-steps", "32", "--batch-size", "64", "--n-epochs", "2", "--log-every", "128"]
RUN += ["--checkpoint-every", "128", "--eval-every", "0", "--eval-episodes", "2", "--no-progress", "--device", "cpu"]
STEPS = 4096


def train(run_dir: Path, *extra: str, env_id: str = "CartPole-v1", fault: dict | None = None, steps: int = STEPS):
    return run_drl(
        "train", "ppo", env_id, "--total-steps", str(steps), "--run-dir", str(run_dir), *RUN, *extra,
        cwd=run_dir.parent, env=fault, timeout=300,
    )  # fmt: skip


def start(
    run_dir: Path,
    *extra: str,
    steps: int = STEPS,
    env: dict | None = None,
    session: bool = False,
    env_id: str = "CartPole-v1",
):
    drl = shutil.which("drl")
    command = [drl, "train", "ppo", env_id, "--total-steps", str(steps), "--run-dir", str(run_dir), *RUN]
    return subprocess.Popen(
        [*command, *extra],
        cwd=run_dir.parent,
        env={**drl_env(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=session,  # a process group of its own, as a terminal's job
    )


def resume(run_dir: Path, *extra: str, env: dict | None = None):
    return run_drl("train", "--resume", str(run_dir), "--no-progress", *extra, cwd=run_dir.parent, env=env)


def status(run_dir: Path) -> str:
    return json.loads((run_dir / "run.json").read_text())["status"]


def last_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def logged_steps(run_dir: Path) -> list[int]:
    try:
        text = (run_dir / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line)["step"] for line in text.splitlines() if line.endswith("}")]


def wait_for(condition, timeout: float = 120, interval: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def assert_loads(run_dir: Path) -> dict:
    payload = load_checkpoint(run_dir)
    modules = {key: value for key, value in payload["agent"].items() if isinstance(value, dict)}
    assert modules
    for module, state in modules.items():
        for name, tensor in state.items():
            if torch.is_tensor(tensor) and tensor.is_floating_point():
                assert torch.isfinite(tensor).all(), f"{module}.{name}"
    return payload


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    run_dir = tmp_path_factory.mktemp("base") / "run"
    result = train(run_dir)
    assert result.returncode == 0, result.stderr
    return read_metrics(run_dir)


# ----------------------------------------------------------------------------- SIGKILL
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_moment_then_resume_gives_the_uninterrupted_metrics(tmp_path, uninterrupted, seed):
    """Killed after a random number of iterations (odd seeds: while a checkpoint is being
    written), resumed: the same metrics as the run that was never killed."""
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    process = start(run_dir)
    try:
        target = 128 * rng.randint(2, 24)
        assert wait_for(lambda: max(logged_steps(run_dir), default=0) >= target), "the run made no progress"
        if seed % 2:  # during a checkpoint write, if one is caught in the act
            wait_for(lambda: any((run_dir / "checkpoints").glob(".step_*")), timeout=2, interval=0.0002)
        process.kill()
    finally:
        process.kill()
        process.communicate()
    assert status(run_dir) == "running"  # SIGKILL leaves no word
    result = resume(run_dir)
    assert result.returncode == 0, result.stderr
    assert read_metrics(run_dir) == uninterrupted
    assert not list((run_dir / "checkpoints").glob(".step_*"))  # the killed write's partial file is gone
    assert len(list_checkpoints(run_dir)) <= 3 + 1  # --keep-checkpoints 3, plus the best evaluation's


def test_sigkill_in_the_middle_of_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    """A checkpoint large enough to be caught being written (a DQN with its Atari replay buffer
    of 20k transitions, about 160 MB), killed while the second is written: the first loads, and
    --resume continues from it and removes the dead writer's partial file."""
    run_dir = tmp_path / "run"
    drl = shutil.which("drl")
    command = [drl, "train", "dqn", "ALE/Pong-v5", "--num-envs", "1", "--buffer-size", "20000", "--save-buffer",
               "--learning-starts", "100000", "--total-steps", "100000", "--checkpoint-every", "400",
               "--eval-every", "0", "--eval-episodes", "1", "--no-progress", "--run-dir", str(run_dir)]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, env=drl_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoints = run_dir / "checkpoints"
    try:
        assert wait_for(lambda: len(list_checkpoints(run_dir)) == 1), "no first checkpoint"
        caught = wait_for(lambda: any(checkpoints.glob(".step_*")), timeout=60, interval=0.0002)
        process.kill()
    finally:
        process.kill()
        process.communicate()
    assert caught, "no second checkpoint write was seen"
    (partial,) = checkpoints.glob(".step_*")
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_000000000400.pt"]
    assert load_checkpoint(run_dir)["global_step"] == 400
    result = resume(run_dir, "--total-steps", "800")
    assert result.returncode == 0, result.stderr
    assert "from step 400" in result.stderr
    assert not partial.exists()
    assert load_checkpoint(run_dir)["global_step"] == 800


def test_sigterm_while_the_envs_are_made_ends_the_run_at_once(tmp_path):
    """An env that takes a minute to make: SIGTERM then ends the command within seconds, exit
    130, one line, nothing written."""
    making = tmp_path / "making"
    command = [shutil.which("drl"), "train", "ppo", "toy_envs:SlowToMake-v0", "--num-envs", "1", "--run-dir", "R"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env={**drl_env(), "DRL_MAKING": str(making)}, stderr=subprocess.PIPE, text=True
    )
    try:
        assert wait_for(making.exists, timeout=60), "the env was never made"
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        assert time.monotonic() - sent < 10
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "drl: SIGTERM: stopped before training began; nothing was written"
    assert not (tmp_path / "R").exists()


def test_one_writer_per_run_directory_and_a_killed_one_leaves_no_lock(tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir, steps=10**7)
    try:
        assert wait_for(lambda: logged_steps(run_dir))
        second = resume(run_dir)
        assert second.returncode == 2
        assert last_line(second) == (
            f"drl: error: run directory {run_dir} is being written by another drl process (pid {process.pid}); "
            "wait for it to end or stop it first"
        )
    finally:
        process.kill()
        process.communicate()
    third = resume(run_dir, "--total-steps", "128")  # the lock went with the killed process
    assert third.returncode == 0 and "already finished" in last_line(third), third.stderr


def test_killed_before_its_first_checkpoint_a_run_starts_again_from_its_config(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    process = start(run_dir, "--checkpoint-every", "0", "--checkpoint-minutes", "0")
    try:
        assert wait_for(lambda: len(logged_steps(run_dir)) >= 3)
    finally:
        process.kill()
        process.communicate()
    assert not list_checkpoints(run_dir)
    result = resume(run_dir)
    assert result.returncode == 0, result.stderr
    assert "has no checkpoint yet; starting it again from its config" in result.stderr
    assert read_metrics(run_dir) == uninterrupted


# ------------------------------------------------------------------- checkpoints on disk
def test_a_damaged_newest_checkpoint_is_skipped_and_a_finished_run_resumes_to_exit_0(tmp_path):
    run_dir = tmp_path / "run"
    assert train(run_dir, steps=1024).returncode == 0
    found = list_checkpoints(run_dir)
    assert [p.name for p in found][-3:] == [f"step_{s:012d}.pt" for s in (768, 896, 1024)]
    assert len(found) == 3  # --keep-checkpoints 3 (the final evaluation is the only one, and the newest)

    done = resume(run_dir)  # a scheduler relaunching a finished job
    assert done.returncode == 0
    assert "already finished" in last_line(done)

    newest = found[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    result = resume(run_dir, "--total-steps", "1280")
    assert result.returncode == 0, result.stderr
    assert f"skipping damaged checkpoint: checkpoint {newest} is corrupt" in result.stderr
    assert "from step 896" in result.stderr
    assert status(run_dir) == "finished"
    assert load_checkpoint(run_dir)["global_step"] == 1280


def test_checkpoints_come_by_the_clock_too(tmp_path):
    """--checkpoint-minutes 0.005 (0.3 s), none by steps: a checkpoint at each iteration that
    ends 0.3 s after the last, so a SIGKILL loses at most that much; --keep-checkpoints 0 keeps
    all. Each iteration takes at least 0.5 s (1,024 steps of an env that sleeps 0.5 ms a step),
    however fast the machine: every one of them ends with a checkpoint."""
    run_dir = tmp_path / "run"
    extra = ["--checkpoint-every", "0", "--checkpoint-minutes", "0.005", "--keep-checkpoints", "0"]
    result = train(run_dir, *extra, "--n-steps", "256", env_id="toy_envs:SlowCartPole-v0")
    assert result.returncode == 0, result.stderr
    steps = [load_checkpoint(p)["global_step"] for p in list_checkpoints(run_dir)]
    assert steps == [1024, 2048, 3072, 4096]


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    assert train(run_dir, steps=512).returncode == 0
    newest = list_checkpoints(run_dir)[-1]
    before = newest.read_bytes()
    command = [shutil.which("drl"), "train", "--resume", str(run_dir), "--total-steps", "1024", "--no-progress"]
    limit = newest.stat().st_size // 2  # metrics and events fit; the next checkpoint does not
    result = subprocess.run(
        command, env=drl_env(), capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(limit)
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert last_line(result).startswith("drl: error: cannot write ")
    assert "File too large" in last_line(result) and f"the last checkpoint, {newest}, is intact" in last_line(result)
    assert newest.read_bytes() == before and list_checkpoints(run_dir)[-1] == newest
    assert not list((run_dir / "checkpoints").glob(".step_*"))
    assert status(run_dir) == "crashed"
    assert_loads(run_dir)
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # no half line
    assert resume(run_dir, "--total-steps", "1024").returncode == 0


def test_a_failed_metrics_write_leaves_no_half_line(tmp_path):
    """JsonlSink under a file-size limit that falls in the middle of a line."""
    script = f"""
import resource, signal
from runners.loggers import JsonlSink
sink = JsonlSink({str(tmp_path)!r}, None)
sink.log(1, {{"a": 1.0}})
size = ({str(tmp_path)!r} + "/metrics.jsonl")
import os
end = os.path.getsize(size)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (end + 20, end + 20))
try:
    sink.log(2, {{"a_long_metric_name": 2.0, "another_long_metric_name": 3.0}})
except OSError as exc:
    print("raised", exc.errno)
print(os.path.getsize(size) == end)
"""
    done = subprocess.run(["python", "-c", script], env=drl_env(), capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["raised", "27", "True"], done.stderr
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "a": 1.0}\n'


# ------------------------------------------------------------------------------ signals
def test_sigterm_during_an_evaluation_is_honoured_within_seconds(tmp_path):
    """An evaluation of 20,000 episodes at the last step: SIGTERM ends it at once; the run writes
    the checkpoint of its last iteration and exits 130; resuming then says it has finished."""
    run_dir = tmp_path / "run"
    process = start(run_dir, "--eval-episodes", "20000", steps=1024)

    def evaluating() -> bool:
        if 896 not in logged_steps(run_dir):
            return False
        time.sleep(2.0)  # the last iteration is done: the evaluation runs (for a minute or more)
        return True

    stderr = sigterm_when(process, evaluating)
    assert "drl: SIGTERM: stopping now" in stderr
    assert_stopped_at(run_dir, 1024, stderr)
    assert resume(run_dir).returncode == 0


def sigterm_when(process: subprocess.Popen, ready: Callable[[], bool]) -> str:
    """Send SIGTERM once `ready()`; assert the run ends with 130 within 10 s, without a
    traceback; its stderr."""
    try:
        assert wait_for(ready)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        waited = time.monotonic() - sent
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert waited < 10, waited
    assert "Traceback" not in stderr
    return stderr


def assert_stopped_at(run_dir: Path, step: int, stderr: str) -> None:
    assert stderr.strip().splitlines()[-1].startswith(f"drl: stopped at step {step}; checkpoint "), stderr
    assert status(run_dir) == "interrupted"
    assert assert_loads(run_dir)["global_step"] == step


def test_sigterm_while_a_video_is_recorded_is_honoured_within_seconds(tmp_path):
    """The video at the last step renders a frame every 0.5 s: SIGTERM ends the recording at
    once, the checkpoint of the last iteration is written, and no half video is left."""
    run_dir, rendering = tmp_path / "run", tmp_path / "rendering"
    video = ["--eval-video-every", "1024", "--eval-episodes", "0"]
    process = start(run_dir, *video, steps=1024, env_id="toy_envs:SlowRender-v0", env={"DRL_RENDERING": str(rendering)})
    stderr = sigterm_when(process, rendering.exists)
    assert_stopped_at(run_dir, 1024, stderr)
    assert not list(run_dir.glob("videos/*.mp4"))


def test_ctrl_c_at_a_terminal_reaches_async_env_workers_too_and_the_run_still_checkpoints(tmp_path):
    """SIGINT to the whole process group (what Ctrl-C does): the async backend's workers ignore
    it and keep stepping until the trainer has finished its iteration and written a checkpoint."""
    run_dir = tmp_path / "run"
    process = start(run_dir, "--backend", "async", steps=10**7, session=True)
    try:
        assert wait_for(lambda: len(logged_steps(run_dir)) >= 2)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("drl: stopped at step "), stderr
    assert status(run_dir) == "interrupted"
    assert_loads(run_dir)


def test_a_second_signal_aborts_at_once_with_one_line(tmp_path):
    """Long iterations (8,192 steps of an env that sleeps 0.5 ms a step: 4 s or more each, on
    any machine): the first SIGINT waits for the iteration, the second aborts there: exit 130,
    one line, no traceback, the earlier checkpoint whole."""
    run_dir = tmp_path / "run"
    slow = "toy_envs:SlowCartPole-v0"
    process = start(run_dir, "--n-steps", "2048", "--checkpoint-every", "1", steps=10 * 8192, env_id=slow)
    try:
        assert wait_for(lambda: list_checkpoints(run_dir), timeout=180)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "drl: aborted"
    assert status(run_dir) == "interrupted"
    assert_loads(run_dir)


# ----------------------------------------------------------------------- a user's env fails
FAULTY = "toy_envs:Faulty-v0"


@pytest.mark.parametrize(
    "backend, fault, expected",
    [
        ("gym", "raise", "raised ValueError: injected fault in step()"),
        ("async", "raise", "raised ValueError: injected fault in step()"),
        ("async", "exit", "in step()"),
    ],
)
def test_an_env_that_fails_ends_the_run_with_its_traceback_and_one_line(tmp_path, backend, fault, expected):
    run_dir = tmp_path / "run"
    # env instance i faults at its 150th step: in the 5th iteration, after the checkpoint of step 512
    result = train(run_dir, "--backend", backend, env_id=FAULTY, fault={"DRL_FAULT": fault, "DRL_FAULT_STEP": "150"})
    assert result.returncode == 1, result.stderr
    line = last_line(result)
    assert line.startswith(f"drl: error: {FAULTY} ") and expected in line, line
    assert "at step 512" in line and "is intact; continue with: drl train --resume" in line, line
    if fault == "raise":  # the env's own traceback, for the user to debug: their file, their line
        assert "toy_envs.py" in result.stderr and 'raise ValueError("injected fault")' in result.stderr
    assert status(run_dir) == "crashed"
    assert assert_loads(run_dir)["global_step"] == 512
    resumed = resume(run_dir, env={"DRL_FAULT": "none"})
    assert resumed.returncode == 0, resumed.stderr
    assert status(run_dir) == "finished"


def test_nan_in_observations_and_rewards_stops_the_run_as_diverged(tmp_path):
    run_dir = tmp_path / "run"
    result = train(run_dir, env_id=FAULTY, fault={"DRL_FAULT": "nan", "DRL_FAULT_STEP": "150"})
    assert result.returncode == 1, result.stderr
    line = last_line(result)
    assert line.startswith("drl: error: non-finite "), line
    assert "between step 512 and step 640" in line, line
    assert "Traceback" not in result.stderr
    assert status(run_dir) == "diverged"
    assert assert_loads(run_dir)["global_step"] == 512  # written before the NaN


def test_a_non_finite_loss_stops_the_run_or_with_on_nan_skip_is_undone(tmp_path):
    """A reward of 3e38 is finite, but its squared error in the value loss is not: the update's
    loss goes non-finite. By default the run stops as diverged; with --on-nan skip the update is
    undone (weights and optimiser state as before it), training goes on and finishes."""
    huge = {"DRL_FAULT": "huge", "DRL_FAULT_STEP": "150"}  # in the 5th iteration (512 < step <= 640)
    stopped = train(tmp_path / "stop", env_id=FAULTY, fault=huge)
    assert stopped.returncode == 1, stopped.stderr
    line = last_line(stopped)
    assert line.startswith("drl: error: non-finite losses (NaN or infinity) between step 512 and step 640"), line
    assert status(tmp_path / "stop") == "diverged"

    run_dir = tmp_path / "skip"
    skipped = train(run_dir, "--on-nan", "skip", env_id=FAULTY, fault=huge)
    assert skipped.returncode == 0, skipped.stderr
    assert "non-finite losses (NaN or infinity) between step 512 and step 640; the update was undone" in skipped.stderr
    assert status(run_dir) == "finished"
    rows = {row["step"]: row for row in read_metrics(run_dir)}
    assert rows[512]["charts/skipped_updates"] == 0 and rows[640]["charts/skipped_updates"] == 1
    assert not any(key.startswith("losses/") for key in rows[640])  # the undone update's losses are not logged
    assert all(math.isfinite(rows[768][key]) for key in rows[768] if key.startswith("losses/"))
    payload = assert_loads(run_dir)  # every weight finite
    assert payload["global_step"] == STEPS and payload["skipped_updates"] == 1


def test_an_env_that_fails_in_its_first_reset_ends_with_one_line_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    result = train(run_dir, env_id=FAULTY, fault={"DRL_FAULT": "raise", "DRL_FAULT_CALL": "reset"})
    assert result.returncode == 1, result.stderr
    assert last_line(result) == f"drl: error: {FAULTY} raised ValueError: injected fault in reset()"
    assert 'raise ValueError("injected fault")' in result.stderr  # the env's traceback, before the line
    assert not run_dir.exists()


def test_an_untrained_policy_evaluation_on_atari_ends_well_within_the_cap():
    """Breakout needs FIRE after each lost life; an untrained policy played as the protocol says
    (sampled actions for PPO) loses its lives and ends; the 108k-frame cap would end it anyway."""
    pytest.importorskip("ale_py")
    from agents import PPOConfig
    from runners.config import TrainConfig
    from runners.evaluate import evaluate, evaluation_protocol
    from runners.trainer import Spaces, build_agent

    env_id = "ALE/Breakout-v5"
    probe = __import__("envs").make(env_id, 1, "gym", training=False)
    cfg = TrainConfig(algo="ppo", env_id=env_id, num_envs=1, device="cpu")
    agent = build_agent(cfg, PPOConfig(), Spaces(probe.single_observation_space, probe.single_action_space), "cpu")
    probe.close()
    deterministic, epsilon = evaluation_protocol("ppo", env_id)
    assert not deterministic
    result = evaluate(agent, env_id, 2, seed=0, deterministic=deterministic, num_envs=2, epsilon=epsilon)
    assert len(result.returns) == 2
    assert max(result.lengths) < 27_000 and result.truncated == 0


# ----------------------------------------------------------------------------- NaN, in-process
def test_finite_checks_name_the_first_non_finite_value_and_clear():
    check = FiniteCheck()
    check.watch("observations", torch.tensor([[0.0, 1.0]]))
    check.watch("images", torch.tensor([255], dtype=torch.uint8))  # integers cannot be NaN
    check.watch_sum("losses", [torch.tensor(1e38), torch.tensor(3e38)])  # finite: the sum is taken in double
    assert check.first_bad() is None
    assert check.first_bad() is None  # nothing watched since

    check.watch("observations", torch.tensor([1.0, 2.0]))
    check.watch("rewards", torch.tensor([1.0, float("nan")]))
    check.watch("observations", torch.tensor([float("inf")], dtype=torch.bfloat16))  # folded into the first
    assert check.first_bad() == "observations"  # in the order first watched
    assert check.first_bad() is None  # cleared

    check.watch_sum("parameters", [torch.ones(3), torch.tensor([float("inf"), -float("inf")])])  # (sum: NaN)
    assert check.first_bad() == "parameters"


def test_an_off_policy_run_whose_weights_go_non_finite_stops_before_a_checkpoint_holds_them(tmp_path, monkeypatch):
    """Off-policy runs watch their parameters at logs and checkpoints only; a NaN weight still
    stops the run at the next update, whose losses it makes non-finite, and the checkpoint left
    is the last one written before."""
    train = TrainConfig(
        algo="dqn", env_id="CartPole-v1", total_steps=2000, num_envs=1, device="cpu", eval_episodes=0,
        checkpoint_every=500, log_every=500, progress=False,
    )  # fmt: skip
    cfg = DQNConfig(learning_starts=100, batch_size=32, buffer_size=2000, network=NetworkConfig(hidden_sizes=(16,)))
    trainer = Trainer(train, cfg)
    update = trainer.agent.update

    def poisoned(batch, progress):
        out = update(batch, progress)
        if progress.step >= 700:  # (progress.step: the env steps done, 4 per update)
            with torch.no_grad():
                next(trainer.agent.q_net.parameters()).view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(trainer.agent, "update", poisoned)
    run_dir = create_run_dir(tmp_path / "run")
    with pytest.raises(Diverged, match=r"non-finite losses \(NaN or infinity\) between step 700 and step 704"):
        trainer.run(run_dir)
    assert status(run_dir) == "diverged"
    assert assert_loads(run_dir)["global_step"] == 500
