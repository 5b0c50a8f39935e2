"""Training FLOPs per token: Megatron's closed form in FLM's schema, and every matmul of the built
model counted from its weight shapes when the head dim is decoupled (kv_channels)."""
import pytest

from nemo_flm.training.flops import train_flops_per_token
from tests.conftest import tiny_cfg


def test_megatron_closed_form():
    cfg = tiny_cfg(num_layers=3, hidden_size=64, num_attention_heads=4, ffn_hidden_size=256, seq_length=32)
    layers, h, s, vocab = 3, 64, 32, 1024  # vocab 1000 padded to 1024
    expected = 72 * layers * h * h * (1 + s / (6 * h) + vocab / (12 * layers * h))
    assert train_flops_per_token(cfg) == pytest.approx(expected, rel=1e-12)


def test_counts_every_matmul_with_a_decoupled_head_dim(build):
    model, cfg = build(kv_channels=8)
    matmuls = sum(p.numel() for n, p in model.named_parameters() if p.ndim == 2 and "embedding" not in n)
    attention = cfg.num_layers * 2 * 2 * cfg.seq_length * cfg.num_attention_heads * 8  # q.k^T and p.v
    assert train_flops_per_token(cfg) == 3 * (2 * matmuls + attention)
