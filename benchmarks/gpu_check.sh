#!/usr/bin/env bash
# The GPU checks as one prepared run, under 8 minutes on one GPU, ending in one table:
#   (a) native CartPole PPO training steps/s at 4096, 16384 and 65536 envs, eager and --compile;
#   (b) the on-policy collector under torch.cuda.set_sync_debug_mode("error"): PASS when a few
#       rollouts of the native CartPole env on the GPU read nothing back to the host;
#   (c) SAC milliseconds per gradient step, eager and compiled (benchmarks/update_step.py);
#   (d) Pong on EnvPool with the learner on the GPU: env frames/s (steps/s x 4, the frame skip);
#   then, with time to spare, the TD3 and DQN gradient steps as (c).
# Every part runs under `timeout`, capped by what is left of the whole budget (BUDGET_S), so
# one that fails or hangs costs its own row only. Training steps/s is the median of
# charts/sps over a run's metrics.jsonl rows after the first two (CUDA start-up, compilation,
# CUDA graph recording). Run from anywhere:
#   bash benchmarks/gpu_check.sh                 # the table on stdout, and in $OUT/gpu_check.txt
# The full log goes to $OUT/gpu_check.log (else to the temp dir the script names).
#
# The device machine's python3 holds a CUDA torch but not gymnasium or EnvPool. Here, once,
# with network access:
#   bash benchmarks/gpu_check.sh --prepare      # adds to .whl/ (ignored by git), about 13 MB
# then run this script there with carry [".whl"]. .whl/ holds cp312 wheels (gymnasium and
# what it and EnvPool import) and .whl/site/, EnvPool cut down to its Atari part (its own
# wheels come to 115 MB, over the 64 MiB that travels).
#
# Knobs, for a trial on a CPU (e.g. PYTHON=.venv/bin/python DEVICE=cpu CARTPOLE_ENVS="64 128"
# CARTPOLE_BATCH=512 CARTPOLE_ITERS=4 PONG_ENVS=4 PONG_ITERS=3 SAC_STEPS=200 bash benchmarks/gpu_check.sh):
#   PYTHON (python3), DEVICE (cuda), BUDGET_S (450), CARTPOLE_ENVS ("4096 16384 65536"),
#   CARTPOLE_ITERS (12), CARTPOLE_BATCH (8192), PONG_ENVS (64), PONG_ITERS (6), SAC_STEPS (600).
# CartPole runs the CartPole-v1@native preset (16 steps per env per rollout, 2 epochs) with one
# change: minibatches of CARTPOLE_BATCH rather than the preset's 1024, so that 65536 envs do
# not make 2048 gradient steps of 1024 per rollout, and one size for every env count lets the
# compiled step be compiled once (later runs load it from TorchInductor's cache).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  # Run here, not on the device machine: downloads cp312 wheels and trims EnvPool.
  py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
  rm -rf .whl/site .whl/big && mkdir -p .whl/site .whl/big || exit 1  # other wheels in .whl/ stay
  platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64)
  get() { "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$@"; }
  get .whl gymnasium==1.4.0 farama-notifications==0.0.6 dm-env==1.6 optree==0.20.0 || exit 1
  get .whl/big envpool==1.2.5 envpool-assets==0.3.0 || exit 1
  (cd .whl/site && for w in ../big/*.whl; do unzip -q -o "$w"; done) || exit 1
  rm -rf .whl/big .whl/site/*.dist-info
  # Keep the Atari env and its ROMs; the other envs' packages import their compiled modules.
  for d in .whl/site/envpool/*/; do
    case $(basename "$d") in atari | python) ;; *) rm -rf "$d" ;; esac
  done
  for d in .whl/site/envpool_assets/*/; do [ "$(basename "$d")" = atari ] || rm -rf "$d"; done
  echo 'import envpool.atari.registration  # noqa: F401  (cut down to Atari by benchmarks/gpu_check.sh)' \
    >.whl/site/envpool/entry.py
  # pip installs them all at once there, and two versions of one package stop it
  twice=$(ls .whl/*.whl | sed 's|.*/||; s/-.*//' | tr A-Z- a-z_ | sort | uniq -d)
  [ -z "$twice" ] || { echo "gpu_check: .whl/ holds two versions of: $twice; remove one" >&2; exit 1; }
  du -sh .whl
  exit 0
fi

PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-450}
CARTPOLE_ENVS=${CARTPOLE_ENVS:-4096 16384 65536}
CARTPOLE_ITERS=${CARTPOLE_ITERS:-12}
CARTPOLE_BATCH=${CARTPOLE_BATCH:-8192}
PONG_ENVS=${PONG_ENVS:-64}
PONG_ITERS=${PONG_ITERS:-6}
SAC_STEPS=${SAC_STEPS:-600}

if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/.whl/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
work=$(mktemp -d /tmp/gpu_check.XXXXXX)
log=${OUT:+$OUT/gpu_check.log}
log=${log:-$work/gpu_check.log}
: >"$log"
echo "gpu_check: runs in $work, log in $log" >&2

# timeout for a part: its cap, or what is left of the budget if less (0: skip it)
cap() {
  local left=$((BUDGET_S - SECONDS))
  ((left < 15)) && { echo 0; return; }
  echo $(($1 < left ? $1 : left))
}
# run NAME CAP COMMAND...: the command under timeout, its output in $work/NAME.out and the log; sets rc
run() {
  local name=$1 t
  t=$(cap "$2")
  shift 2
  if ((t == 0)); then
    rc=skipped
    : >"$work/$name.out"
    echo "== $name: skipped (budget of $BUDGET_S s spent)" >>"$log"
    return
  fi
  echo "== $name (timeout $t s, at $SECONDS s): $*" >>"$log"
  timeout -k 10 "$t" "$@" >"$work/$name.out" 2>&1
  rc=$?
  cat "$work/$name.out" >>"$log"
  echo "== $name: exit $rc after $SECONDS s" >>"$log"
}
# table cells: what went wrong with a part that gave no figure, and a note beside one that did
failed() { case $rc in 124 | 137) echo "timed out" ;; skipped) echo "skipped (budget spent)" ;; *) echo "failed (exit $rc)" ;; esac }
why() { case $rc in 0) ;; 124 | 137) echo " (timed out)" ;; *) echo " (exit $rc)" ;; esac }
# median charts/sps of RUN_DIR's metrics.jsonl, the first SKIP rows left out (fewer if that leaves none)
sps() {
  "$PY" - "$1" "$2" <<'EOF'
import json, statistics, sys
from pathlib import Path

path, skip = Path(sys.argv[1]) / "metrics.jsonl", int(sys.argv[2])
rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
speeds = [r["charts/sps"] for r in rows if "charts/sps" in r]
while skip and len(speeds) <= skip:
    skip -= 1
print(f"{statistics.median(speeds[skip:]):.0f} {len(speeds) - skip}" if speeds else "- 0")
EOF
}
fmt() { "$PY" -c 'import sys; print(f"{float(sys.argv[1]) * float(sys.argv[2]):,.0f}")' "$1" "${2:-1}"; }

gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)
torch_info=$("$PY" -c 'import torch; print(f"torch {torch.__version__}, cuda {torch.version.cuda}")' 2>&1 | tail -1)
echo "${gpu:-no nvidia-smi}; $torch_info" >>"$log"

# (b) no host sync per step: cheap, so first; then (a), (d), (c)
run sync_check 90 "$PY" - "$DEVICE" 4096 3 <<'EOF'
import sys

import torch

import envs
from agents import get_algorithm
from agents.presets import load_preset
from runners.cliargs import set_values
from runners.config import TrainConfig
from runners.rollout import OnPolicyCollector

device, num_envs, rollouts = torch.device(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
spec = get_algorithm("ppo")
train, cfg = TrainConfig(algo="ppo", env_id="CartPole-v1", backend="native"), spec.config_cls()
set_values([train, cfg], load_preset("ppo", "CartPole-v1", None, "native")[1], "preset")
env = envs.make("CartPole-v1", num_envs, backend="native", seed=0, device=device)
torch.manual_seed(0)
agent = spec.make_agent(cfg, env.single_observation_space, env.single_action_space, num_envs, device, 0)
collector = OnPolicyCollector(env, agent, cfg.n_steps)
collector.reset(seed=0)
collector.collect()  # warm-up: lazy initialisation may read the device once
cuda = device.type == "cuda"
if cuda:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync raises
try:
    for _ in range(rollouts):
        rollout = collector.collect()
finally:
    if cuda:
        torch.cuda.set_sync_debug_mode(0)
steps = rollouts * cfg.n_steps * num_envs
episodes = collector.pop_episode_stats()["charts/episodes"].item()
print(f"SYNC_CHECK {'PASS' if cuda else 'RAN'} {steps} steps, {episodes:.0f} episodes ended")
EOF
line=$(grep -a '^SYNC_CHECK' "$work/sync_check.out" | tail -1)
if [ "$rc" = 0 ] && [ -n "$line" ]; then
  result=${line#SYNC_CHECK }
  [ "$DEVICE" = cuda ] || result="$result (on $DEVICE: no sync check)"
else  # the error's last line says which operation synchronised
  error=$(grep -a -E 'Error' "$work/sync_check.out" | tail -1 | cut -c1-160)
  result="FAIL: $(failed)${error:+: $error}"
fi
sync_row="| (b) on-policy collector, native CartPole, 4096 envs, 3 rollouts, set_sync_debug_mode(\"error\") | $result | |"

# (a) native CartPole PPO training steps/s
declare -A cp
for compile in --no-compile --compile; do
  [ "$compile" = --compile ] && limit=100 || limit=50
  for n in $CARTPOLE_ENVS; do
    name=cartpole_$n$compile per=$((16 * n))
    run "$name" "$limit" "$PY" -m runners.cli train ppo CartPole-v1 --backend native --device "$DEVICE" $compile \
      --num-envs "$n" --batch-size "$CARTPOLE_BATCH" --total-steps $((per * CARTPOLE_ITERS)) --log-every "$per" \
      --eval-episodes 0 --no-stop-when-solved --checkpoint-every 0 --no-progress --run-dir "$work/$name"
    read -r v k < <(sps "$work/$name" 2)
    if [ "${v:--}" = - ]; then
      cp[$n$compile]=$(failed)
    else
      cp[$n$compile]="$(fmt "$v")$(why)"
      ((k >= CARTPOLE_ITERS - 2)) || cp[$n$compile]+=" ($k iterations)"
    fi
  done
done

# (d) Pong on EnvPool, the learner on the device (no evaluation: it would need ale-py)
per=$((PONG_ENVS * 128)) # the Atari preset's n_steps
run pong 90 "$PY" -m runners.cli train ppo ALE/Pong-v5 --backend envpool --device "$DEVICE" \
  --num-envs "$PONG_ENVS" --total-steps $((per * PONG_ITERS)) --log-every "$per" \
  --eval-episodes 0 --checkpoint-every 0 --no-progress --run-dir "$work/pong"
read -r v k < <(sps "$work/pong" 1)
label="(d) PPO ALE/Pong-v5, EnvPool, $PONG_ENVS envs, learner on $DEVICE, env frames/s"
if [ "${v:--}" = - ]; then
  pong_row="| $label | $(failed) | |"
else
  pong_row="| $label | $(fmt "$v" 4)$(why) | $(fmt "$v") steps/s x frame skip 4; median of $k iterations |"
fi

# (c) SAC ms per gradient step; then, with time to spare, TD3 and DQN as before
ms_row() { # NAME LABEL: a table row from update_step's summary lines
  local line floor
  line=$(grep -a '^median ms per gradient step' "$work/$1.out" | tail -1)
  floor=$(grep -a '^matmul work per step' "$work/$1.out" | tail -1 | sed 's/.*; floor/floor/')
  if [ "$rc" = 0 ] && [ -n "$line" ]; then
    echo "| $2 | ${line#median ms per gradient step: } | $floor |"
  else
    echo "| $2 | $(failed) | |"
  fi
}
run sac 150 "$PY" benchmarks/update_step.py --algo sac --device "$DEVICE" --rounds 1 --steps "$SAC_STEPS"
update_rows=("$(ms_row sac "(c) SAC gradient step (Pendulum-v1 preset, batch 256), ms")")
for algo in td3 dqn; do
  ((BUDGET_S - SECONDS > 120)) || break
  run "$algo" 150 "$PY" benchmarks/update_step.py --algo "$algo" --device "$DEVICE" --rounds 1 --steps "$SAC_STEPS"
  update_rows+=("$(ms_row "$algo" "${algo^^} gradient step, ms (spare time)")")
done

{
  echo "GPU check on ${gpu:-no GPU found} ($torch_info): $SECONDS s"
  echo
  echo "| check | result | note |"
  echo "|---|---|---|"
  for n in $CARTPOLE_ENVS; do
    echo "| (a) PPO CartPole-v1 native, $n envs, training steps/s | eager ${cp[$n--no-compile]}, compiled ${cp[$n--compile]} | minibatch $CARTPOLE_BATCH; median over iterations 3-$CARTPOLE_ITERS |"
  done
  echo "$sync_row"
  echo "${update_rows[0]}"
  echo "$pong_row"
  for r in "${update_rows[@]:1}"; do echo "$r"; done
} | tee "$work/gpu_check.txt"
[ -n "${OUT:-}" ] && cp "$work/gpu_check.txt" "$OUT/gpu_check.txt"
exit 0
