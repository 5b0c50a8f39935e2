"""The growth efficiency eta (scaling/growth_run.py) from a measurement: scripts/bench_growth.py.

The bench trains a staged run and the final shape from scratch on the same FLOPs, and measures the
share f of those FLOPs after which the grown run first reaches the from-scratch run's final loss.
The growth-run model predicts that share for any eta (`crossing_fraction`: the same comparison made
on the law's curves); eta is the value whose prediction equals the measured f (mean over seeds),
found by bisection: a larger eta carries more of each stage into the next, so the grown run
reaches the target sooner and f falls. The derivation leans on the law at the bench's sizes: give
it a law fitted near them.
"""

from __future__ import annotations

import json
from typing import List, Optional

import numpy as np

from nemo_flm.errors import ConfigError
from nemo_flm.scaling.compute_law import ComputeLaw
from nemo_flm.scaling.growth_run import Stage, carried_tokens


def crossing_fraction(law: ComputeLaw, eta: float, stages: List[Stage], scratch: Stage) -> Optional[float]:
    """Share of the run's FLOPs after which the grown run's predicted loss first reaches that of
    `scratch` (the final shape from scratch) trained on the same FLOPs; None when it never does."""
    total = sum(s.flops for s in stages)
    target = law.loss(scratch.params, total / scratch.flops_per_token)
    tokens = np.array([s.tokens for s in stages])
    spent = 0.0
    for stage, start in zip(stages, carried_tokens(law, eta, [s.params for s in stages], tokens)):
        need = max(float(law.tokens_to_reach(stage.params, target)) - start, 0.0)
        if need <= stage.tokens:
            return (spent + need * stage.flops_per_token) / total
        spent += stage.flops
    return None


def eta_from_fraction(law: ComputeLaw, stages: List[Stage], scratch: Stage, fraction: float) -> float:
    """The eta in [0, 1] whose predicted crossing share equals the measured `fraction`."""

    def predicted(eta: float) -> float:
        share = crossing_fraction(law, eta, stages, scratch)
        return np.inf if share is None else share

    if predicted(1.0) > fraction:
        raise ConfigError(
            f"the measured FLOPs fraction {fraction:.3f} beats the model's best ({predicted(1.0):.3f} at eta = 1) "
            "under this law: the law does not describe the bench's sizes; fit one near them or pass --eta"
        )
    low, high = 0.0, 1.0  # predicted(low) > fraction >= predicted(high)
    for _ in range(50):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if predicted(mid) > fraction else (low, mid)
    return high


def eta_from_bench(law: ComputeLaw, path: str) -> float:
    """eta from a bench_growth.json: its stages, its from-scratch run and its measured fractions."""
    with open(path) as handle:
        bench = json.load(handle)
    if "stages" not in bench or "scratch" not in bench:
        raise ConfigError(f"{path} has no 'stages'/'scratch' record: rerun scripts/bench_growth.py (it writes them)")
    fractions = [seed["fraction"] for seed in bench["seeds"].values() if seed["fraction"] is not None]
    if not fractions:
        raise ConfigError(
            f"in {path} no seed's grown run reached the from-scratch loss: eta is not measurable; pass --eta"
        )
    stages = [Stage(**s) for s in bench["stages"]]
    return eta_from_fraction(law, stages, Stage(**bench["scratch"]), float(np.mean(fractions)))
