"""Training FLOPs per token against a measurement: one real forward + backward of a tiny built model
under torch's FlopCounterMode, which counts every matmul the model actually runs (nothing here
restates the closed form).

On CPU the default SDPA kernel (aten._scaled_dot_product_flash_attention_for_cpu) is not in
torch's flop registry, so the count runs with the math SDPA backend: attention becomes two bmm per
layer (q.k^T and p.v), dense with the causal mask applied after the product, which is Megatron's
convention (causal not halved). LayerNorm, GeLU, softmax, xPos, bias adds and the loss are
elementwise and not counted, as in the convention.
"""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nemo_flm.flops import train_flops_per_token

BATCH = 2


def measure(model, cfg):
    """FLOPs of one training step (forward, loss, backward) on BATCH x seq_length tokens, by op."""
    tokens = torch.randint(0, cfg.vocab_size, (BATCH, cfg.seq_length))
    positions = torch.arange(cfg.seq_length)[None].expand(BATCH, -1)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(tokens, positions, None, labels=tokens).mean().backward()
    return {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}


@pytest.mark.parametrize(
    "overrides",
    [{}, {"num_layers": 3, "ffn_hidden_size": 192, "tie_word_embeddings": True}, {"kv_channels": 8}],
    ids=["flm-schema", "deeper-narrow-ffn-tied", "head-dim-decoupled"],
)
def test_train_flops_match_a_measured_step(build, overrides):
    """Every term (block matmuls, attention, lm_head, the 3x for backward) must be in the formula:
    a missing or extra one changes the total by a multiple of the token count."""
    model, cfg = build(**overrides)
    measured = sum(measure(model, cfg).values())
    formula = train_flops_per_token(cfg) * BATCH * cfg.seq_length
    assert formula == measured


def test_attention_was_counted(build):
    """Guard on the measurement itself: the bmm are exactly q.k^T and p.v for every head and layer,
    forward (2 b heads s^2 d each) and backward (twice the forward)."""
    model, cfg = build(kv_channels=8)
    qk_and_pv = 2 * (2 * BATCH * cfg.num_attention_heads * cfg.seq_length**2 * 8)
    assert measure(model, cfg)["aten.bmm"] == 3 * cfg.num_layers * qk_and_pv
