"""Adam state across a growth (the MSG rule): moments copied into the old block, zeros for new
entries and for whole new layers (copied layers are new parameters), the step count kept."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterator, Mapping, Tuple

from torch import Tensor

from nemo_flm.checkpoint.weights import MOMENTS
from nemo_flm.growth.operators import OUTPUT, grown_entries, zero_fill
from nemo_flm.growth.plan import GrowthPlan


def grown_moment_entries(
    moments: Mapping[str, Mapping[str, Tensor]], plan: GrowthPlan
) -> Iterator[Tuple[str, str, Callable[[], Tensor]]]:
    """(moment, name, make) for every grown Adam moment, from {moment: {name: tensor}} (the inner
    mappings may load lazily; make() reads and grows, as operators.grown_entries); new layers
    (copied or not) start from zero.

    With a muP output rescale W' = r W the output layer's gradients become g / r, so its first
    and second moments are carried as m / r and v / r^2 (the state Adam would hold had it trained
    W' all along)."""
    fresh = dataclasses.replace(
        plan, source=[None if j in plan.new_layers else s for j, s in enumerate(plan.source)], output_rescale=1.0
    )
    for moment, power in zip(MOMENTS, (1, 2)):
        for name, make in grown_entries(moments[moment], fresh, zero_fill):
            if name == OUTPUT and plan.output_rescale != 1.0:
                make = functools.partial(_rescaled, make, plan.output_rescale**power)
            yield moment, name, make


def _rescaled(make: Callable[[], Tensor], divisor: float) -> Tensor:
    return make() / divisor
