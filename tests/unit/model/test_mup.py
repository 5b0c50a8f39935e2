"""μP (model/mup.py): per-role init and LR, the attention and logit scales, the config checks.

The expected values are written here from the rules (Tensor Programs V, Adam form; FLM_REFERENCE
§6): hidden matrices init std sigma/sqrt(m) and LR lr/m, everything else the base values."""

import math

import pytest
import torch

from nemo_flm.errors import ConfigError
from nemo_flm.training.optim import build_optimizer, build_scheduler
from tests.helpers import logits_of, tiny_cfg

HIDDEN = ("linear_qkv.weight", "linear_proj.weight", "linear_fc1.weight", "linear_fc2.weight")
WIDE = dict(num_layers=2, hidden_size=256, num_attention_heads=8, ffn_hidden_size=1024, init_method_std=0.02)


def test_hidden_matrices_start_at_std_over_sqrt_m_and_the_rest_at_the_base(build):
    sp, _ = build(**WIDE)
    mu, cfg = build(**WIDE, use_mup=True, mup_base_width=64)  # m = 4
    for (name, a), (_, b) in zip(sp.named_parameters(), mu.named_parameters()):
        factor = 0.5 if name.endswith(HIDDEN) else 1.0  # 1/sqrt(4), exact in floating point
        torch.testing.assert_close(b, a * factor, rtol=0, atol=0, msg=name)
    stds = {name: p.std().item() for name, p in mu.named_parameters() if p.ndim == 2}
    residual = 0.02 / math.sqrt(2 * WIDE["num_layers"])  # megatron's output-layer init, then / sqrt(m)
    expected = {
        "self_attention.linear_qkv.weight": 0.02 / 2,
        "mlp.linear_fc1.weight": 0.02 / 2,
        "self_attention.linear_proj.weight": residual / 2,
        "mlp.linear_fc2.weight": residual / 2,
        "word_embeddings.weight": 0.02,
        "output_layer.weight": 0.02,
    }
    for key, want in expected.items():
        got = stds[next(name for name in stds if name.endswith(key))]
        assert got == pytest.approx(want, rel=0.05), (key, got, want)


@pytest.mark.parametrize("mup_lr", ["base", "hidden"])
def test_one_adam_step_moves_each_role_by_its_lr(build, mup_lr):
    """Adam's first update is lr x g / (|g| + eps) ~ lr x sign(g): the largest move of each
    parameter is the LR its group trained at, through the real optimizer and scheduler."""
    lr, m = 1e-3, 4.0
    optim = dict(lr=lr, min_lr=1e-5, weight_decay=0.0, lr_warmup_samples=0, lr_decay_samples=10_000)
    model, cfg = build(**WIDE, use_mup=True, mup_base_width=64, mup_lr=mup_lr, optim=optim)
    optimizer = build_optimizer(model, cfg.optim)
    build_scheduler(optimizer, cfg.optim, cfg.global_batch_size)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    hidden_lr, base_lr = (lr / m, lr) if mup_lr == "base" else (lr, lr * m)
    for name, p in model.named_parameters():
        want = hidden_lr if name.endswith(HIDDEN) else base_lr
        moved = (p.detach() - before[name]).abs().max().item()
        assert moved == pytest.approx(want, rel=1e-3), (name, moved, want)


def test_standard_parametrization_ignores_the_mup_keys(build):
    plain, _ = build(**WIDE)
    keyed, _ = build(**WIDE, mup_base_width=16, mup_lr="hidden", mup_base_head_dim=8, output_mult=3.0)
    tokens = torch.randint(0, 1000, (2, 16))
    for (_, a), (_, b) in zip(plain.named_parameters(), keyed.named_parameters()):
        assert torch.equal(a, b) and not hasattr(b, "lr_mult")
    assert torch.equal(logits_of(plain, tokens), logits_of(keyed, tokens))


def test_attention_scores_scale_with_one_over_head_dim_from_the_base_head_size(build):
    """Scores x sqrt(base) / d: at the base head size the model is the standard one; at half of it
    (scores x sqrt(8)/16 instead of 1/4) the logits move."""
    shape = dict(use_mup=True, mup_base_width=16)  # head dim 16
    standard, _ = build(**shape)
    at_base, _ = build(**shape, mup_base_head_dim=16)
    smaller, cfg = build(**shape, mup_base_head_dim=8)
    attention = smaller.decoder.layers[0].self_attention.core_attention
    assert attention.softmax_scale == pytest.approx(math.sqrt(8) / 16)
    tokens = torch.randint(0, 1000, (2, 16))
    assert torch.equal(logits_of(standard, tokens), logits_of(at_base, tokens))
    assert not torch.allclose(logits_of(standard, tokens), logits_of(smaller, tokens))


def test_logits_are_scaled_by_output_mult_over_m(build):
    plain, _ = build(output_mult=2.0)
    mu, cfg = build(use_mup=True, output_mult=2.0, mup_base_width=16)  # m = 64 / 16 = 4: logits x 0.5
    with torch.no_grad():
        for name, p in mu.named_parameters():  # undo the init scaling: the same weights in both
            p.copy_(dict(plain.named_parameters())[name])
    tokens = torch.randint(0, 1000, (2, 16))
    torch.testing.assert_close(logits_of(mu, tokens), logits_of(plain, tokens) * 0.5, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(mup_scale_factor=2.0), "mup_scale_factor 2.0 contradicts hidden_size / mup_base_width = 64 / 16 = 4"),
        (dict(mup_lr="applied"), "mup_lr must be 'base' or 'hidden'"),
        (dict(mup_base_width=0), "mup_base_width must be >= 1"),
        (dict(mup_base_head_dim=0), "mup_base_head_dim must be null or >= 1"),
    ],
)
def test_bad_mup_configs_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        tiny_cfg(**{"use_mup": True, "mup_base_width": 16, **overrides})
    assert "\n" not in str(err.value)


def test_a_given_scale_factor_that_matches_the_width_is_accepted():
    assert tiny_cfg(use_mup=True, mup_base_width=16, mup_scale_factor=4.0).mup_scale_factor == 4.0
