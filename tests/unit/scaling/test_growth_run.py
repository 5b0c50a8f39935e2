"""The loss model of a growth run against the formula written out by hand."""

import numpy as np
import pytest

from nemo_flm.errors import ConfigError
from nemo_flm.scaling.compute_law import ComputeLaw
from nemo_flm.scaling.growth_run import check_eta, stage_losses

LAW = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28}  # synthetic
SIZES = [1e8, 4e8, 1e9]
TOKENS = np.array([3e10, 1e10, 5e9])


def loss(n, d):
    return LAW["E"] + LAW["A"] / n ** LAW["alpha"] + LAW["B"] / d ** LAW["beta"]


def tokens_to_reach(n, target):
    return (LAW["B"] / (target - LAW["E"] - LAW["A"] / n ** LAW["alpha"])) ** (1 / LAW["beta"])


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_stage_losses_follow_the_formula(eta):
    """X_{i+1} = eta * D*(N_{i+1}, L_i); L_i = L(N_i, X_i + D_i)."""
    first = loss(SIZES[0], TOKENS[0])
    second = loss(SIZES[1], eta * tokens_to_reach(SIZES[1], first) + TOKENS[1]) if eta else loss(SIZES[1], TOKENS[1])
    third = loss(SIZES[2], eta * tokens_to_reach(SIZES[2], second) + TOKENS[2]) if eta else loss(SIZES[2], TOKENS[2])
    got = stage_losses(ComputeLaw(**LAW), eta, SIZES, TOKENS)
    assert got == pytest.approx([first, second, third], rel=1e-12)


def test_equal_sizes_count_earlier_tokens_eta_times():
    """Without a size change the model is the rule D_eff = D_3 + eta D_2 + eta^2 D_1."""
    eta = 0.6
    got = stage_losses(ComputeLaw(**LAW), eta, [SIZES[1]] * 3, TOKENS)[-1]
    assert got == pytest.approx(loss(SIZES[1], TOKENS[2] + eta * TOKENS[1] + eta**2 * TOKENS[0]), rel=1e-12)


def test_full_efficiency_keeps_the_loss_across_a_growth():
    """eta = 1: the grown model starts where the smaller one ended (MSG preserves the function)."""
    law = ComputeLaw(**LAW)
    before = stage_losses(law, 1.0, SIZES[:2], np.array([TOKENS[0], 0.0]))
    assert before[1] == pytest.approx(before[0], rel=1e-12)


@pytest.mark.parametrize("eta", [-0.1, 1.5])
def test_eta_outside_0_1_is_refused(eta):
    with pytest.raises(ConfigError, match="eta must be in"):
        check_eta(eta)
