"""xPos and RoPE against an independent reference written from the formula (complex numbers)."""
import math

import pytest
import torch

from nemo_flm.model.xpos import PositionConfig, apply_positions

D = 16
XPOS = PositionConfig(kind="xpos", theta=10000.0, gamma=0.4, scale_base=512.0, center=64.0)


def reference(x, positions, pos: PositionConfig, is_query: bool):
    """Pair i = (x_i, x_{i+d/2}) as a complex number, times e^{j p theta^(-2i/d)} and, for xPos,
    zeta_i^(+-(p-c)/scale_base) with zeta_i = (2i + gamma d)/((1+gamma) d). x: [s, b, h, d]."""
    s, b, h, d = x.shape
    out = torch.empty_like(x, dtype=torch.float64)
    for t in range(s):
        p = float(positions[t])
        for i in range(d // 2):
            freq = pos.theta ** (-2.0 * i / d)
            rot = complex(math.cos(p * freq), math.sin(p * freq))
            scale = 1.0
            if pos.kind == "xpos":
                zeta = (2 * i + pos.gamma * d) / ((1 + pos.gamma) * d)
                power = (p - pos.center) / pos.scale_base
                scale = zeta ** (power if is_query else -power)
            z = torch.complex(x[t, ..., i].double(), x[t, ..., i + d // 2].double()) * rot * scale
            out[t, ..., i], out[t, ..., i + d // 2] = z.real, z.imag
    return out.float()


@pytest.mark.parametrize("kind", ["xpos", "rope"])
def test_q_k_transforms_match_formula(kind):
    torch.manual_seed(0)
    pos = PositionConfig(kind=kind, center=64.0)
    q, k = torch.randn(2, 12, 2, 3, D).unbind(0)
    positions = torch.arange(5, 17)
    q_out, k_out = apply_positions(q, k, positions, pos)
    torch.testing.assert_close(q_out, reference(q, positions, pos, True), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(k_out, reference(k, positions, pos, False), rtol=1e-6, atol=1e-6)


def _scores(q, k, positions, pos):
    qx, kx = apply_positions(q, k, positions, pos)
    return torch.einsum("sbhd,tbhd->bhst", qx.double(), kx.double())


def test_scores_unchanged_by_a_common_shift():
    torch.manual_seed(1)
    q, k = torch.randn(2, 8, 1, 2, D).unbind(0)
    base = _scores(q, k, torch.arange(8), XPOS)
    shifted = _scores(q, k, torch.arange(8) + 300, XPOS)
    torch.testing.assert_close(shifted, base, rtol=1e-5, atol=1e-6)


def test_score_decays_with_distance():
    """Identical q and k vectors with zero rotation frequency cannot interfere: a vector in the
    last pair (slowest rotation, theta^(-(d-2)/d) ~ 3e-4 rad/step) isolates the zeta^(m-n) decay."""
    x = torch.zeros(64, 1, 1, D)
    x[..., 0] = 1.0  # pair 0 rotates fastest; use its decay zeta_0 = gamma/(1+gamma)
    positions = torch.arange(64)
    qx, kx = apply_positions(x, x, positions, XPOS)
    # |q_m . k_n| for the same pair is zeta_0^((m-n)/scale_base) exactly (rotation has norm 1)
    zeta0 = 0.4 / 1.4
    for distance in (1, 10, 63):
        q_norm_pair = qx[distance, 0, 0, [0, D // 2]]
        k_norm_pair = kx[0, 0, 0, [0, D // 2]]
        product = q_norm_pair.norm() * k_norm_pair.norm()
        assert product.item() == pytest.approx(zeta0 ** (distance / 512.0), rel=1e-6)
    products = [(qx[m, 0, 0].norm() * kx[0, 0, 0].norm()).item() for m in range(64)]
    assert all(a > b for a, b in zip(products, products[1:]))


def test_positions_beyond_training_length_match_formula():
    torch.manual_seed(2)
    q, k = torch.randn(2, 4, 1, 1, D).unbind(0)
    positions = torch.tensor([4000, 8000, 16000, 30000])  # far past a 2k training window
    pos = PositionConfig(kind="xpos", center=1024.0)  # the centre of a 2k training length
    q_out, k_out = apply_positions(q, k, positions, pos)
    assert torch.isfinite(q_out).all() and torch.isfinite(k_out).all()
    torch.testing.assert_close(q_out, reference(q, positions, pos, True), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(k_out, reference(k, positions, pos, False), rtol=1e-6, atol=1e-6)


def test_dtype_is_preserved_and_math_is_fp32():
    q = torch.randn(6, 1, 1, D).to(torch.bfloat16)
    q_out, _ = apply_positions(q, q, torch.arange(6), XPOS)
    assert q_out.dtype == torch.bfloat16
    expected = reference(q.float(), torch.arange(6), XPOS, True)
    torch.testing.assert_close(q_out.float(), expected, rtol=1e-2, atol=1e-2)
