"""Adam state across a growth (the MSG rule): moments copied into the old block, zeros for new
entries and for whole new layers (copied layers are new parameters), the step count kept."""

from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping, Tuple

from torch import Tensor

from nemo_flm.checkpoint.weights import MOMENTS
from nemo_flm.growth.operators import OUTPUT, iter_grown, zero_fill
from nemo_flm.growth.plan import GrowthPlan


def iter_grown_moments(
    moments: Mapping[str, Mapping[str, Tensor]], plan: GrowthPlan
) -> Iterator[Tuple[str, str, Tensor]]:
    """(moment, name, grown tensor) one at a time from {moment: {name: tensor}} (the inner
    mappings may load lazily); new layers (copied or not) start from zero.

    With a muP output rescale W' = r W the output layer's gradients become g / r, so its first
    and second moments are carried as m / r and v / r^2 (the state Adam would hold had it trained
    W' all along)."""
    fresh = dataclasses.replace(
        plan, source=[None if j in plan.new_layers else s for j, s in enumerate(plan.source)], output_rescale=1.0
    )
    for moment, power in zip(MOMENTS, (1, 2)):
        for name, value in iter_grown(moments[moment], fresh, zero_fill):
            if name == OUTPUT and plan.output_rescale != 1.0:
                value = value / plan.output_rescale**power
            yield moment, name, value
