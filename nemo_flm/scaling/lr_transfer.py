"""μP's hyperparameter transfer, measured: an LR sweep at several widths, in μP and in SP.

Under μP the best base LR of a width sweep stays where the base width has it (Tensor Programs V:
what FLM relies on when it moves the LR found on a proxy to the 16B stage); under SP it moves down
as the width grows, since at a fixed LR the hidden matrices' updates move activations more, the
wider the model. Every run trains from the same seed on the same batches with a linear warmup and
a cosine decay to a tenth of its LR, then scores the held-out batch. A run whose loss or gradients
turn non-finite is recorded as diverged, with no loss. With several seeds (inits) per point the
verdicts read the mean held-out loss: one seed's curve is flat near its optimum and ragged at
high LRs, so its argmin can jump a grid step either way.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nemo_flm.curves import Panel, save_panels
from nemo_flm.scaling.sweep_data import SweepData
from nemo_flm.scaling.width_sweep import LABELS, PARAMETRIZATIONS, WidthSweep, build, train
from nemo_flm.training.engine import eval_sums
from nemo_flm.training.nonfinite import NonFiniteError

COLUMNS = ("parametrization", "width", "lr", "log2_lr", "seed", "train_loss", "held_out_loss", "diverged", "seconds")
POINT = ("parametrization", "width", "lr")  # what a run measures; seeds repeat it
FINAL_LR = 0.1  # the cosine decay's end, as a fraction of the peak LR


def lr_grid(low: int, high: int) -> List[float]:
    """2^low, 2^(low+1), ..., 2^high."""
    if low > high:
        raise ValueError(f"the LR grid 2^{low}..2^{high} is empty: give --log2-lr LOW HIGH with LOW <= HIGH")
    return [2.0**e for e in range(low, high + 1)]


def run(sweep: WidthSweep, width: int, parametrization: str, lr: float, data: SweepData, warmup: int) -> Dict:
    """One run (seed `sweep.seed`): the mean train loss of its last tenth of steps and the held-out loss."""
    steps = len(data.train)
    cfg = sweep.config(width, parametrization, lr, steps, warmup_steps=warmup, final_lr=FINAL_LR)
    start = time.perf_counter()
    model = build(cfg)
    row = {
        "parametrization": parametrization,
        "width": width,
        "lr": lr,
        "log2_lr": round(math.log2(lr), 3),
        "seed": sweep.seed,
    }
    try:
        losses = train(model, cfg, data.train)
        total, tokens = eval_sums([model], data.held_out, cfg).tolist()
    except NonFiniteError:
        losses, total, tokens = [math.nan], math.nan, 1.0
    tail = losses[-max(1, steps // 10) :]
    held_out = total / tokens
    diverged = not math.isfinite(held_out)
    row.update(
        train_loss=None if diverged else sum(tail) / len(tail),
        held_out_loss=None if diverged else held_out,
        diverged=diverged,
        seconds=round(time.perf_counter() - start, 1),
    )
    return row


def lr_sweep(
    sweep: WidthSweep, widths: Sequence[int], lrs: Sequence[float], data: SweepData, warmup: int, seeds: int = 1
) -> List[Dict]:
    """Every (parametrization, width, LR) run, once per seed sweep.seed, +1, ..., with one
    progress line each."""
    rows = []
    for parametrization in PARAMETRIZATIONS:
        for width in widths:
            for lr in lrs:
                for seed in range(sweep.seed, sweep.seed + seeds):
                    row = run(replace(sweep, seed=seed), width, parametrization, lr, data, warmup)
                    loss = "diverged" if row["diverged"] else f"held-out loss {row['held_out_loss']:.4f}"
                    print(
                        f"{LABELS[parametrization]} width {width} lr 2^{row['log2_lr']:g} seed {seed}: {loss} "
                        f"({row['seconds']} s)",
                        flush=True,
                    )
                    rows.append(row)
    return rows


def means(rows: List[Dict]) -> List[Dict]:
    """One row per (parametrization, width, LR): the losses averaged over its seeds, diverged if
    any seed diverged."""
    out = []
    for point in dict.fromkeys(tuple(r[k] for k in POINT) for r in rows):
        runs = [r for r in rows if tuple(r[k] for k in POINT) == point]
        diverged = any(r["diverged"] for r in runs)
        mean = {k: None if diverged else sum(r[k] for r in runs) / len(runs) for k in ("train_loss", "held_out_loss")}
        out.append(
            {**dict(zip(POINT, point)), "log2_lr": runs[0]["log2_lr"], "seeds": len(runs), **mean, "diverged": diverged}
        )
    return out


def argmins(rows: List[Dict]) -> Dict[Tuple[str, int], Optional[float]]:
    """(parametrization, width) -> the LR of the lowest held-out loss (None: every run diverged)."""
    best: Dict[Tuple[str, int], Optional[float]] = {}
    for key in dict.fromkeys((r["parametrization"], r["width"]) for r in rows):
        runs = [r for r in rows if (r["parametrization"], r["width"]) == key and not r["diverged"]]
        best[key] = min(runs, key=lambda r: r["held_out_loss"])["lr"] if runs else None
    return best


def _shift(found: Dict[int, float], lrs: List[float]) -> Tuple[int, str, bool]:
    """How many grid steps the optimum moves across widths, the path with any best LR at the
    grid's edge marked, and whether there is one (there the true optimum may lie beyond the grid)."""
    exps = {w: round(math.log2(lr)) for w, lr in sorted(found.items())}
    edges = {round(math.log2(min(lrs))), round(math.log2(max(lrs)))}
    path = ", ".join(f"{w}: 2^{e}" + (" (grid edge)" if e in edges else "") for w, e in exps.items())
    return max(exps.values()) - min(exps.values()), path, bool(edges & set(exps.values()))


def verdicts(best: Dict[Tuple[str, int], Optional[float]], lrs: List[float]) -> List[str]:
    """Per parametrization: how far (in grid steps, log2) the optimum moves across widths, with a
    best LR at the edge of the grid `lrs` flagged; then μP's move against SP's, the comparison
    that says whether μP transferred the LR better (a fixed threshold cannot: SP's optimum can
    drift by one step over a factor 4 in width)."""
    lines, shifts, edged = [], {}, False
    for parametrization in PARAMETRIZATIONS:
        found = {w: lr for (p, w), lr in best.items() if p == parametrization}
        if not found:
            continue
        if None in found.values():
            lines.append(f"{LABELS[parametrization]}: every run of some width diverged; no optimum to compare")
            continue
        moved, path, at_edge = _shift(found, lrs)
        shifts[parametrization], edged = moved, edged or at_edge
        where = "stays put" if moved == 0 else f"moves by {moved} grid step{'s' if moved > 1 else ''}"
        edge = "; an optimum at the grid's edge: widen the grid" if at_edge else ""
        lines.append(f"{LABELS[parametrization]} optimum {where}: {path}{edge}")
    if len(shifts) == 2:
        mup, sp = shifts["mup"], shifts["sp"]
        verdict = "μP transfers the LR better" if mup < sp else "no better transfer under μP at this grid"
        verdict = "inconclusive (an optimum at the grid's edge)" if edged else verdict
        lines.append(f"μP moves {mup}, SP {sp} grid steps: {verdict}")
    return lines


def markdown_table(rows: List[Dict]) -> List[str]:
    """Held-out loss: a row per LR, a column per parametrization and width; each column's minimum in bold."""
    keys = list(dict.fromkeys((r["parametrization"], r["width"]) for r in rows))
    lrs = sorted({r["lr"] for r in rows})
    best = argmins(rows)
    cell = {(r["parametrization"], r["width"], r["lr"]): r for r in rows}
    lines = [
        "| LR | " + " | ".join(f"{LABELS[p]} {w}" for p, w in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for lr in lrs:
        cells = []
        for p, w in keys:
            r = cell[(p, w, lr)]
            text = "diverged" if r["diverged"] else f"{r['held_out_loss']:.3f}"
            cells.append(f"**{text}**" if best[(p, w)] == lr else text)
        lines.append(f"| 2^{math.log2(lr):g} | " + " | ".join(cells) + " |")
    return lines


def plot(rows: List[Dict], path: str) -> str:
    """Held-out loss against log2 LR, a line per width, a panel per parametrization."""
    panels = []
    for parametrization in PARAMETRIZATIONS:
        panel = Panel(title=f"{LABELS[parametrization]}: held-out loss", xlabel="log2 LR", ylabel="held-out loss")
        for width in dict.fromkeys(r["width"] for r in rows):
            runs = [r for r in rows if (r["parametrization"], r["width"]) == (parametrization, width)]
            losses = [math.nan if r["diverged"] else r["held_out_loss"] for r in runs]
            panel.curves[f"width {width}"] = ([r["log2_lr"] for r in runs], losses)
        panels.append(panel)
    return save_panels(path, panels)


def report(rows: List[Dict], settings: Dict[str, Any]) -> Dict[str, Any]:
    """What the JSON holds: the settings, every run, the means over seeds, their argmins and the verdicts."""
    averaged = means(rows)
    best = argmins(averaged)
    return {
        "settings": settings,
        "runs": rows,
        "means": averaged,
        "argmin_lr": [{"parametrization": p, "width": w, "lr": lr} for (p, w), lr in best.items()],
        "verdicts": verdicts(best, sorted({r["lr"] for r in rows})),
    }
