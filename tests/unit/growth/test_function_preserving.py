"""MSG growth preserves the function exactly: logits after growth (masks at c = 0) equal logits
before, for each operator alone and all together, with random new weights, dropout off, in float64 to 1e-10 of the logit scale; also past the
training length. After the ramp (c = 1) the masks fold away into the plain model."""
import pytest
import torch

from nemo_flm import parallel
from nemo_flm.growth.masks import GrowthMasks
from nemo_flm.growth.operators import default_fill, grow_state_dict
from nemo_flm.growth.plan import make_plan
from nemo_flm.model.builder import build_model
from tests.conftest import tiny_cfg

OLD = dict(num_layers=2, hidden_size=32, num_attention_heads=2, ffn_hidden_size=64, init_method_std=0.2,
           params_dtype="fp64")
GROWTHS = {
    "width": dict(hidden_size=64, num_attention_heads=4),
    "ffn": dict(ffn_hidden_size=160),
    "depth": dict(num_layers=4),
    "all": dict(num_layers=5, hidden_size=64, num_attention_heads=4, ffn_hidden_size=160),
    # hidden and heads separately: the head dim (16) held by kv_channels
    "hidden-only": dict(hidden_size=64, kv_channels=16),
    "heads-only": dict(num_attention_heads=4, kv_channels=16),
}


def _perturbed(model):
    """Non-trivial biases and LayerNorms (megatron initialises them to 0 and 1)."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
    return model


def _logits(model, tokens):
    with torch.no_grad():
        return model(tokens, torch.arange(tokens.shape[1])[None].expand_as(tokens), None)


def _grow(old_over, new_over, depth_mode="stack", c=0.0):
    old_cfg, new_cfg = tiny_cfg(**old_over), tiny_cfg(**new_over)
    parallel.seed_everything(0)
    old = _perturbed(build_model(old_cfg)).eval()
    plan = make_plan(old_cfg, new_cfg, depth_mode)
    grown_state = grow_state_dict(old.state_dict(), plan, default_fill(0.5, torch.Generator().manual_seed(5)))
    masks = GrowthMasks(plan, c=c)
    grown = build_model(new_cfg, growth_masks=masks).eval()
    grown.load_state_dict(grown_state)
    return old, grown, new_cfg, masks, grown_state


MUP = dict(use_mup=True, output_mult=2.0, mup_scale_factor=2.0)
GROWTHS["all-mup"] = dict(GROWTHS["all"], mup_scale_factor=4.0)  # m doubles with the width
CASES = [("width", "stack"), ("ffn", "stack"), ("all-mup", "stack"), ("hidden-only", "stack"), ("heads-only", "stack")] + [(g, m) for g in ("depth", "all") for m in ("stack", "interleave", "random")]


@pytest.mark.parametrize("growth, depth_mode", CASES)
def test_growth_preserves_logits(single_process, growth, depth_mode):
    old_over = {**OLD, **MUP} if "mup" in growth else OLD
    old, grown, cfg, _, _ = _grow(old_over, {**old_over, **GROWTHS[growth]}, depth_mode)
    tokens = torch.randint(0, cfg.vocab_size, (2, 3 * cfg.seq_length))  # past the training length
    before, after = _logits(old, tokens), _logits(grown, tokens)
    scale = before.abs().max()
    assert scale > 1.0  # the test is not vacuous: logits are far from zero
    assert after.dtype == torch.float64
    torch.testing.assert_close(after, before, rtol=0, atol=1e-10 * scale.item())


def test_masks_matter(single_process):
    """Without masks (plain spec) the grown weights change the function: the masks do the work."""
    _, _, cfg, _, grown_state = _grow(OLD, {**OLD, **GROWTHS["all"]})
    old, _, _, _, _ = _grow(OLD, {**OLD, **GROWTHS["all"]})
    plain = build_model(cfg).eval()
    plain.load_state_dict(grown_state)
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_length))
    assert (_logits(plain, tokens) - _logits(old, tokens)).abs().max() > 1e-2


def test_fold_after_ramp_equals_plain_model(single_process):
    _, grown, cfg, masks, grown_state = _grow(OLD, {**OLD, **GROWTHS["all"]}, c=1.0)
    plain = build_model(cfg).eval()
    plain.load_state_dict(grown.state_dict())
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_length))
    masked, folded = _logits(grown, tokens), _logits(plain, tokens)
    torch.testing.assert_close(folded, masked, rtol=0, atol=1e-10 * masked.abs().max().item())


def test_old_weights_sit_in_the_top_left_block_per_head(single_process):
    old, _, cfg, _, state = _grow(OLD, {**OLD, **GROWTHS["width"]})
    d = 16
    old_qkv = old.state_dict()["decoder.layers.0.self_attention.linear_qkv.weight"].view(2, 3, d, 32)
    new_qkv = state["decoder.layers.0.self_attention.linear_qkv.weight"].view(4, 3, d, 64)
    torch.testing.assert_close(new_qkv[:2, :, :, :32], old_qkv, rtol=0, atol=0)
    old_proj = old.state_dict()["decoder.layers.0.self_attention.linear_proj.weight"]
    torch.testing.assert_close(state["decoder.layers.0.self_attention.linear_proj.weight"][:32, :32], old_proj, rtol=0, atol=0)
    assert torch.all(state["decoder.final_layernorm.weight"][32:] == 1) and torch.all(state["decoder.final_layernorm.bias"][32:] == 0)
