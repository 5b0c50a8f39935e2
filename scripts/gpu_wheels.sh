#!/usr/bin/env bash
# Download, here, the cp312 wheels that scripts/gpu_check.sh installs on the GPU machine (Python 3.12,
# a CUDA torch of its own, no network) into .whl/ (ignored by git; carried with `carry: [".whl"]`).
# Only what that machine lacks, with no dependencies resolved, to stay inside the 64 MiB a call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
PACKAGES=(
  "megatron-core==0.16.1" "nemo_toolkit==3.0.0" "lightning==2.5.*" "lightning-utilities" "torchmetrics"
  "hydra-core==1.3.2" "omegaconf==2.3.0" "antlr4-python3-runtime==4.9.3" "tiktoken" "regex" "safetensors"
  "snownlp" "tensorboard" "protobuf" "wrapt" "onelogger" "pytest" "iniconfig" "pluggy"
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d .whl "${PACKAGES[@]}"
du -sh .whl
