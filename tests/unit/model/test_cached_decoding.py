"""The xPos KV cache (model/kv_cache.py): cached decoding equals a full recompute, the cache holds
keys placed once by the formula, and nothing leaves float range up to 1M positions.

FLM's constants are written here (theta 10000, gamma 0.4, scale base 512) and only the references
use them; the model takes them from the config defaults, so a changed default or formula fails.
"""

import pytest
import torch

from nemo_flm.model.kv_cache import FLMInferenceContext
from nemo_flm.model.xpos import PositionConfig, apply_positions

THETA, GAMMA, SCALE_BASE = 10000.0, 0.4, 512.0


def decode(model, tokens, prompt, ctx=None):
    """Logits of every position: the first `prompt` tokens in one pass, then one token at a time."""
    b, n = tokens.shape
    ctx = ctx or FLMInferenceContext(max_batch_size=b, max_sequence_length=n)
    positions = torch.arange(n)[None].expand(b, -1)
    out = [model(tokens[:, :prompt], positions[:, :prompt], None, inference_context=ctx)]
    ctx.increment_sequence_len_offset(prompt)
    for t in range(prompt, n):
        out.append(model(tokens[:, t : t + 1], positions[:, t : t + 1], None, inference_context=ctx))
        ctx.increment_sequence_len_offset(1)
    return torch.cat(out, dim=1), ctx


@pytest.mark.parametrize("kind", ["xpos", "rope"])
def test_one_token_at_a_time_matches_full_forward(build, kind):
    model, cfg = build(position_embedding=kind)
    tokens = torch.randint(0, cfg.vocab_size, (2, 20))
    with torch.no_grad():
        full = model(tokens, torch.arange(20)[None].expand(2, -1), None)
        steps, _ = decode(model, tokens, prompt=1)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)


def test_decoding_far_past_the_training_length_recentres_and_matches(build):
    """Scale base 4 puts the centre's reach at 95 positions: decoding to 5x the training length
    (32) moves the centre once, at position 112, and every position still equals the full forward."""
    model, cfg = build(xpos_scale_base=4.0)
    n = 5 * cfg.seq_length
    tokens = torch.randint(0, cfg.vocab_size, (1, n))
    with torch.no_grad():
        full = model(tokens, torch.arange(n)[None], None)
        steps, ctx = decode(model, tokens, prompt=7)
    assert ctx.key_centres[1] != cfg.seq_length // 2  # re-centred on the way
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)


def _raw_first_layer_keys(model, tokens):
    """Keys of layer 1 before any position transform: embedding -> LayerNorm -> linear_qkv (megatron
    interleaves q|k|v per head), [s, b, heads, d]."""
    layer = model.decoder.layers[0]
    hidden = model.embedding(input_ids=tokens, position_ids=None)
    qkv, bias = layer.self_attention.linear_qkv(layer.input_layernorm(hidden))
    qkv = qkv if bias is None else qkv + bias
    s, b, _ = qkv.shape
    heads = layer.self_attention.num_attention_heads_per_partition
    return qkv.view(s, b, heads, 3, -1)[:, :, :, 1]


def reference_keys(k, first, centre):
    """Pair i = (k_i, k_{i+d/2}) as a complex number times e^{j n theta^(-2i/d)} and
    zeta_i^(-(n-c)/scale_base), zeta_i = (2i + gamma d)/((1+gamma) d); k: [s, b, h, d]."""
    d = k.shape[-1]
    i = torch.arange(d // 2, dtype=torch.float64)
    n = torch.arange(first, first + k.shape[0], dtype=torch.float64)[:, None]
    zeta = (2 * i + GAMMA * d) / ((1 + GAMMA) * d)
    factor = torch.exp(1j * n * THETA ** (-2 * i / d)) * zeta ** (-(n - centre) / SCALE_BASE)  # [s, d/2]
    z = torch.complex(k[..., : d // 2].double(), k[..., d // 2 :].double()) * factor[:, None, None, :]
    return torch.cat((z.real, z.imag), dim=-1)


def test_cache_holds_the_formula_placed_keys(build):
    """What the cache stores is R(n) k zeta^(-(n-c)/512) of the raw key: a cache of raw keys (to be
    rotated later) or a wrong constant fails; the keys written first are not touched again."""
    model, cfg = build()
    tokens = torch.randint(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        _, ctx = decode(model, tokens, prompt=5)
        raw = _raw_first_layer_keys(model, tokens)
    cached = ctx.key_value_memory_dict[1][0][:9]
    assert cached.device.type == "cpu"
    expected = reference_keys(raw, 0, ctx.key_centres[1]).float()
    torch.testing.assert_close(cached, expected, rtol=1e-5, atol=1e-5)


def reference_scores(q, k, m, n):
    """q_m . k_n of the formula in float64: sum_i Re(q_i conj(k_i) e^{j (m-n) theta_i}) zeta_i^((m-n)/512).
    q: [d]; k: [N, d]; n: [N]."""
    d = q.shape[-1]
    i = torch.arange(d // 2, dtype=torch.float64)
    dist = (m - n.double())[:, None]
    zeta = (2 * i + GAMMA * d) / ((1 + GAMMA) * d)
    qc = torch.complex(q[: d // 2].double(), q[d // 2 :].double())
    kc = torch.complex(k[:, : d // 2].double(), k[:, d // 2 :].double())
    terms = qc * kc.conj() * torch.exp(1j * dist * THETA ** (-2 * i / d)) * zeta ** (dist / SCALE_BASE)
    return terms.real.sum(-1)


@pytest.mark.slow
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-4), (torch.bfloat16, 0.25)])
def test_a_million_positions_stay_in_range(dtype, atol):
    """Keys written in chunks up to position 2^20 through the cache's own re-centring (head dim 32,
    as FLM's smallest zeta, gamma/(1+gamma), does not depend on it): scores of the last query
    against old and new keys equal the formula's, nothing is inf or NaN. With one fixed centre the
    keys overflow near position 37,000."""
    d, total, chunk = 32, 2**20, 2**14
    pos = PositionConfig(kind="xpos", center=1024.0)  # the model's defaults, FLM's training centre
    ctx = FLMInferenceContext(max_batch_size=1, max_sequence_length=total)
    keys = torch.empty(total, 1, 1, d, dtype=dtype)
    ctx.key_value_memory_dict[1] = (keys, None)
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(1024, 1, 1, d, generator=gen).repeat(chunk // 1024, 1, 1, 1)  # key of position n: raw[n % 1024]
    for first in range(0, total, chunk):
        place = ctx.place(1, chunk, pos)
        _, k = apply_positions(raw.to(dtype), raw.to(dtype), torch.arange(first, first + chunk), place)
        keys[first : first + chunk] = k
        ctx.increment_sequence_len_offset(chunk)
    assert torch.isfinite(keys.float()).all()
    q_raw = torch.randn(1, 1, 1, d, generator=gen)
    m = total - 1
    ctx.sequence_len_offset = m  # the query sits at the last written position
    place = ctx.place(1, 1, pos)
    q, _ = apply_positions(q_raw.to(dtype), q_raw.to(dtype), torch.tensor([m]), place)
    n = torch.cat((torch.arange(0, 64), torch.randint(0, total, (512,), generator=gen), torch.arange(m - 64, m + 1)))
    got = (keys[n, 0, 0].float() * q[0, 0, 0].float()).sum(-1).double()
    want = reference_scores(q_raw[0, 0, 0].to(dtype).double(), raw[n % 1024, 0, 0].to(dtype).double(), m, n)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


def test_a_plain_megatron_cache_is_refused(build):
    """megatron's StaticInferenceContext would hold keys without a centre: a clear error, not drift."""
    from megatron.core.inference.contexts import StaticInferenceContext

    model, cfg = build()
    with pytest.raises(TypeError, match="FLMInferenceContext"):
        model(
            torch.zeros(1, 2, dtype=torch.long),
            torch.arange(2)[None],
            None,
            inference_context=StaticInferenceContext(1, 2),
        )


def test_blockwise_attention_equals_a_window_mask_reference(build):
    """Blockwise causal attention (window = training length 32, half windows of 16): in a one-layer
    model each position's logits equal a plain forward over the keys it may see, i.e. from the start
    of the previous half window (written here from the rule, not from the mask code); cached
    decoding agrees."""
    model, cfg = build(blockwise_attention=True, num_layers=1)
    plain, _ = build(num_layers=1)
    plain.load_state_dict(model.state_dict())
    n, half = 3 * cfg.seq_length, cfg.seq_length // 2
    tokens = torch.randint(0, cfg.vocab_size, (1, n))
    with torch.no_grad():
        full = model(tokens, torch.arange(n)[None], None)
        steps, _ = decode(model, tokens, prompt=5)
        for m in (0, 31, 32, 47, 48, 70, n - 1):
            start = max(0, (m // half - 1) * half)
            window = tokens[:, start : m + 1]
            ref = plain(window, torch.arange(start, m + 1)[None], None)[:, -1]
            # positions shift by `start`: scores depend on m - n only, so the last logits agree
            torch.testing.assert_close(full[:, m], ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full[:, -1], plain(tokens, torch.arange(n)[None], None)[:, -1], atol=1e-3)


def test_blockwise_attention_config_errors():
    from nemo_flm.errors import ConfigError
    from tests.helpers import tiny_cfg

    with pytest.raises(ConfigError, match="blockwise_attention"):
        tiny_cfg(blockwise_attention=True, seq_length=31)
    with pytest.raises(ConfigError, match="blockwise_attention"):
        tiny_cfg(blockwise_attention=True, attention_backend="flash_attn")


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"xpos_gamma": 0.0}, "xpos_gamma must be > 0"),
        ({"rotary_base": 1.0}, "rotary_base must be > 1"),
        ({"xpos_scale_base": 0.01}, "too long for xpos_scale_base"),
        ({"seq_length": 40000, "xpos_scale_base": 512.0}, "at most 24521 positions"),
    ],
)
def test_xpos_values_that_cannot_work_fail_at_load(overrides, match):
    """A training sequence longer than one forward's xPos range (or a degenerate constant) is a
    config error, not a failure at the first step."""
    from nemo_flm.errors import ConfigError
    from tests.helpers import tiny_cfg

    with pytest.raises(ConfigError, match=match):
        tiny_cfg(**overrides)


def test_factors_shared_by_the_layers_survive_a_validation_in_inference_mode(build):
    """The xPos factors a forward's layers share are cached; one made under torch.inference_mode
    (Lightning's validation) must not reach a training step's backward."""
    model, cfg = build()
    model.train()
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_length))
    positions = torch.arange(cfg.seq_length)[None].expand(2, -1)
    with torch.inference_mode():
        model(tokens, positions, None)
    model(tokens, positions, None, labels=tokens).mean().backward()
    assert model.decoder.layers[0].self_attention.linear_qkv.weight.grad is not None
