#!/usr/bin/env bash
# The second supported stack: Python 3.12 + megatron-core 0.19, in a fresh virtual environment
# (default ${TMPDIR:-/tmp}/nemo_flm_py312; pass another path as $1), running the 3.12 subset:
# the fast tests (-m "not slow"), then the engine equivalences, the README's commands and growth
# exactness (staged runs, offline growth, growth read at TP2).
#   bash scripts/test_py312.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${TMPDIR:-/tmp}/nemo_flm_py312}"
PY312="$(ls -d "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.12.*/bin/python 2>/dev/null | tail -n 1 || true)"
if [ -z "$PY312" ] && python3.12 --version >/dev/null 2>&1; then PY312="$(command -v python3.12)"; fi
if [ -z "$PY312" ]; then
  echo "error: no Python 3.12 (install one, e.g. pyenv install 3.12)" >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || "$PY312" -m venv "$VENV"
export PATH="$VENV/bin:$PATH"  # `python` in the tests' commands is this stack's
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -e ".[test]" "megatron-core>=0.19,<0.20"
"$VENV/bin/python" -c "import sys, megatron.core as m, torch; print('stack:', sys.version.split()[0], 'megatron-core', m.__version__, 'torch', torch.__version__)"
"$VENV/bin/python" -m pytest -q -m "not slow"
"$VENV/bin/python" -m pytest -q tests/integration/test_engines.py tests/integration/test_readme.py \
  tests/integration/test_staged_growth.py tests/integration/test_offline_growth.py \
  tests/integration/test_growth_tensor_parallel.py
