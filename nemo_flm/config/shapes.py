"""Sizes derived from a model config, in one place: FFN width, head dim, padded vocab, the
steps of a token budget, and how far xPos reaches before its factors leave float range."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import OmegaConf

MAX_LOG_FACTOR = 30.0  # |ln| of the largest xPos factor at a position (e^30 ~ 1e13): a forward spanning
# 2 x reach meets e^60 in its masked future scores, leaving fp32/bf16 (e^88.7) room for q.k itself


def samples_for_tokens(tokens: float, seq_length: int) -> int:
    """Whole samples of seq_length that cover a token budget."""
    return math.ceil(float(tokens) / int(seq_length))


def steps_for_tokens(tokens: float, seq_length: int, global_batch_size: int) -> int:
    """Optimizer steps that cover a token budget (FLM: 245.37B tokens at 2304 x 2048 -> 52,001)."""
    return math.ceil(samples_for_tokens(tokens, seq_length) / int(global_batch_size))


# job YAMLs derive step counts from token budgets: ${flm_steps:${train_tokens},${model.seq_length},...}
OmegaConf.register_new_resolver("flm_samples", samples_for_tokens, replace=True)
OmegaConf.register_new_resolver("flm_steps", steps_for_tokens, replace=True)


def ffn_size(cfg: Any) -> int:
    return cfg.ffn_hidden_size or 4 * cfg.hidden_size


def head_dim(cfg: Any) -> int:
    return cfg.kv_channels or cfg.hidden_size // cfg.num_attention_heads


def padded_vocab_size(cfg: Any) -> int:
    """Vocab padded to a multiple of make_vocab_size_divisible_by x TP (100256 -> 100352 for any TP up to 16)."""
    multiple = cfg.make_vocab_size_divisible_by * cfg.parallel.tensor_model_parallel_size
    return -(-cfg.vocab_size // multiple) * multiple


def xpos_reach(gamma: float, scale_base: float) -> int:
    """How far (in positions) from the centre every xPos factor stays within e^(+-MAX_LOG_FACTOR):
    the smallest zeta, gamma/(1+gamma), grows fastest (12,260 positions for FLM's gamma 0.4, base 512)."""
    smallest_zeta = gamma / (1.0 + gamma)
    return int(MAX_LOG_FACTOR * scale_base / -math.log(smallest_zeta))
