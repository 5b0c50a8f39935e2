"""μP's coordinate check (Tensor Programs V, §D; Microsoft mup's `get_coord_data`): the mean
|activation| of chosen modules at each of a few training steps, against width.

Under μP a hidden activation's typical coordinate stays the same size as the width grows, during
training as at init; under SP the updates of the hidden matrices and the output layer grow with
width at a fixed LR, and so do the activations they feed. As in mup, the batch is fixed (the same
one at every step and width), `l1` = output.abs().mean() is recorded by forward hooks during the
forward of step t (t = 1 is the initialised model), and the LR is high enough for SP's growth to
show within a few steps. The rows carry a `parametrization` column besides mup's width, module,
t, l1.

Recorded: the embedding output, each layer's attention output (linear_proj, before its bias) and
MLP output (linear_fc2, likewise), each layer's output, the final LayerNorm and the logits
(output_layer; the μP logit multiplier is applied to its input, so the logits include it).
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from nemo_flm.curves import save_figure
from nemo_flm.scaling.width_sweep import LABELS, PARAMETRIZATIONS, WidthSweep, build, train
from nemo_flm.training.forward_step import Batch
from nemo_flm.training.nonfinite import NonFiniteError

MODULES = re.compile(
    r"embedding|decoder\.layers\.\d+(\.self_attention\.linear_proj|\.mlp\.linear_fc2)?|decoder\.final_layernorm|output_layer"
)
COLUMNS = ("parametrization", "width", "module", "t", "l1")


def _first_tensor(output: Any) -> torch.Tensor:
    """megatron's linears return (output, bias) and its layers (hidden, context): the first."""
    return output[0] if isinstance(output, (tuple, list)) else output


def record_run(model: torch.nn.Module, cfg: Any, batch: Batch, steps: int, label: Dict[str, Any]) -> List[Dict]:
    """Train `model` `steps` steps on `batch`; the l1 rows of every recorded module at every step,
    each with `label`'s columns. A run that turns non-finite keeps the rows up to that step."""
    rows: List[Dict[str, Any]] = []
    step = {"t": 0}

    def hook(name: str):
        def record(module, inputs, output):
            rows.append({**label, "module": name, "t": step["t"], "l1": _first_tensor(output).abs().mean().item()})

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if MODULES.fullmatch(n)]
    try:
        train(model, cfg, [batch] * steps, before_step=lambda t: step.update(t=t))
    except NonFiniteError:
        print(f"  {label}: non-finite at step {step['t']}; its rows so far are kept", flush=True)
    finally:
        for handle in handles:
            handle.remove()
    return rows


def coord_data(sweep: WidthSweep, widths: Sequence[int], lr: float, batch: Batch, steps: int) -> List[Dict]:
    """The coordinate check's rows for every parametrization and width (one progress line each)."""
    rows = []
    for parametrization in PARAMETRIZATIONS:
        for width in widths:
            cfg = sweep.config(width, parametrization, lr, steps)
            run = record_run(build(cfg), cfg, batch, steps, {"parametrization": parametrization, "width": width})
            last = [r["l1"] for r in run if r["t"] == steps and r["module"] == "output_layer"]
            print(f"{LABELS[parametrization]} width {width}: logits l1 at step {steps} = {last}", flush=True)
            rows += run
    return rows


def across_widths(rows: List[Dict], parametrization: str, module: str, t: int) -> Dict[int, float]:
    """width -> l1 of one module at step t."""
    return {
        r["width"]: r["l1"]
        for r in rows
        if r["parametrization"] == parametrization and r["module"] == module and r["t"] == t
    }


def spread(l1: Dict[int, float]) -> float:
    """max / min of l1 over widths: 1 when the coordinates do not move with width."""
    return max(l1.values()) / min(l1.values())


def slope(l1: Dict[int, float]) -> float:
    """The least-squares slope of log l1 against log width (0: width-independent)."""
    widths = sorted(l1)
    return float(np.polyfit(np.log(widths), np.log([l1[w] for w in widths]), 1)[0])


def summary(rows: List[Dict], t: int) -> List[str]:
    """A markdown table: per module, l1's spread over widths and its log-log slope at step t, μP and SP."""
    modules = list(dict.fromkeys(r["module"] for r in rows))
    lines = ["| module | μP max/min | μP slope | SP max/min | SP slope |", "|---|---|---|---|---|"]
    for module in modules:
        cells = []
        for parametrization in PARAMETRIZATIONS:
            l1 = across_widths(rows, parametrization, module, t)
            finite = all(math.isfinite(v) and v > 0 for v in l1.values()) and len(l1) > 1
            cells += [f"{spread(l1):.2f}", f"{slope(l1):+.2f}"] if finite else ["n/a", "n/a"]
        lines.append(f"| {module} | " + " | ".join(cells) + " |")
    return lines


def plot(rows: List[Dict], path: str) -> str:
    """l1 against width (log-log), one line per module: a row of panels per parametrization, a
    column per step (mup's plot_coord_data, side by side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted({r["t"] for r in rows})
    modules = list(dict.fromkeys(r["module"] for r in rows))
    fig, axes = plt.subplots(
        len(PARAMETRIZATIONS), len(steps), figsize=(3.2 * len(steps), 3.4 * len(PARAMETRIZATIONS)), squeeze=False
    )
    colors = plt.cm.viridis(np.linspace(0, 1, len(modules)))
    for row, parametrization in zip(axes, PARAMETRIZATIONS):
        for ax, t in zip(row, steps):
            for module, color in zip(modules, colors):
                l1 = across_widths(rows, parametrization, module, t)
                widths = sorted(l1)
                ax.plot(widths, [l1[w] for w in widths], marker="o", ms=3, lw=1, color=color, label=module)
            ax.set(xscale="log", yscale="log", title=f"{LABELS[parametrization]}, t={t}", xlabel="width")
        row[0].set_ylabel("mean |activation| (l1)")
    axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1))
    return save_figure(fig, path)
