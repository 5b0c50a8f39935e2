"""Rotary and xPos position transforms as pure tensor functions (docs/flm_facts.md §4).

For head dim d and pair index i = 0 .. d/2-1 (half-split / GPT-NeoX layout: element i pairs with
element i + d/2):
    theta_i = theta^(-2i/d)                      rotation frequency, angle at position p is p*theta_i
    zeta_i  = (2i + gamma*d) / ((1+gamma)*d)     xPos decay base
    q_m -> R(m) q_m * zeta^((m-c)/scale_base)
    k_n -> R(n) k_n * zeta^(-(n-c)/scale_base)
so q_m . k_n carries zeta^((m-n)/scale_base): a decay with distance that does not depend on c.
The centre c only keeps the factors in floating-point range: zeta_0 = gamma/(1+gamma) = 0.286, so a
key 36,000 positions past a fixed centre overflows fp32 (and bf16, same exponent range). Positions
within `xpos_reach` of the centre keep every factor inside e^(+-30). A forward uses the model's
centre (c = training length / 2) when its positions are within reach of it; a KV cache moves the
centre when new positions leave its reach, multiplying the cached keys by a per-pair constant
(`recentre_keys`): keys are rotated once, when written, and never re-rotated.
Angles and scales are computed in float64 (tiny [s, d/2] tensors) so long positions keep their
precision, the transform runs in fp32, and the result is cast back to the input dtype.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from nemo_flm.config.shapes import xpos_reach


@dataclass(frozen=True)
class PositionConfig:
    """What the attention needs to place q and k: rope or xpos, and xPos' constants."""

    kind: str = "xpos"  # xpos | rope
    theta: float = 10000.0
    gamma: float = 0.4
    scale_base: float = 512.0
    center: float = 0.0


def rotary_inv_freq(head_dim: int, theta: float) -> Tensor:
    """theta^(-2i/d) for i = 0 .. d/2-1, shape [d/2], float64."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim
    return 1.0 / theta**exponents


def xpos_zeta(head_dim: int, gamma: float) -> Tensor:
    """(2i + gamma*d) / ((1+gamma)*d) for i = 0 .. d/2-1, shape [d/2], float64."""
    two_i = torch.arange(0, head_dim, 2, dtype=torch.float64)
    return (two_i + gamma * head_dim) / ((1.0 + gamma) * head_dim)


def rotate_half(x: Tensor) -> Tensor:
    """[x1, x2] -> [-x2, x1] on the last dim (half-split layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin of p*theta_i duplicated over both halves: each [s, d] float64."""
    angles = positions.double()[:, None] * rotary_inv_freq(head_dim, theta).to(positions.device)
    angles = torch.cat((angles, angles), dim=-1)  # [s, d]
    return angles.cos(), angles.sin()


def _xpos_scale(positions: Tensor, head_dim: int, pos: PositionConfig) -> Tensor:
    """zeta^((p-c)/scale_base) duplicated over both halves: [s, d] float64."""
    power = (positions.double() - pos.center)[:, None] / pos.scale_base  # [s, 1]
    scale = xpos_zeta(head_dim, pos.gamma).to(positions.device)[None, :] ** power  # [s, d/2]
    return torch.cat((scale, scale), dim=-1)


def _factors(positions: Tensor, head_dim: int, pos: PositionConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(cos, sin) for queries then for keys, fp32 [s, 1, 1, d]: the rotation times
    zeta^(+(p-c)/scale_base) and zeta^(-(p-c)/scale_base) (scaling commutes with the rotation)."""
    cos, sin = _cos_sin(positions, head_dim, pos.theta)  # [s, d]
    scale = _xpos_scale(positions, head_dim, pos) if pos.kind == "xpos" else torch.ones_like(cos)
    factors = (cos * scale, sin * scale, cos / scale, sin / scale)
    return tuple(f.float()[:, None, None, :] for f in factors)


@functools.lru_cache(maxsize=4)
def _span_factors(first: int, count: int, head_dim: int, pos: PositionConfig, device: torch.device, inference: bool):
    """_factors of positions first..first+count-1: computed once per forward, shared by its layers.
    `inference` keys the cache by inference mode: tensors made under torch.inference_mode (Lightning's
    validation) cannot be saved for a training step's backward."""
    return _factors(torch.arange(first, first + count, device=device), head_dim, pos)


def _place(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


def apply_positions(query: Tensor, key: Tensor, positions: Tensor, pos: PositionConfig) -> tuple[Tensor, Tensor]:
    """Place q and k ([s, b, h, d], same positions [s]) with rope or xPos."""
    q_cos, q_sin, k_cos, k_sin = _factors(positions, query.shape[-1], pos)
    return _place(query, q_cos, q_sin), _place(key, k_cos, k_sin)


def apply_positions_from(query: Tensor, key: Tensor, first: int, pos: PositionConfig) -> tuple[Tensor, Tensor]:
    """apply_positions at positions first..first+s-1, with the factors every layer of a forward shares."""
    inference = torch.is_inference_mode_enabled()
    q_cos, q_sin, k_cos, k_sin = _span_factors(first, query.shape[0], query.shape[-1], pos, query.device, inference)
    return _place(query, q_cos, q_sin), _place(key, k_cos, k_sin)


def centre_for(pos: PositionConfig, first: int, last: int, current: float | None = None) -> float:
    """The centre for positions first..last: the current one (else the model's) while it reaches them;
    otherwise first + reach, the centre that reaches them and leaves the most room after `last`."""
    if pos.kind != "xpos":
        return pos.center
    reach = xpos_reach(pos.gamma, pos.scale_base)
    if last - first > 2 * reach:
        raise ValueError(
            f"positions {first}..{last} span more than 2 x {reach}, beyond which xPos factors leave float range: "
            "feed them in chunks through a KV cache (nemo_flm.model.kv_cache)"
        )
    for centre in (current, pos.center):
        if centre is not None and last - reach <= centre <= first + reach:
            return centre
    return float(first + reach)


def recentre_keys(keys: Tensor, old: float, new: float, pos: PositionConfig) -> Tensor:
    """Keys placed with centre `old` as if placed with `new`: the factor zeta^(-(n-c)/scale_base)
    changes by zeta^((new-old)/scale_base), the same for every position, so no re-rotation.
    keys: [s, b, h, d]. Keys far behind `new` shrink toward 0, as their true scores do."""
    factor = xpos_zeta(keys.shape[-1], pos.gamma).to(keys.device) ** ((new - old) / pos.scale_base)
    return (keys.float() * torch.cat((factor, factor)).float()).to(keys.dtype)
