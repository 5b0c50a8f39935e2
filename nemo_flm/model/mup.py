"""μP (Tensor Programs V, Adam form): which parameters scale with width, and by how much.

With width multiplier m = hidden_size / mup_base_width, the hidden matrices (q|k|v, the attention
output, fc1, fc2) are initialised with variance sigma^2 / m and trained with Adam LR / m, so their
updates move activations by the same amount at every width. Embeddings, biases, LayerNorms and the
untied output layer keep the base init and LR (the output layer has one width dimension; its
1/m goes into the logit multiplier output_mult / m, model/gpt.py). Attention scores use 1/d_head,
times sqrt(mup_base_head_dim) so they equal 1/sqrt(d_head) at the base head size.

megatron-core 0.16 has no μP (0.17 adds it); the rules live here and are applied where the model
is built (builder.py: init, softmax scale, logit scale) and where optimizers group parameters
(training/optim.py, training/megatron_engine.py: one multiplier per group, `lr_mult`, which the LR
scheduler applies on top of the configured schedule).

`mup_lr` says what the configured `optim.lr` / `min_lr` are (FLM does not say):
- `base`: the base-width model's LRs (what an LR sweep on a proxy finds, and what transfers):
  base-role parameters train at them, hidden matrices at them / m;
- `hidden`: the LRs the hidden matrices get at this width; base-role parameters get them x m.

Weight decay keeps the configured coefficient in every group. AdamW couples it to the LR
(a step shrinks weights by lr x wd), so the hidden matrices decay by 1/m as much per step as at
the base width; Microsoft mup's MuAdam (decoupled_wd=False) instead multiplies their wd by m to
keep lr x wd fixed. Over a proxy's few hundred steps the difference is small (0.1 x 3e-3 x 800
steps is at most 0.24 of log-shrinkage at the base width, ~0.015 at m = 16); it is stated here
as our choice.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from nemo_flm.config import head_dim
from nemo_flm.model.layout import is_hidden_matrix

LR_MODES = ("base", "hidden")


def width_mult(cfg: Any) -> float:
    """m = hidden_size / mup_base_width under μP, else 1."""
    return cfg.hidden_size / cfg.mup_base_width if cfg.use_mup else 1.0


def lr_mult(cfg: Any, name: str) -> float:
    """The factor on the configured LR schedule for parameter `name` (1 without μP)."""
    if not cfg.use_mup:
        return 1.0
    m = width_mult(cfg)
    hidden = is_hidden_matrix(name)
    if cfg.mup_lr == "base":
        return 1.0 / m if hidden else 1.0
    return 1.0 if hidden else m


def logit_scale(cfg: Any) -> float:
    """FLM's HF semantics: logits x output_mult / mup_scale_factor when use_mup is on."""
    return cfg.output_mult / width_mult(cfg) if cfg.use_mup else 1.0


def softmax_scale(cfg: Any) -> Optional[float]:
    """sqrt(mup_base_head_dim) / d_head under μP with a base head size; None (1/sqrt(d_head)) otherwise."""
    if not cfg.use_mup or cfg.mup_base_head_dim is None:
        return None
    return math.sqrt(cfg.mup_base_head_dim) / head_dim(cfg)


def apply(model: Any, cfg: Any) -> None:
    """Make a freshly built model μP's (nothing without use_mup): each parameter is tagged with its
    `lr_mult`, which the optimizers group by (megatron tags parameters the same way, e.g.
    `sequence_parallel`); the hidden matrices' base init (megatron's N(0, sigma^2), or sigma^2 / 2L
    for the residual outputs) becomes variance / m: a N(0, s^2) draw times 1/sqrt(m) is
    N(0, s^2 / m), on every TP shard alike, with the random stream left as the standard build uses it."""
    if not cfg.use_mup:
        return
    m = width_mult(cfg)
    for name, param in model.named_parameters():
        param.lr_mult = lr_mult(cfg, name)
        if is_hidden_matrix(name):
            param.data.mul_(m**-0.5)
