"""What one growth event changes: old and new sizes, and which layers are new.

A `GrowthPlan` is derived from two model configs (a stage change grows whatever differs) and a
depth mode. It is plain data, shared by the state-dict operators and the masked modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

from nemo_flm.config import ffn_size, head_dim
from nemo_flm.errors import ConfigError
from nemo_flm.model.mup import logit_scale, softmax_scale

DEPTH_MODES = ("stack", "interleave", "random")


@dataclass
class GrowthPlan:
    old_hidden: int
    new_hidden: int
    old_ffn: int
    new_ffn: int
    old_heads: int
    new_heads: int
    head_dim: int
    # source[j] = the old layer that new-model layer j is (or copies); None = a fresh random layer
    source: List[Any] = field(default_factory=list)
    new_layers: List[int] = field(default_factory=list)  # new-model indices of the added layers
    # muP: the logit multiplier output_mult / m changes with width; the output layer
    # is multiplied by old/new multiplier so the logits stay the same
    output_rescale: float = 1.0

    @property
    def old_layers(self) -> int:
        return len(self.source) - len(self.new_layers)


def _layer_sources(old_layers: int, new_layers: int, mode: str) -> tuple[list, list]:
    """(source per new-model layer, indices of added layers) for a depth growth."""
    extra = new_layers - old_layers
    if mode == "random":
        return list(range(old_layers)) + [None] * extra, list(range(old_layers, new_layers))
    copies = [old_layers - 1 - (i % old_layers) for i in range(extra)][::-1]  # the top layers, in order
    if mode == "stack":  # copies stacked on top: [0..L-1, copies of the top `extra` layers]
        return list(range(old_layers)) + copies, list(range(old_layers, new_layers))
    # interleave: each copy goes right after the layer it copies
    source, added = [], []
    pending = sorted(copies)
    for layer in range(old_layers):
        source.append(layer)
        while pending and pending[0] == layer:
            pending.pop(0)
            added.append(len(source))
            source.append(layer)
    return source, added


def attention_scale(cfg: Any) -> float:
    """The scores' factor: μP's sqrt(base) / d_head, or 1/sqrt(d_head)."""
    return softmax_scale(cfg) or head_dim(cfg) ** -0.5


def make_plan(old: Any, new: Any, depth_mode: str = "stack") -> GrowthPlan:
    """The plan growing model config `old` into `new`; one-line ConfigError when it cannot."""
    if depth_mode not in DEPTH_MODES:
        raise ConfigError(f"depth_mode must be one of {DEPTH_MODES}, got '{depth_mode}'")
    dim = head_dim(old)
    if head_dim(new) != dim:
        raise ConfigError(
            f"head dim changes {dim} -> {head_dim(new)}: growth keeps the head dim; pick heads = hidden / {dim} "
            f"(FLM's schema), or set kv_channels: {dim} to grow hidden and heads separately"
        )
    pairs = {
        "num_layers": (old.num_layers, new.num_layers),
        "hidden_size": (old.hidden_size, new.hidden_size),
        "num_attention_heads": (old.num_attention_heads, new.num_attention_heads),
        "ffn_hidden_size": (ffn_size(old), ffn_size(new)),
    }
    for name, (a, b) in pairs.items():
        if b < a:
            raise ConfigError(f"{name} shrinks {a} -> {b}: growth only adds; start from a smaller checkpoint")
    for key in ("vocab_size", "seq_length", "position_embedding", "tie_word_embeddings", "use_mup", "input_mult"):
        if old[key] != new[key]:
            raise ConfigError(f"{key} differs ({old[key]} -> {new[key]}): growth keeps it; use the checkpoint's value")
    if attention_scale(old) != attention_scale(new):
        raise ConfigError(
            f"mup_base_head_dim changes the attention scale ({old.mup_base_head_dim} -> {new.mup_base_head_dim}): "
            "growth keeps it; use the checkpoint's value"
        )
    output_rescale = logit_scale(old) / logit_scale(new)
    if output_rescale != 1.0 and new.tie_word_embeddings:
        raise ConfigError(
            "the logit multiplier changes but embeddings are tied: the output layer cannot be rescaled alone"
        )
    source, added = _layer_sources(old.num_layers, new.num_layers, depth_mode)
    return GrowthPlan(
        old_hidden=old.hidden_size,
        new_hidden=new.hidden_size,
        old_ffn=ffn_size(old),
        new_ffn=ffn_size(new),
        old_heads=old.num_attention_heads,
        new_heads=new.num_attention_heads,
        head_dim=dim,
        source=source,
        new_layers=added,
        output_rescale=output_rescale,
    )
