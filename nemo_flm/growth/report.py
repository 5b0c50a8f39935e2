"""Growth report: loss against tokens and FLOPs across the stages, growth points marked.

Reads each stage's TensorBoard scalars (train_loss per logged step) and converts steps into
cumulative tokens and training FLOPs (flops.py, lm_head included) with each stage's own
shape and batch. Writes `growth_report.json` and `growth_report.png` beside the stage directories.
Each growth gets two before/after pairs. Train loss: the last logged loss of the stage that ends
and the first of the grown stage (its first step runs with masks at c = 0, so the same function,
but on consecutive batches: they differ by batch noise of a few tenths). Validation loss, on the
same samples: the ending stage's validation at its final step, and the grown model's validation
before its first step (`val_loss_after_growth`, run by training/run.py); these agree to float
rounding when growth preserved the function, and are null when the stage did not validate at its
final step (make trainer.val_check_interval divide max_steps). A stage planned by
scripts/plan_growth.py carries the loss the plan predicted for its end (`predicted_loss`) beside
the realised ones: the validation loss at its final step (the law is fit to validation losses) and
its last train loss; the PNG marks the predictions at each stage's end.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

from nemo_flm.atomic import atomic_output
from nemo_flm.config import load_shape_config
from nemo_flm.curves import Panel, read_scalars, save_panels
from nemo_flm.flops import train_flops_per_token


def curve(stage_dirs: List[str], model_cfgs: List[Any]) -> Dict[str, Any]:
    """Concatenated train-loss curve with cumulative tokens and FLOPs, and the stage boundaries.

    Tokens come from the `consumed_samples` logged with each loss (cumulative over stages, the
    batch of that loss included); FLOPs add each stage's samples x seq x its FLOPs per token."""
    flops = 0.0
    out = {"tokens": [], "flops": [], "loss": [], "stages": []}
    for stage, (path, cfg) in enumerate(zip(stage_dirs, model_cfgs)):
        tags = read_scalars(path, ["consumed_samples", "train_loss", "val_loss", "val_loss_after_growth"])
        consumed = dict(tags["consumed_samples"])
        points = [(consumed[s], loss) for s, loss in tags["train_loss"] if s in consumed]
        start = (points[0][0] - cfg.global_batch_size) if points else 0
        per_sample = cfg.seq_length * train_flops_per_token(cfg)
        for samples, loss in points:
            out["tokens"].append(samples * cfg.seq_length)
            out["flops"].append(flops + (samples - start) * per_sample)
            out["loss"].append(loss)
        end = points[-1][0] if points else start
        flops += (end - start) * per_sample
        out["stages"].append(
            {
                "stage": stage,
                "first_loss": points[0][1] if points else None,
                "last_loss": points[-1][1] if points else None,
                "end_tokens": end * cfg.seq_length,
                "end_flops": flops,
                "final_val_loss": _final_val_loss(tags["train_loss"], tags["val_loss"]),
                "val_loss_after_growth": next((v for _, v in tags["val_loss_after_growth"]), None),
            }
        )
    return out


def _final_val_loss(train: List[tuple], val: List[tuple]):
    """The validation loss logged at the stage's last training step, if it validated there."""
    return val[-1][1] if train and val and val[-1][0] == train[-1][0] else None


def _predictions(data: Dict[str, Any], key: str) -> Dict[str, tuple]:
    """The plan's predicted loss at each planned stage's end, as a curve (none without a plan)."""
    points = [(s["end_" + key], s["predicted_loss"]) for s in data["stages"] if s["predicted_loss"] is not None]
    return {"predicted (stage end)": tuple(zip(*points))} if points else {}


def write_report(
    out_dir: str, stage_dirs: List[str], model_cfgs: List[Any], predicted: Optional[Sequence[Optional[float]]] = None
) -> str:
    """Write growth_report.json/.png in out_dir; returns the JSON path. `predicted`: the plan's loss
    per stage (None where a stage has none)."""
    data = curve(stage_dirs, [load_shape_config(c) for c in model_cfgs])
    for stage, loss in zip(data["stages"], predicted or [None] * len(data["stages"])):
        stage["predicted_loss"] = loss
    data["growths"] = [
        {
            "at_tokens": a["end_tokens"],
            "at_flops": a["end_flops"],
            "loss_before": a["last_loss"],
            "loss_after": b["first_loss"],
            "val_loss_before": a["final_val_loss"],
            "val_loss_after": b["val_loss_after_growth"],
        }
        for a, b in zip(data["stages"], data["stages"][1:])
    ]
    panels = [
        Panel(
            f"loss vs {label} (dashed: growth)",
            label,
            "train loss",
            {"train": (data[key], data["loss"]), **_predictions(data, key)},
            [g["at_" + key] for g in data["growths"]],
        )
        for key, label in (("tokens", "tokens"), ("flops", "training FLOPs"))
    ]
    json_path = os.path.join(out_dir, "growth_report.json")
    with atomic_output(json_path) as tmp, open(tmp, "w") as handle:
        json.dump(data, handle, indent=1)
    save_panels(os.path.join(out_dir, "growth_report.png"), panels)
    return json_path
