"""A growth plan as a printed table and as a staged-run YAML that scripts/train.py runs as is.

The YAML has conf/flm_tiny_growth.yaml's form: it names the final config in `defaults`, repeats
the planner's Hydra overrides, sets the MSG ramp, and lists the stages with their shapes, lengths
(`max_steps`, and `train_tokens` for jobs whose step counts follow from it), cosine horizons (each
stage's own length) and `predicted_loss`, which the staged run carries into its growth report.
Written outside conf/, it runs with `--config-dir <its folder>`: Hydra keeps conf/ on the search
path, so `defaults` still finds the final config. Every stage keeps the final config's LR, warmup,
batch and layout: per-stage LRs and re-warmups are not something the law says anything about.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

from omegaconf import DictConfig, OmegaConf

from nemo_flm.atomic import atomic_output
from nemo_flm.config import ffn_size
from nemo_flm.growth.staged import validate_stages
from nemo_flm.scaling.planner import Plan, PlannedStage

COLUMNS = ("stage", "layers", "hidden", "heads", "N", "tokens", "FLOPs", "budget", "pred. loss")


def plan_table(plan: Plan) -> str:
    """One row per stage, then the totals and the comparison with training the final shape alone."""
    rows = [COLUMNS]
    for index, planned in enumerate(plan.stages):
        m, s = planned.model, planned.stage
        rows.append(
            (
                f"stage{index + 1}",
                str(m.num_layers),
                str(m.hidden_size),
                str(m.num_attention_heads),
                f"{s.params:.3e}",
                f"{s.tokens:.3e}",
                f"{s.flops:.3e}",
                f"{s.flops / plan.budget:.1%}",
                f"{planned.predicted_loss:.4f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    final, used = plan.stages[-1].predicted_loss, plan.flops / plan.budget
    lines += [
        f"total {plan.flops:.3e} FLOPs, {used:.1%} of the budget {plan.budget:.3e} (eta {plan.eta:g})",
        f"the final shape alone on the same budget: predicted loss {plan.scratch_loss:.4f} (the plan: {final:.4f})",
        f"the final shape alone needs {plan.scratch_flops:.3e} FLOPs to reach {final:.4f}: the plan takes "
        f"{plan.flops / plan.scratch_flops:.1%} of that",
    ]
    return "\n".join(lines)


def _stage_entry(index: int, planned: PlannedStage) -> Dict[str, Any]:
    m = planned.model
    model = {
        "num_layers": m.num_layers,
        "hidden_size": m.hidden_size,
        "num_attention_heads": m.num_attention_heads,
        "ffn_hidden_size": ffn_size(m),
        "optim": {"lr_decay_samples": planned.steps * m.global_batch_size},  # the cosine over this stage
    }
    if m.use_mup:
        model["mup_scale_factor"] = m.mup_scale_factor
    return {
        "name": f"stage{index + 1}",
        "max_steps": planned.steps,
        "train_tokens": planned.stage.tokens,
        "predicted_loss": round(planned.predicted_loss, 5),
        "model": model,
    }


def plan_body(plan: Plan, name: str, overrides: List[str], grow_steps: int) -> Dict[str, Any]:
    """The YAML's content below `defaults`: the overrides, the job name, the ramp and the stages."""
    ramp = [f"model.growth.grow_steps={grow_steps}"] if len(plan.stages) > 1 else []
    body = OmegaConf.to_container(OmegaConf.from_dotlist([*overrides, f"name={name}", *ramp]))
    body["stages"] = [_stage_entry(i, s) for i, s in enumerate(plan.stages)]
    return body


def check_plan_runs(final_job: DictConfig, body: Dict[str, Any]) -> None:
    """The staged run's own checks on the job the YAML composes (before anything is written)."""
    validate_stages(OmegaConf.merge(final_job, body))


def write_plan(path: str, final_config: str, body: Dict[str, Any], header: List[str]) -> None:
    """The YAML at `path`, written whole or not at all (nemo_flm/atomic.py)."""
    text = "".join(f"# {line}\n" for line in header)
    text += OmegaConf.to_yaml(OmegaConf.create({"defaults": [final_config, "_self_"], **body}), sort_keys=False)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "w") as handle:
        handle.write(text)
