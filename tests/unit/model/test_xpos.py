"""xPos and RoPE against an independent reference written from the formula (complex numbers).

FLM's constants (docs/flm_facts.md §4) are written here literally and only the reference uses them;
the code under test takes its PositionConfig from the defaults, both through the model config
(`position_config(tiny_cfg())`) and from `PositionConfig()`, so a changed default fails.
"""

import math

import pytest
import torch

from nemo_flm.model.builder import position_config
from nemo_flm.model.xpos import PositionConfig, apply_positions
from tests.helpers import tiny_cfg

THETA, GAMMA, SCALE_BASE = 10000.0, 0.4, 512.0  # config.json: rotary_theta, xPos gamma, xpos_scale_base
TRAIN_LENGTH = 128
CENTER = TRAIN_LENGTH // 2  # the fixed xPos centre: half the training length
D = 16


def from_model_config(kind="xpos", seq_length=TRAIN_LENGTH):
    """The PositionConfig the model builder derives from a default model config."""
    return position_config(tiny_cfg(position_embedding=kind, seq_length=seq_length))


def from_defaults(kind="xpos", seq_length=TRAIN_LENGTH):
    """PositionConfig's own defaults, with the builder's centre."""
    return PositionConfig(kind=kind, center=float(seq_length // 2))


SOURCES = pytest.mark.parametrize("source", [from_model_config, from_defaults], ids=["model-config", "dataclass"])


def reference(x, positions, kind, is_query, center=CENTER):
    """Pair i = (x_i, x_{i+d/2}) as a complex number, times e^{j p theta^(-2i/d)} and, for xPos,
    zeta_i^(+-(p-c)/scale_base) with zeta_i = (2i + gamma d)/((1+gamma) d). x: [s, b, h, d]."""
    s, b, h, d = x.shape
    out = torch.empty_like(x, dtype=torch.float64)
    for t in range(s):
        p = float(positions[t])
        for i in range(d // 2):
            freq = THETA ** (-2.0 * i / d)
            rot = complex(math.cos(p * freq), math.sin(p * freq))
            scale = 1.0
            if kind == "xpos":
                zeta = (2 * i + GAMMA * d) / ((1 + GAMMA) * d)
                power = (p - center) / SCALE_BASE
                scale = zeta ** (power if is_query else -power)
            z = torch.complex(x[t, ..., i].double(), x[t, ..., i + d // 2].double()) * rot * scale
            out[t, ..., i], out[t, ..., i + d // 2] = z.real, z.imag
    return out.float()


def test_builder_centres_at_half_the_training_length():
    """The fixed centre is what lets keys be placed once, before the KV cache."""
    assert from_model_config().center == CENTER
    assert from_model_config(seq_length=2048).center == 1024


@SOURCES
@pytest.mark.parametrize("kind", ["xpos", "rope"])
def test_q_k_transforms_match_formula(source, kind):
    torch.manual_seed(0)
    q, k = torch.randn(2, 12, 2, 3, D).unbind(0)
    positions = torch.arange(5, 17)
    q_out, k_out = apply_positions(q, k, positions, source(kind))
    torch.testing.assert_close(q_out, reference(q, positions, kind, True), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(k_out, reference(k, positions, kind, False), rtol=1e-6, atol=1e-6)


def _scores(q, k, positions, pos):
    qx, kx = apply_positions(q, k, positions, pos)
    return torch.einsum("sbhd,tbhd->bhst", qx.double(), kx.double())


def test_scores_unchanged_by_a_common_shift():
    """Rotation and decay both depend on m - n only: a KV cache can use any fixed centre."""
    torch.manual_seed(1)
    q, k = torch.randn(2, 8, 1, 2, D).unbind(0)
    base = _scores(q, k, torch.arange(8), from_model_config())
    shifted = _scores(q, k, torch.arange(8) + 300, from_model_config())
    torch.testing.assert_close(shifted, base, rtol=1e-5, atol=1e-6)


@SOURCES
def test_score_decays_with_distance(source):
    """Rotation has norm 1, so |q_m| |k_0| for a vector in one rotary pair is exactly
    zeta_i^(m/scale_base): pair 0 has the strongest decay, zeta_0 = gamma/(1+gamma)."""
    x = torch.zeros(64, 1, 1, D)
    x[..., 0] = 1.0
    qx, kx = apply_positions(x, x, torch.arange(64), source())
    zeta0 = GAMMA / (1 + GAMMA)
    for distance in (1, 10, 63):
        product = qx[distance, 0, 0, [0, D // 2]].norm() * kx[0, 0, 0, [0, D // 2]].norm()
        assert product.item() == pytest.approx(zeta0 ** (distance / SCALE_BASE), rel=1e-6)
    products = [(qx[m, 0, 0].norm() * kx[0, 0, 0].norm()).item() for m in range(64)]
    assert all(a > b for a, b in zip(products[:-1], products[1:], strict=True))


@SOURCES
def test_positions_beyond_training_length_match_formula(source):
    """Far past a 2k training window (centre 1024) the factors stay finite and exact in fp32."""
    torch.manual_seed(2)
    q, k = torch.randn(2, 4, 1, 1, D).unbind(0)
    positions = torch.tensor([4000, 8000, 16000, 30000])
    q_out, k_out = apply_positions(q, k, positions, source(seq_length=2048))
    assert torch.isfinite(q_out).all() and torch.isfinite(k_out).all()
    torch.testing.assert_close(q_out, reference(q, positions, "xpos", True, center=1024), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(k_out, reference(k, positions, "xpos", False, center=1024), rtol=1e-6, atol=1e-6)


def test_dtype_is_preserved_and_math_is_fp32():
    """bf16 in, bf16 out; the transform itself runs in fp32 (bf16 rounding only at the end)."""
    q = torch.randn(6, 1, 1, D).to(torch.bfloat16)
    q_out, _ = apply_positions(q, q, torch.arange(6), from_model_config())
    assert q_out.dtype == torch.bfloat16
    expected = reference(q.float(), torch.arange(6), "xpos", True)
    torch.testing.assert_close(q_out.float(), expected, rtol=1e-2, atol=1e-2)
