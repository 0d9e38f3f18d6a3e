#!/usr/bin/env bash
# The GPU checks, as one prepared script for a lent GPU machine (a measurement run, not part of CI).
#
#   bash tests/perf/gpu_checks.sh [OUT_DIR]        # about 6-8 minutes on one H100/H200
#
# 1. no host sync inside any method's training step (CUDA sync-debug mode raises on any sync),
# 2. the ResNet-18 audio-visual trial on prepared data vs its model-only bound (fp32, then bf16, then
#    bf16 + channels_last): samples/s, fraction of the bound, data-wait fraction, peak memory,
# 3. every method's seconds per epoch vs joint on the GPU (mfeat, small),
# 4. NCCL: a 1-worker DDP trial end to end through Ray Train (one GPU cannot hold two NCCL ranks).
# Each step's output goes to OUT_DIR (default $OUT, else ./gpu_checks); a failing step does not stop
# the others; the exit status is that of the first failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:-${OUT:-gpu_checks}}"
mkdir -p "$out"
export RAY_USAGE_STATS_ENABLED=0 WANDB_MODE=offline PYTHONUNBUFFERED=1
status=0
step() {  # step NAME COMMAND...: run, keep the log, remember the first failure
  local name="$1"
  shift
  echo "== $name: $*"
  local t0=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "   rc $rc in $((SECONDS - t0)) s (log: $out/$name.log)"
  tail -n 25 "$out/$name.log"
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
}

python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
  || exit 2
nvidia-smi >"$out/nvidia-smi.txt" 2>&1

step sync python -m pytest -q -p no:cacheprovider tests/test_host_sync.py tests/test_method_mie.py -k "gpu"
step av_fp32 mmbal bench --only av --device cuda --av-batch 64 --av-dir "$out/av"
step av_bf16 mmbal bench --only av --device cuda --av-batch 64 --av-dir "$out/av" --set precision=bf16
step av_bf16_cl mmbal bench --only av --device cuda --av-batch 64 --av-dir "$out/av" \
  --set precision=bf16 --set channels_last=true
step methods mmbal bench --only methods step --device cuda --epochs 3
step ddp_nccl mmbal sweep sweeps/quickstart.yaml --set results="$out/ddp" --set execution.mode=ddp \
  --set execution.num_workers=1 --set execution.use_gpu=true --set "seeds=[0]" --set epochs=2 --set tracking=none \
  --set "methods={joint: {}}"
exit "$status"
