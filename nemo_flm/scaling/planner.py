"""Budget-aware growth planning: stage shapes and token split that minimise the predicted final loss.

Given a compute law, a growth efficiency eta (scaling/growth_run.py), a FLOPs budget and the final
shape, the planner tries every chain of k MSG-compatible shapes ending in the final one, splits the
budget between the stages (a grid over the FLOPs shares, polished by SLSQP for the best chains),
rounds each stage to whole checkpoint intervals, and keeps the chain with the lowest predicted
final loss. Candidate shapes keep the final head dim, FFN ratio, layout and batch and scale the
heads and depth by the given fractions; a chain is one that growth/plan.py's make_plan accepts,
link by link, with the parameter count rising.

Each stage needs a minimum length: one checkpoint interval, and on a grown stage more steps than
the MSG ramp (the staged run refuses a ramp that does not end inside its stage). A budget below
the chain's minimum cannot be planned.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np
from omegaconf import OmegaConf

from nemo_flm.config import ffn_size, head_dim, load_shape_config
from nemo_flm.errors import ConfigError
from nemo_flm.growth.plan import make_plan
from nemo_flm.scaling.compute_law import ComputeLaw
from nemo_flm.scaling.growth_run import Stage, check_eta, stage_losses, stage_of

GRID_POINTS = 4000  # token splits tried per chain on the grid (the best chains are then polished)
POLISHED_CHAINS = 5


@dataclass(frozen=True)
class Schedule:
    """How a stage's length is counted: tokens per step, steps per checkpoint interval, ramp steps."""

    tokens_per_step: int
    quantum: int  # stage lengths are whole multiples: checkpoints (and validation) land on the last step
    grow_steps: int

    @classmethod
    def of_job(cls, job: Any, model: Any, grow_steps: int) -> "Schedule":
        """A job's batch, its checkpoint interval and (when in steps) its validation interval: every
        stage ends on a checkpoint (the next stage grows from it) and, when possible, on a validation."""
        every = int(job.exp_manager.get("checkpoint_callback_params", {}).get("every_n_train_steps") or 1)
        val = job.trainer.get("val_check_interval")
        quantum = math.lcm(every, val) if isinstance(val, int) else every
        return cls(model.global_batch_size * model.seq_length, quantum, grow_steps)

    def min_steps(self, grown: bool) -> int:
        """One interval; a grown stage, the first multiple of it past the MSG ramp."""
        return self.quantum * (self.grow_steps // self.quantum + 1 if grown else 1)


@dataclass(frozen=True)
class PlannedStage:
    model: Any  # the stage's typed model config
    stage: Stage
    steps: int
    predicted_loss: float


@dataclass(frozen=True)
class Plan:
    stages: List[PlannedStage]
    budget: float
    eta: float
    law: ComputeLaw

    @property
    def flops(self) -> float:
        return sum(s.stage.flops for s in self.stages)

    @property
    def scratch_loss(self) -> float:
        """The final shape trained from scratch on the whole budget."""
        final = self.stages[-1].stage
        return float(self.law.loss(final.params, self.budget / final.flops_per_token))

    @property
    def scratch_flops(self) -> float:
        """FLOPs the final shape alone needs to reach this plan's final loss."""
        final = self.stages[-1]
        return float(self.law.tokens_to_reach(final.stage.params, final.predicted_loss)) * final.stage.flops_per_token


def budget_flops(
    flops: Optional[float] = None,
    gpu_hours: Optional[float] = None,
    mfu: Optional[float] = None,
    peak_tflops: Optional[float] = None,
) -> float:
    """The budget in FLOPs: given as such, or GPU-hours x 3600 x peak x MFU (the FLOPs the trainer counts)."""
    if (flops is None) == (gpu_hours is None):
        raise ConfigError("give the budget as --budget-flops, or as --gpu-hours with --mfu and --peak-tflops")
    if flops is None:
        if mfu is None or peak_tflops is None:
            raise ConfigError("--gpu-hours needs --mfu (e.g. 0.52) and --peak-tflops (the GPU's bf16 peak, e.g. 312)")
        if not 0 < mfu <= 1 or not peak_tflops > 0:
            raise ConfigError(f"--mfu must be in (0, 1] and --peak-tflops > 0, got {mfu} and {peak_tflops}")
        flops = gpu_hours * 3600 * peak_tflops * 1e12 * mfu
    if not (math.isfinite(flops) and flops > 0):
        raise ConfigError(f"the budget must be a positive number of FLOPs, got {flops}")
    return float(flops)


def stage_shape(final: Any, heads: int, layers: int) -> Any:
    """The final config at `heads` heads (same head dim and FFN ratio) and `layers` layers; the muP
    width multiplier follows the width, as in conf/stage/*.yaml."""
    width = {"num_attention_heads": heads, "num_layers": layers, "hidden_size": heads * head_dim(final)}
    width["ffn_hidden_size"] = ffn_size(final) // final.num_attention_heads * heads
    if final.use_mup:
        width["mup_scale_factor"] = final.mup_scale_factor * heads / final.num_attention_heads
    return load_shape_config(OmegaConf.merge(final, width))


def candidate_shapes(final: Any, width_fractions: Sequence[float], depth_fractions: Sequence[float]) -> List[Any]:
    """Valid smaller shapes on the grid of width (heads) and depth fractions, smallest first."""
    if final.hidden_size != final.num_attention_heads * head_dim(final):
        raise ConfigError("the final config decouples the head dim (kv_channels): the planner grows heads x head dim")
    grid = {
        (max(1, round(w * final.num_attention_heads)), max(1, round(d * final.num_layers)))
        for w, d in itertools.product(width_fractions, depth_fractions)
        if 0 < w <= 1 and 0 < d <= 1
    } - {(final.num_attention_heads, final.num_layers)}
    shapes = []
    for heads, layers in sorted(grid):
        try:
            shapes.append(stage_shape(final, heads, layers))
        except ConfigError:  # e.g. heads not divisible by TP, layers by PP: not a shape this layout runs
            continue
    return sorted(shapes, key=lambda cfg: stage_of(cfg).params)


def _grows(small: Any, large: Any) -> bool:
    """growth/plan.py accepts growing `small` into `large`, and the parameters rise."""
    try:
        make_plan(small, large)
    except ConfigError:
        return False
    return stage_of(large).params > stage_of(small).params


def growth_chains(candidates: List[Any], final: Any, k: int) -> List[List[Any]]:
    """Every chain of k shapes, each a growth of the previous, ending in `final`."""
    shapes = candidates + [final]
    ok = [[_grows(a, b) for b in shapes] for a in shapes]
    last = len(shapes) - 1
    chains = []
    for picked in itertools.combinations(range(last), k - 1):
        path = list(picked) + [last]
        if all(ok[a][b] for a, b in zip(path, path[1:])):
            chains.append([shapes[i] for i in path])
    return chains


def _shares_grid(low: np.ndarray, high: float) -> np.ndarray:
    """FLOPs shares of the first k-1 stages on a grid, each >= its minimum, their sum <= high; [k-1, M]."""
    per_axis = max(2, int(GRID_POINTS ** (1 / low.size)))
    axes = [np.linspace(lo, high, per_axis) for lo in low]
    grid = np.stack([a.ravel() for a in np.meshgrid(*axes, indexing="ij")])
    return grid[:, grid.sum(axis=0) <= high]


def _final_loss(law: ComputeLaw, eta: float, stages: List[Stage], budget: float, shares: np.ndarray) -> np.ndarray:
    """Predicted final loss for early-stage FLOPs shares [k-1, M] (the last stage takes the rest)."""
    shares = np.concatenate([shares, 1 - shares.sum(axis=0, keepdims=True)])
    cost = np.array([s.flops_per_token for s in stages]).reshape(-1, 1)
    return stage_losses(law, eta, [s.params for s in stages], shares * budget / cost)[-1]


def _polish(
    law: ComputeLaw, eta: float, stages: List[Stage], budget: float, start: np.ndarray, low, high
) -> np.ndarray:
    """SLSQP from the grid's best split, within the same bounds."""
    from scipy.optimize import minimize

    result = minimize(
        lambda s: float(_final_loss(law, eta, stages, budget, s.reshape(-1, 1))[0]),
        start,
        method="SLSQP",
        bounds=[(lo, high) for lo in low],
        constraints=[{"type": "ineq", "fun": lambda s: high - s.sum()}],
    )
    polished = np.clip(result.x, low, high)
    return polished if result.success and polished.sum() <= high else start


def _round(stages: List[Stage], shares: np.ndarray, budget: float, sched: Schedule) -> List[int]:
    """Whole checkpoint intervals: the early stages' shares rounded down, then every whole interval
    the budget has left to the final stage (each stage at least its minimum)."""
    interval = [s.flops_per_token * sched.tokens_per_step * sched.quantum for s in stages]
    steps = [
        max(sched.min_steps(grown=i > 0), sched.quantum * math.floor(share * budget / cost))
        for i, (share, cost) in enumerate(zip(shares, interval))
    ]
    left = budget - sum(n // sched.quantum * cost for n, cost in zip(steps, interval))
    steps.append(max(sched.min_steps(grown=len(stages) > 1), sched.quantum * math.floor(left / interval[-1])))
    return steps


def _planned(law: ComputeLaw, eta: float, models: List[Any], steps: List[int], sched: Schedule) -> List[PlannedStage]:
    stages = [stage_of(m, n * sched.tokens_per_step) for m, n in zip(models, steps)]
    losses = stage_losses(law, eta, [s.params for s in stages], np.array([s.tokens for s in stages]))
    return [PlannedStage(m, s, n, float(loss)) for m, s, n, loss in zip(models, stages, steps, losses)]


def check_request(final: Any, budget: float, k: int, sched: Schedule) -> None:
    """What makes any k-stage plan impossible, in one line, before the search (and before a fit)."""
    if k < 1:
        raise ConfigError(f"--stages must be >= 1, got {k}")
    if k > 1 and sched.grow_steps < 1:
        raise ConfigError(
            "grown stages need an MSG mask ramp: pass --grow-steps N (> 0) or set model.growth.grow_steps in the "
            "final config"
        )
    least = stage_of(final).flops_per_token * sched.min_steps(grown=k > 1) * sched.tokens_per_step
    if budget < least:
        raise ConfigError(
            f"budget {budget:.3e} FLOPs is below the {least:.3e} the final shape needs for its minimum "
            f"{sched.min_steps(grown=k > 1)} steps: raise the budget or pick a smaller final config"
        )


def plan_growth(
    law: ComputeLaw,
    eta: float,
    final: Any,
    budget: float,
    k: int,
    sched: Schedule,
    width_fractions: Sequence[float],
    depth_fractions: Sequence[float] = (1.0,),
) -> Plan:
    """The k-stage plan with the lowest predicted final loss within `budget` FLOPs."""
    check_eta(eta)
    check_request(final, budget, k, sched)
    chains = growth_chains(candidate_shapes(final, width_fractions, depth_fractions), final, k) if k > 1 else [[final]]
    options = []
    for models in chains:
        stages = [stage_of(m) for m in models]
        minimum = [
            s.flops_per_token * sched.min_steps(grown=i > 0) * sched.tokens_per_step / budget
            for i, s in enumerate(stages)
        ]
        if sum(minimum) <= 1:
            options.append((models, stages, np.array(minimum[:-1]), 1 - minimum[-1]))
    if not options:
        raise ConfigError(
            f"no {k}-stage chain of growable shapes fits the budget {budget:.3e} FLOPs (each stage's minimum "
            "length included): use fewer stages, more --width-fractions / --depth-fractions, or a larger budget"
        )
    return _best_plan(law, eta, budget, sched, options)


def _grid_best(law: ComputeLaw, eta: float, stages: List[Stage], budget: float, low: np.ndarray, high: float):
    """(loss, shares) of the best split on the grid (one stage: its only split)."""
    grid = _shares_grid(low, high) if low.size else np.zeros((0, 1))
    losses = _final_loss(law, eta, stages, budget, grid)
    best = int(np.argmin(losses))
    return float(losses[best]), grid[:, best]


def _best_plan(law: ComputeLaw, eta: float, budget: float, sched: Schedule, options: list) -> Plan:
    """Grid every chain's split, polish the best few, round them, keep the lowest final loss."""
    scored = sorted(
        (
            (*_grid_best(law, eta, stages, budget, low, high), models, stages, low, high)
            for models, stages, low, high in options
        ),
        key=lambda row: row[0],
    )
    plans = []
    for _, shares, models, stages, low, high in scored[:POLISHED_CHAINS]:
        if low.size:
            shares = _polish(law, eta, stages, budget, shares, low, high)
        steps = _round(stages, shares, budget, sched)
        plans.append(Plan(_planned(law, eta, models, steps, sched), budget, eta, law))
    return min(plans, key=lambda p: p.stages[-1].predicted_loss)
