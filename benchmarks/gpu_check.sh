#!/usr/bin/env bash
# The GPU checks of issue 16 as one prepared run (not yet run on a GPU: no session had one).
# On the device machine, python3 holds a CUDA torch but not gymnasium, wandb or moviepy: carry
# them as wheels in .whl/ (see the device tool's README), e.g. from the repo root here:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl gymnasium farama-notifications cloudpickle moviepy \
#     proglog decorator imageio-ffmpeg wandb pygame-ce python-dotenv
# then run this script with carry [".whl"]. It prints steps/s and ms per update for SAC and PPO
# with --device cuda --compile, and the eager figures beside them.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
for algo in sac td3 dqn; do
  timeout 240 python3 benchmarks/update_step.py --algo "$algo" --device cuda --rounds 1 --steps 600 2>&1 | tee -a "$out/update_step.txt"
done
for compile in --no-compile --compile; do
  timeout 300 python3 -m runners.cli train sac Pendulum-v1 --device cuda $compile --total-steps 5000 \
    --eval-every 0 --no-progress --run-dir "$out/sac$compile" 2>&1 | tail -2 | tee -a "$out/train.txt"
  timeout 300 python3 -m runners.cli train ppo CartPole-v1 --backend native --device cuda $compile \
    --eval-every 0 --no-progress --run-dir "$out/ppo$compile" 2>&1 | tail -2 | tee -a "$out/train.txt"
done
