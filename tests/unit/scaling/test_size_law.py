"""The size law L(N) = a * N^b + c: recovery of known parameters, honest errors, held-out
prediction against the naive baseline, and one-line refusals of inputs it cannot fit."""

import math

import numpy as np
import pytest

from nemo_flm.errors import ConfigError
from nemo_flm.scaling.loss_prediction import predict, predict_budget, summary_lines
from nemo_flm.scaling.proxies import Proxy
from nemo_flm.scaling.size_law import fit_size_law, law

TRUE = {"a": 0.8, "b": -0.3, "c": 4.0}  # a for N in millions, as the fit reports it
SIZES = np.geomspace(2e4, 2e6, 8)  # the CPU proxies' range of non-embedding parameters
NOISE = 0.004  # loss units: about what one validation set's sampling gives


def _losses(sizes, noise, seed):
    rng = np.random.default_rng(seed)
    return law(sizes / 1e6, **TRUE) + noise * rng.standard_normal(len(sizes))


def test_fit_is_exact_on_noise_free_points():
    fit = fit_size_law(SIZES[:5], _losses(SIZES[:5], 0.0, 0))
    assert fit.a == pytest.approx(TRUE["a"], rel=1e-6)
    assert fit.b == pytest.approx(TRUE["b"], rel=1e-6)
    assert fit.c == pytest.approx(TRUE["c"], rel=1e-6)


def test_fit_recovers_known_parameters_from_noisy_points():
    """Within a tolerance, and within 3 of the standard errors it reports for itself."""
    fit = fit_size_law(SIZES, _losses(SIZES, NOISE, 1))
    tolerance = {"a": 0.1, "b": 0.03, "c": 0.1}
    for (name, value), err in zip(TRUE.items(), fit.errors()):
        got = getattr(fit, name)
        assert abs(got - value) < tolerance[name], (name, got, value)
        assert abs(got - value) < 3 * err, (name, got, value, err)


def test_reported_errors_match_the_spread_over_seeds():
    """The standard errors are standard deviations of the estimates, scaled by the residuals (the
    proxies' noise is unknown): over 40 noisy draws the reported error of b is within a factor 2
    of how much b actually scatters, and the truth lies within 2 errors most of the time."""
    fits = [fit_size_law(SIZES, _losses(SIZES, NOISE, seed)) for seed in range(40)]
    b = np.array([fit.b for fit in fits])
    reported = np.array([fit.errors()[1] for fit in fits])
    assert 0.5 < np.median(reported) / np.std(b) < 2, (np.median(reported), np.std(b))
    assert np.sum(np.abs(b - TRUE["b"]) < 2 * reported) >= 30


def test_prediction_error_matches_sampling_the_covariance():
    """The delta-method error at a far size equals the spread of the law over parameters drawn
    from the fit's covariance (the errors are small, so the linearisation holds)."""
    fit = fit_size_law(SIZES, _losses(SIZES, 1e-4, 2))
    far = 1e10
    _, err = fit.predict(far)
    draws = np.random.default_rng(3).multivariate_normal([fit.a, fit.b, fit.c], fit.cov, size=20_000)
    spread = np.std(law(far / 1e6, draws[:, 0], draws[:, 1], draws[:, 2]))
    assert float(err) == pytest.approx(spread, rel=0.1)


def _proxies(sizes, losses):
    return [
        Proxy(f"p{i}", 32, 2, 2, int(n), 204_800, 1.0, float(loss), "runs/p")
        for i, (n, loss) in enumerate(zip(sizes, losses))
    ]


def test_held_out_prediction_beats_the_naive_baseline():
    """Proxies given in any order: the 2 largest are held out, predicted within 0.5% and better
    than the largest fitted proxy's loss (the naive baseline)."""
    proxies = _proxies(SIZES, _losses(SIZES, 0.002, 4))
    shuffled = [proxies[i] for i in np.random.default_rng(5).permutation(len(proxies))]
    result = predict_budget(shuffled, held_out=2, targets={"big": 10**10})
    assert [h["name"] for h in result["held_out"]] == ["p6", "p7"]
    assert all(h["naive"] == proxies[5].val_loss for h in result["held_out"])
    for h in result["held_out"]:
        assert abs(h["relative_error"]) < 0.005
        assert abs(h["relative_error"]) < abs(h["naive_relative_error"]) / 2
    assert result["targets"][0]["predicted"] == pytest.approx(law(1e4, **TRUE), abs=0.1)


BAD = [
    ("three points", SIZES[:3], [5.0, 4.9, 4.8], "at least 4 fit points"),
    ("sizes not increasing", [1e4, 3e4, 2e4, 4e4], [5.0, 4.9, 4.8, 4.7], "strictly increasing"),
    ("repeated size", [1e4, 2e4, 2e4, 4e4], [5.0, 4.9, 4.8, 4.7], "share a size"),
    ("NaN loss", SIZES[:4], [5.0, math.nan, 4.8, 4.7], "finite and > 0"),
    ("infinite loss", SIZES[:4], [5.0, 4.9, math.inf, 4.7], "finite and > 0"),
    ("negative loss", SIZES[:4], [5.0, 4.9, 4.8, -1.0], "finite and > 0"),
    ("zero size", [0, 2e4, 3e4, 4e4], [5.0, 4.9, 4.8, 4.7], "sizes must be finite and > 0"),
    ("lengths differ", SIZES[:5], [5.0, 4.9, 4.8, 4.7], "one loss per proxy size"),
]


@pytest.mark.parametrize("sizes, losses, problem", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_inputs_raise_one_line_errors(sizes, losses, problem):
    with pytest.raises(ConfigError, match=problem) as err:
        fit_size_law(sizes, losses)
    assert "\n" not in str(err.value) and ":" in str(err.value)  # one line: the problem, then the fix


def test_too_few_proxies_after_the_hold_out_is_refused():
    with pytest.raises(ConfigError, match="at least 4 fit points"):
        predict_budget(_proxies(SIZES[:4], _losses(SIZES[:4], 0.0, 0)), held_out=1, targets={})


def test_a_budget_with_too_few_proxies_is_named_and_a_flat_fit_is_flagged():
    with pytest.raises(ConfigError, match="the 204,800-token proxies: the size law needs at least 4"):
        predict(_proxies(SIZES[:4], _losses(SIZES[:4], 0.0, 0)), held_out=1, targets={})
    rising = predict(_proxies(SIZES[:5], [5.0, 5.01, 5.02, 5.03, 5.04]), held_out=1, targets={})
    assert any("do not fall with size" in line for line in summary_lines(rising))
    falling = predict(_proxies(SIZES[:5], _losses(SIZES[:5], 0.0, 0)), held_out=1, targets={})
    assert not any("do not fall" in line for line in summary_lines(falling))
