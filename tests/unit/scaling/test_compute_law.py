"""The L(N, D) fit recovers a known law from noisy points, and refuses points that cannot identify it."""

import json

import numpy as np
import pytest

from nemo_flm.errors import ConfigError
from nemo_flm.scaling.compute_law import ComputeLaw, fit_compute_law, read_law

TRUE = {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28}  # synthetic, Chinchilla-like
SIZES, BUDGETS = np.logspace(6, 9, 6), np.array([1e8, 1e9, 1e10])


def law_by_hand(n, d):
    return TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]


def points(budgets=BUDGETS, noise=0.003, seed=0):
    n, d = (a.ravel() for a in np.meshgrid(SIZES, budgets, indexing="ij"))
    loss = law_by_hand(n, d) * np.exp(np.random.default_rng(seed).normal(0, noise, n.size))
    return [f"p{i}" for i in range(n.size)], n, d, loss


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_recovers_known_parameters_from_noisy_points(seed):
    """0.3% noise: every parameter within 3.5 standard errors of the truth, and the errors small."""
    law = fit_compute_law(*points(seed=seed))
    for name, true in TRUE.items():
        fitted, err = getattr(law, name), law.stderr[name]
        assert abs(fitted - true) < 3.5 * err, (name, fitted, err)
        assert err < 0.15 * true, (name, err)
    assert abs(law.alpha - TRUE["alpha"]) < 0.02 and abs(law.beta - TRUE["beta"]) < 0.03


def test_fit_is_exact_without_noise():
    law = fit_compute_law(*points(noise=0.0))
    assert [getattr(law, p) for p in TRUE] == pytest.approx(list(TRUE.values()), rel=1e-5)


def test_two_budgets_with_beta_held_fixed():
    law = fit_compute_law(*points(budgets=BUDGETS[:2]), beta=TRUE["beta"])
    assert law.beta == TRUE["beta"] and law.stderr["beta"] == 0
    assert law.alpha == pytest.approx(TRUE["alpha"], abs=0.02) and law.E == pytest.approx(TRUE["E"], rel=0.05)


def test_tokens_to_reach_inverts_the_law():
    law = ComputeLaw(**TRUE)
    d = np.array([1e7, 3e9])
    assert law.tokens_to_reach(1e8, law.loss(1e8, d)) == pytest.approx(d, rel=1e-9)
    assert np.isinf(law.tokens_to_reach(1e8, TRUE["E"] + TRUE["A"] / 1e8 ** TRUE["alpha"]))  # the size's floor


def one_line_error(match, fn, *args, **kwargs):
    with pytest.raises(ConfigError, match=match) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value)


def test_points_that_cannot_identify_the_law_are_refused():
    names, n, d, loss = points()
    one_line_error(">= 3 distinct sizes", fit_compute_law, names[:6], n[:6] * 0 + 1e6, d[:6], loss[:6])
    one_line_error(">= 2 token budgets", fit_compute_law, *points(budgets=BUDGETS[:1]))
    one_line_error("2 token budgets cannot separate E, B and beta", fit_compute_law, *points(budgets=BUDGETS[:2]))
    few = [0, 1, 3, 6]  # 3 sizes, 2 budgets, 4 points
    one_line_error("4 proxy points for 4 free", fit_compute_law, names[:4], n[few], d[few], loss[few], beta=0.3)
    bad = loss.copy()
    bad[4] = np.nan
    one_line_error("proxy 'p4' has val_loss nan", fit_compute_law, names, n, d, bad)


def test_bad_files_are_refused(tmp_path):
    law = tmp_path / "law.json"
    law.write_text(json.dumps({"E": 1.0, "A": 1.0, "alpha": 0.3, "B": 1.0}))
    one_line_error(r"lacks \['beta'\]", read_law, str(law))
    law.write_text(json.dumps({"E": 1.0, "A": 1.0, "alpha": -0.3, "B": 1.0, "beta": 0.3}))
    one_line_error("alpha = -0.3 is unusable", read_law, str(law))
