"""Optional dependencies, probed once. Everything else asks this module.

Transformer Engine and flash-attn need CUDA and cannot be built on CPU machines; their code paths
are guarded here and selected by config (`transformer_impl`, `attention_backend`).
"""

from __future__ import annotations

import importlib.util

import torch

HAVE_TE = importlib.util.find_spec("transformer_engine") is not None
HAVE_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None
HAVE_APEX = importlib.util.find_spec("apex") is not None
HAVE_CUDA = torch.cuda.is_available()


def require_backends(transformer_impl: str, attention_backend: str) -> None:
    """Raise one line when a requested backend is not installed or has no GPU to run on."""
    if transformer_impl == "transformer_engine" and not (HAVE_TE and HAVE_CUDA):
        raise RuntimeError(
            "transformer_impl=transformer_engine needs Transformer Engine and a CUDA GPU "
            "(pip install -e .[gpu]); use transformer_impl=local attention_backend=sdpa instead"
        )
    if attention_backend == "flash_attn" and not (HAVE_FLASH_ATTN and HAVE_CUDA):
        raise RuntimeError(
            "attention_backend=flash_attn needs flash-attn and a CUDA GPU (pip install flash-attn); "
            "use attention_backend=sdpa instead"
        )
