"""Sanity check of the planner's FLOPs accounting on FLM-101B's published schedule.

FLM-101B (arXiv 2309.03852, docs/flm_facts.md §1) trained 16B for 245.37B tokens, 51B for 39.64B
and 101B for 26.54B (the token budgets in conf/stage/*.yaml): 21.54 days on 192 A800 GPUs, against
an estimated 76.74 days for 101B trained from scratch, a 72% time saving. At equal MFU time is
proportional to FLOPs, so the saving is 1 - sum_i FLOPs_i / FLOPs(101B on all 311.55B tokens),
with each stage's FLOPs from its config (flops.py, as the planner counts them). The 16B
and 51B shapes are reconstructions (not published), which is one reason the number can differ;
the other is that the paper's stages ran at slightly different MFUs (51.90%, 51.30%, 52.88%) and
its from-scratch estimate's MFU is not published.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from nemo_flm.scaling.growth_run import Stage, stage_of

# the paper's stage table (docs/flm_facts.md §1): days and MFU per stage, 192 A800s at 312 TFLOP/s bf16
PUBLISHED = {"flm_16b": (9.63, 0.5190), "flm_51b": (5.37, 0.5130), "flm_101b": (6.54, 0.5288)}
PUBLISHED_TOTAL_DAYS = 21.54
PUBLISHED_SCRATCH_DAYS = 76.74
GPUS, PEAK_FLOPS = 192, 312e12


def days(flops: float, mfu: float) -> float:
    return flops / (GPUS * PEAK_FLOPS * mfu) / 86400


def flm_saving(jobs: List[Tuple[str, Any, float]]) -> Dict[str, Any]:
    """The saving at equal MFU, from FLOPs, for (name, typed model config, tokens) per stage (the
    last is the final shape); plus each stage's days at its published MFU beside the paper's."""
    stages: List[Stage] = [stage_of(model, tokens) for _, model, tokens in jobs]
    scratch = stage_of(jobs[-1][1], sum(s.tokens for s in stages))
    grown = sum(s.flops for s in stages)
    return {
        "stages": [
            {"name": name, "tokens": s.tokens, "flops": s.flops, "days": days(s.flops, PUBLISHED[name][1])}
            for (name, _, _), s in zip(jobs, stages)
        ],
        "flops": grown,
        "scratch_flops": scratch.flops,
        "scratch_days": days(scratch.flops, PUBLISHED[jobs[-1][0]][1]),
        "saving": 1 - grown / scratch.flops,
        "published_saving": 1 - PUBLISHED_TOTAL_DAYS / PUBLISHED_SCRATCH_DAYS,
    }


def flm_report(check: Dict[str, Any]) -> str:
    lines = ["FLM-101B's published schedule (16B and 51B shapes reconstructed), FLOPs from the stage configs:"]
    lines += [
        f"  {s['name']:9s} {s['tokens']:.4e} tokens  {s['flops']:.4e} FLOPs  {s['days']:5.2f} days at its MFU "
        f"(paper: {PUBLISHED[s['name']][0]})"
        for s in check["stages"]
    ]
    total_days = sum(s["days"] for s in check["stages"])
    lines += [
        f"  {'total':9s} {'':17s}  {check['flops']:.4e} FLOPs  {total_days:5.2f} days (paper: {PUBLISHED_TOTAL_DAYS})",
        f"  101B from scratch on the same tokens: {check['scratch_flops']:.4e} FLOPs, {check['scratch_days']:.2f} days "
        f"at the 101B stage's MFU (paper's estimate: {PUBLISHED_SCRATCH_DAYS})",
        f"time saving at equal MFU, from FLOPs: {check['saving']:.1%} (paper: 1 - {PUBLISHED_TOTAL_DAYS}/"
        f"{PUBLISHED_SCRATCH_DAYS} = {check['published_saving']:.1%}, reported as 72%)",
    ]
    return "\n".join(lines)
