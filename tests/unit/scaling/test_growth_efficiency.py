"""eta from a growth benchmark: the predicted crossing share by hand, and its inversion."""

import json

import pytest

from nemo_flm.errors import ConfigError
from nemo_flm.scaling.compute_law import ComputeLaw
from nemo_flm.scaling.growth_efficiency import crossing_fraction, eta_from_bench, eta_from_fraction
from nemo_flm.scaling.growth_run import Stage

LAW = ComputeLaw(E=1.7, A=400.0, alpha=0.34, B=410.0, beta=0.28)  # synthetic
STAGES = [Stage(2e8, 1.2e9, 5e9), Stage(1e9, 6e9, 1e10)]  # a small stage, then the final shape
SCRATCH = Stage(1e9, 6e9)


def test_crossing_share_by_hand():
    """The grown run reaches the scratch run's final loss inside its final stage, after the first
    stage's FLOPs plus the final stage's tokens still missing."""
    eta = 0.7
    total = sum(s.tokens * s.flops_per_token for s in STAGES)
    target = LAW.loss(1e9, total / 6e9)
    head_start = eta * LAW.tokens_to_reach(1e9, LAW.loss(2e8, 5e9))
    need = LAW.tokens_to_reach(1e9, target) - head_start
    assert 0 < need < STAGES[1].tokens  # the crossing is inside the final stage
    expected = (1.2e9 * 5e9 + 6e9 * need) / total
    assert crossing_fraction(LAW, eta, STAGES, SCRATCH) == pytest.approx(expected, rel=1e-9)
    assert crossing_fraction(LAW, 0.0, STAGES, SCRATCH) is None  # no head start: never at equal FLOPs


def test_eta_from_a_bench_file(tmp_path):
    measured = crossing_fraction(LAW, 0.8, STAGES, SCRATCH)
    bench = {
        "seeds": {"1": {"target_loss": 6.4, "fraction": measured}, "2": {"target_loss": 6.5, "fraction": None}},
        "stages": [vars(s) for s in STAGES],
        "scratch": vars(SCRATCH),
    }
    path = tmp_path / "bench_growth.json"
    path.write_text(json.dumps(bench))
    assert eta_from_bench(LAW, str(path)) == pytest.approx(0.8, abs=1e-6)
    bench["seeds"]["1"]["fraction"] = None
    path.write_text(json.dumps(bench))
    with pytest.raises(ConfigError, match="no seed's grown run reached"):
        eta_from_bench(LAW, str(path))


def test_a_fraction_beyond_full_efficiency_is_refused():
    best = crossing_fraction(LAW, 1.0, STAGES, SCRATCH)
    with pytest.raises(ConfigError, match="beats the model's best"):
        eta_from_fraction(LAW, STAGES, SCRATCH, best * 0.9)
