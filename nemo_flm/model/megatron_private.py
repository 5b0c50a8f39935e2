"""The private megatron-core methods nemo_flm replaces, and the megatron sources each replacement
was reviewed against.

Public extension points first (layer specs, submodules, `decoder_input`); three methods have none
in every supported release (megatron-core 0.16 to 0.19), so subclasses replace them:

- `GPTModel._postprocess` (model/gpt.py): the logit multiplier on the final hidden states and the
  inference logits gathered on the model's device. 0.19 adds `output_processor` and `use_mup`
  hooks; 0.16 has neither, so the override stays while 0.16 is supported.
- `Attention._adjust_key_value_for_inference` (model/attention.py): xPos on q and k before the
  KV-cache write.
- `Attention._allocate_memory` (model/kv_memory.py): KV-cache buffers on the model's device.

and one private method is called: `DistributedOptimizer._get_model_param_range_map`
(training/megatron_optimizer.py), the range of a parameter its DP rank's optimizer shard owns.

A reviewed source is named by the first 12 hex digits of the SHA-256 of `inspect.getsource` of
megatron's method. When megatron changes one, tests/unit/model/test_megatron_private.py fails
with the method's name: read the new source, adapt the override, and add its digest here.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from types import FunctionType
from typing import Dict, FrozenSet, List

from megatron.core.models.gpt import GPTModel
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
from megatron.core.transformer.attention import SelfAttention


@dataclass(frozen=True)
class PrivateMethod:
    base: type  # the megatron class that defines it
    method: str
    reviewed: FrozenSet[str]  # digests of megatron sources our use was checked against
    where: str  # our module that replaces (or calls) it


OVERRIDES = (  # replaced by a subclass of ours
    PrivateMethod(
        GPTModel,
        "_postprocess",
        frozenset({"a5f7de0bfb1c", "41700c5f809c"}),  # megatron-core 0.16.1, 0.19.2
        "nemo_flm.model.gpt",
    ),
    PrivateMethod(
        SelfAttention,
        "_adjust_key_value_for_inference",
        frozenset({"6a6b900c04cb", "4658bf71c458"}),  # 0.16.1, 0.19.2
        "nemo_flm.model.attention",
    ),
    PrivateMethod(
        SelfAttention,
        "_allocate_memory",
        frozenset({"eaa919b87281"}),  # 0.16.1 and 0.19.2 alike
        "nemo_flm.model.kv_memory",
    ),
)
CALLED = (  # called by our code
    PrivateMethod(
        DistributedOptimizer,
        "_get_model_param_range_map",
        frozenset({"3efe94941ef0"}),  # 0.16.1 and 0.19.2 alike
        "nemo_flm.training.megatron_optimizer",
    ),
)


def source_digest(base: type, method: str) -> str:
    """The installed megatron's source of `base.method`, as a 12-digit SHA-256 prefix."""
    return hashlib.sha256(inspect.getsource(getattr(base, method)).encode()).hexdigest()[:12]


def unreviewed() -> Dict[str, str]:
    """'Class.method' -> installed digest, for each private method (replaced or called) whose
    megatron source is not a reviewed one."""
    changed = {}
    for override in OVERRIDES + CALLED:
        digest = source_digest(override.base, override.method)
        if digest not in override.reviewed:
            changed[f"{getattr(override.base, override.method).__qualname__}"] = digest
    return changed


def private_methods_replaced(ours: type) -> List[str]:
    """Private methods (one leading underscore) that a megatron base of `ours` defines and a class of
    ours (not megatron's, not torch's) replaces."""
    found = []
    for name in dir(ours):
        if not name.startswith("_") or name.startswith("__"):
            continue
        owner = next((k for k in ours.__mro__ if name in vars(k)), None)
        if owner is None or owner.__module__.split(".")[0] in ("megatron", "torch"):
            continue
        if not isinstance(vars(owner)[name], (FunctionType, classmethod, staticmethod, property)):
            continue
        if any(name in vars(k) for k in ours.__mro__ if k.__module__.startswith("megatron")):
            found.append(name)
    return sorted(found)
