"""Loss curves from a run's TensorBoard scalars: read once, drawn as PNG panels.

A run's scalars are spread over the event files of its resumes (exp_manager starts a new file, or
a new version folder, on each). `read_scalars` reads every file below a directory once for all
tags; `save_panels` draws loss panels (several curves, optional dashed marks) into one PNG, written
under a temporary name. The end-of-run summary (training/summary.py) and the growth report
(growth/report.py) both draw with it.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

from nemo_flm.atomic import atomic_output

Points = List[Tuple[int, float]]


def read_scalars(run_dir: str, tags: List[str]) -> Dict[str, Points]:
    """tag -> (step, value) pairs over all event files below `run_dir` (resumes included; a later
    file's value wins for a step logged twice), reading each file once whatever the number of tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: Dict[str, Dict[int, float]] = {tag: {} for tag in tags}
    for path in sorted(glob.glob(os.path.join(run_dir, "**", "events.out.tfevents.*"), recursive=True)):
        acc = EventAccumulator(path, size_guidance={"scalars": 0})
        acc.Reload()
        present = acc.Tags().get("scalars", [])
        for tag in tags:
            if tag in present:
                points[tag].update({e.step: e.value for e in acc.Scalars(tag)})
    return {tag: sorted(p.items()) for tag, p in points.items()}


@dataclass
class Panel:
    """One plot: named curves (label -> xs, ys) against a common x axis, dashed marks at `marks`."""

    title: str
    xlabel: str
    ylabel: str = "loss"
    curves: Dict[str, Tuple[Sequence[float], Sequence[float]]] = field(default_factory=dict)
    marks: Sequence[float] = ()


def save_panels(path: str, panels: List[Panel]) -> str:
    """Draw the panels side by side into the PNG `path`; returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, (xs, ys) in panel.curves.items():
            ax.plot(xs, ys, lw=1, marker="o" if len(xs) < 30 else None, ms=3, label=label)
        for x in panel.marks:
            ax.axvline(x, color="gray", ls="--", lw=0.8)
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
        if len(panel.curves) > 1:
            ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_figure(fig: Any, path: str) -> str:
    """Lay out a matplotlib figure, write it as the PNG `path` under a temporary name, close it;
    returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
