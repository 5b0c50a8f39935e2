"""Training FLOPs per token (Megatron's convention, lm_head included).

Forward FLOPs per token of an L-layer model with hidden h, attention width a = heads x head dim
(a = h in FLM's schema), FFN f, vocab V and sequence s:
    2 * L * (4ha + 2hf)    the qkv, attention-output, fc1 and fc2 matmuls
  + 2 * L * 2 * s * a      the attention scores q.k^T and the weighted sum of v (causal not halved)
  + 2 * h * V              the output layer (lm_head)
Training is 3x forward (backward = 2x). With a = h and f = 4h this is Megatron's
72 L h^2 (1 + s/(6h) + V/(12 L h)) per token.
"""

from __future__ import annotations

from typing import Any

from nemo_flm.config import ffn_size, head_dim, padded_vocab_size


def train_flops_per_token(cfg: Any) -> float:
    h, layers, s = cfg.hidden_size, cfg.num_layers, cfg.seq_length
    a = cfg.num_attention_heads * head_dim(cfg)
    forward = 2 * layers * (4 * h * a + 2 * h * ffn_size(cfg)) + 4 * layers * s * a + 2 * h * padded_vocab_size(cfg)
    return 3.0 * forward
