#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one run of about 4 minutes on the device machine:
#   1. the `gpu`-marked tests (tests/gpu/: CUDA model, fused kernels, the megatron engine on CUDA);
#   2. scripts/bench_gpu.py: tokens/s and MFU of the megatron engine at FLM's 16B layer shape,
#      without and with activation recompute, and a loss-goes-down run;
#   3. a short bf16 run of the main job through scripts/train.py (Lightning + the megatron engine),
#      saving asynchronously, then the same command resuming from its last checkpoint.
# That machine has Python 3.12 and a CUDA torch, but neither NeMo nor megatron-core, and no network:
# make the wheels here first with scripts/gpu_wheels.sh (into .git-ignored .whl/), then run
#   device run: bash scripts/gpu_check.sh   with carry [".whl"]
# (the main job runs without its TensorBoard logger there: matplotlib is not carried).
# CI never needs a GPU. Last run on one H200 on 2026-11-29: 4 tests passed, 40.6% MFU (README).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here: nothing to check')"
if [ -d .whl ]; then  # made here by scripts/gpu_wheels.sh
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD/.whl/pylib:$PWD/scripts/gpu_stubs:$PWD"
fi
export PYTHONUNBUFFERED=1 CUDA_DEVICE_MAX_CONNECTIONS=1
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
failed=0
python3 -m pytest -q -m gpu tests/gpu 2>&1 | tee "$OUT/gpu_tests.log" || failed=1  # the benchmarks run regardless
timeout 300 python3 scripts/bench_gpu.py 2>&1 | tee "$OUT/bench_gpu.log" || failed=1
main_job() {  # the main job through Lightning, bf16, saving asynchronously every 10 steps
  timeout 180 python3 scripts/train.py trainer.accelerator=gpu trainer.devices=1 trainer.max_steps="$1" \
    trainer.val_check_interval=15 model.params_dtype=bf16 exp_manager.exp_dir="$OUT/main_job" \
    exp_manager.checkpoint_callback_params.every_n_train_steps=10 checkpoint.async_save=true \
    exp_manager.create_tensorboard_logger=false 2>&1 | tail -25
}
main_job 30 | tee "$OUT/main_job.log" || failed=1
main_job 40 | tee "$OUT/main_job_resumed.log" || failed=1  # resumes from the asynchronous step-30 checkpoint
grep -q "resuming from" "$OUT/main_job_resumed.log" || { echo "the second run did not resume"; failed=1; }
exit "$failed"
