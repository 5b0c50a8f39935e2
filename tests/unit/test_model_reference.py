"""A hand-written plain-PyTorch FLM forward (from the formulas) against the megatron-core model.

The reference reads the megatron weights by name and recomputes everything itself: LayerNorm,
fused-qkv split (megatron interleaves q|k|v per head), xPos (complex-number form), causal softmax
with 1/sqrt(d) scaling, tanh-GeLU MLP, residuals, final LayerNorm, untied lm_head, FLM's
input/output multipliers.
"""
import math

import pytest
import torch

from nemo_flm.model.builder import position_config


def layer_norm(x, weight, bias, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * weight + bias


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def place(x, positions, pos, sign):
    """x [b, s, heads, d]: complex rotation of pairs (i, i+d/2) and xPos scale^(sign)."""
    d = x.shape[-1]
    i = torch.arange(d // 2, dtype=torch.float64)
    angle = positions.double()[:, None] * pos.theta ** (-2 * i / d)  # [s, d/2]
    z = torch.complex(x[..., : d // 2].double(), x[..., d // 2 :].double()) * torch.polar(torch.ones_like(angle), angle)[None, :, None, :]
    if pos.kind == "xpos":
        zeta = (2 * i + pos.gamma * d) / ((1 + pos.gamma) * d)
        z = z * (zeta[None, :] ** (sign * (positions.double()[:, None] - pos.center) / pos.scale_base))[None, :, None, :]
    return torch.cat([z.real, z.imag], dim=-1).float()


def reference_forward(model, cfg, tokens):
    heads, hidden = cfg.num_attention_heads, cfg.hidden_size
    d = cfg.kv_channels or hidden // heads  # the head dim
    pos = position_config(cfg)
    b, s = tokens.shape
    positions = torch.arange(s)
    sd = {k: v.float() for k, v in model.state_dict().items() if v is not None and torch.is_tensor(v)}
    x = sd["embedding.word_embeddings.weight"][tokens] * cfg.input_mult  # [b, s, h]
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    for layer in range(cfg.num_layers):
        p = lambda name: sd[f"decoder.layers.{layer}.{name}"]
        h = layer_norm(x, p("input_layernorm.weight"), p("input_layernorm.bias"))
        qkv = h @ p("self_attention.linear_qkv.weight").T + p("self_attention.linear_qkv.bias")
        q, k, v = qkv.view(b, s, heads, 3, d).unbind(3)  # megatron: [q|k|v] per head
        q, k = place(q, positions, pos, 1.0), place(k, positions, pos, -1.0)
        scores = torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(d)
        probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        attn = torch.einsum("bhst,bthd->bshd", probs, v).reshape(b, s, heads * d)
        x = x + attn @ p("self_attention.linear_proj.weight").T + p("self_attention.linear_proj.bias")
        h = layer_norm(x, p("pre_mlp_layernorm.weight"), p("pre_mlp_layernorm.bias"))
        h = gelu_tanh(h @ p("mlp.linear_fc1.weight").T + p("mlp.linear_fc1.bias"))
        x = x + h @ p("mlp.linear_fc2.weight").T + p("mlp.linear_fc2.bias")
    x = layer_norm(x, sd["decoder.final_layernorm.weight"], sd["decoder.final_layernorm.bias"])
    scale = cfg.output_mult / cfg.mup_scale_factor if cfg.use_mup else 1.0
    head = sd["embedding.word_embeddings.weight"] if cfg.tie_word_embeddings else sd["output_layer.weight"]
    return x @ head.T * scale


def _randomize_biases_and_norms(model):
    """megatron initialises biases to 0 and LayerNorm to (1, 0): make them matter."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:
                param.add_(torch.randn_like(param) * 0.1)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"position_embedding": "rope"},
        {"use_mup": True, "input_mult": 1.5, "output_mult": 2.0, "mup_scale_factor": 4.0},
        {"num_layers": 1, "tie_word_embeddings": True},
        {"kv_channels": 8},
    ],
    ids=["xpos", "rope", "multipliers", "one-layer-tied", "head-dim-decoupled"],
)
def test_megatron_model_matches_plain_pytorch(build, overrides):
    model, cfg = build(**overrides)
    torch.manual_seed(0)
    _randomize_biases_and_norms(model)
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_length))
    positions = torch.arange(cfg.seq_length)[None].expand(2, -1)
    with torch.no_grad():
        logits = model(tokens, positions, None)
        expected = reference_forward(model, cfg, tokens)
    assert logits.shape == expected.shape == (2, cfg.seq_length, 1024)  # 1000 padded to 1024
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_per_token_loss_is_cross_entropy_of_the_logits(build):
    model, cfg = build()
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_length))
    positions = torch.arange(cfg.seq_length)[None].expand(2, -1)
    labels = torch.randint(0, cfg.vocab_size, (2, cfg.seq_length))
    with torch.no_grad():
        logits = model(tokens, positions, None)
        loss = model(tokens, positions, None, labels=labels)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    torch.testing.assert_close(loss, expected.view(2, -1), rtol=1e-5, atol=1e-5)


def test_architecture_is_gpt3_style(build):
    model, cfg = build()
    layer = model.decoder.layers[0]
    assert layer.self_attention.linear_qkv.bias is not None and layer.mlp.linear_fc2.bias is not None
    assert model.output_layer.bias is None
    assert model.decoder.final_layernorm.eps == 1e-5
    assert model.embedding.word_embeddings.weight.data_ptr() != model.output_layer.weight.data_ptr()
