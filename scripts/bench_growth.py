"""Growth vs training from scratch at the same FLOPs budget, on the built-in corpus.

For each seed: the staged tiny run (conf/flm_tiny_growth.yaml: stage1 -> grow -> stage2 -> grow
-> stage3) and the final stage's model (flm_tiny's shape) trained from scratch for the same
training FLOPs (lm_head included). Prints, per seed and over seeds, the fraction of the
from-scratch FLOPs the grown run needs to reach the from-scratch final loss (train loss,
10-point moving average), and plots loss vs FLOPs. bench_growth.json also records each stage's
size, FLOPs per token and tokens, from which scripts/plan_growth.py --eta-from-bench derives the
growth efficiency:

    python scripts/bench_growth.py [--seeds 1 2] [--out bench_growth]
"""

import argparse
import json
import os
from dataclasses import asdict

import numpy as np

from nemo_flm.compose import compose_job
from nemo_flm.config import load_model_config, load_shape_config
from nemo_flm.flops import train_flops_per_token
from nemo_flm.growth.report import curve
from nemo_flm.growth.staged import run_stages, stage_dir, stage_job
from nemo_flm.scaling.growth_run import stage_of
from nemo_flm.training.run import train

WINDOW = 10


def _smooth(values):
    values = np.asarray(values, dtype=float)
    return np.convolve(values, np.ones(WINDOW) / WINDOW, mode="valid")


def _grown(out, seed):
    cfg = compose_job(
        "flm_tiny_growth", [f"exp_manager.exp_dir={out}/grown_s{seed}", f"model.seed={seed}", f"growth.seed={seed}"]
    )
    run_stages(cfg, train)
    jobs = [stage_job(cfg, i) for i in range(len(cfg.stages))]
    data = curve([stage_dir(j) for j in jobs], [load_shape_config(j.model) for j in jobs])
    data["growth_flops"] = [s["end_flops"] for s in data["stages"][:-1]]
    data["plan"] = [_stage_record(load_shape_config(j.model), j.trainer.max_steps) for j in jobs]
    return data


def _stage_record(model, steps):
    """A run's size, FLOPs per token and tokens, for the growth-efficiency fit (scaling/growth_efficiency.py)."""
    return asdict(stage_of(model, steps * model.global_batch_size * model.seq_length))


def _scratch(out, seed, flops_budget):
    base = compose_job("flm_tiny", [])
    model = load_model_config(base.model)
    per_step = model.global_batch_size * model.seq_length * train_flops_per_token(model)
    steps = int(round(flops_budget / per_step))
    cfg = compose_job(
        "flm_tiny",
        [
            f"exp_manager.exp_dir={out}/scratch_s{seed}",
            f"model.seed={seed}",
            f"trainer.max_steps={steps}",
            "trainer.log_every_n_steps=1",
            f"model.optim.lr_decay_samples={steps * model.global_batch_size}",
            f"exp_manager.checkpoint_callback_params.every_n_train_steps={steps}",
            f"trainer.val_check_interval={steps}",
        ],
    )
    train(cfg)
    data = curve([os.path.join(out, f"scratch_s{seed}", cfg.name)], [load_model_config(cfg.model)])
    data["plan"] = _stage_record(model, steps)
    return data


def _fraction(grown, scratch):
    """FLOPs the grown run needs to reach the scratch run's final (smoothed) loss / scratch FLOPs."""
    target = _smooth(scratch["loss"])[-1]
    smooth = _smooth(grown["loss"])
    reached = np.nonzero(smooth <= target)[0]
    if reached.size == 0:
        return target, None
    return target, grown["flops"][reached[0] + WINDOW - 1] / scratch["flops"][-1]


def _plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for seed, r in results.items():
        g, s = r["grown"], r["scratch"]
        ax.plot(g["flops"][WINDOW - 1 :], _smooth(g["loss"]), label=f"grown, seed {seed}")
        ax.plot(s["flops"][WINDOW - 1 :], _smooth(s["loss"]), ls="--", label=f"from scratch, seed {seed}")
        for x in g["growth_flops"]:
            ax.axvline(x, color="gray", lw=0.6, ls=":")
    ax.set_xlabel("training FLOPs (lm_head included)")
    ax.set_ylabel(f"train loss ({WINDOW}-step moving average)")
    ax.set_title("MSG growth vs from scratch, equal FLOPs (dotted: growths)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", default="bench_growth")
    args = p.parse_args()
    out = os.path.abspath(args.out)
    results = {}
    for seed in args.seeds:
        grown = _grown(out, seed)
        scratch = _scratch(out, seed, grown["flops"][-1])
        target, fraction = _fraction(grown, scratch)
        results[seed] = {"grown": grown, "scratch": scratch, "target_loss": target, "fraction": fraction}
        print(
            f"seed {seed}: scratch final loss {target:.3f} at {scratch['flops'][-1]:.3e} FLOPs; grown final "
            f"{_smooth(grown['loss'])[-1]:.3f}; FLOPs fraction to reach it: "
            f"{'not reached' if fraction is None else f'{fraction:.3f}'}",
            flush=True,
        )
    fractions = [r["fraction"] for r in results.values() if r["fraction"] is not None]
    if fractions:
        print(
            f"FLOPs fraction over {len(fractions)}/{len(results)} seeds: mean {np.mean(fractions):.3f}, "
            f"min {min(fractions):.3f}, max {max(fractions):.3f}"
        )
    last = results[args.seeds[-1]]
    with open(os.path.join(out, "bench_growth.json"), "w") as handle:
        json.dump(
            {
                "seeds": {
                    str(k): {"target_loss": v["target_loss"], "fraction": v["fraction"]} for k, v in results.items()
                },
                "stages": last["grown"]["plan"],
                "scratch": last["scratch"]["plan"],
            },
            handle,
            indent=1,
        )
    _plot(results, os.path.join(out, "bench_growth.png"))
    print(f"wrote {out}/bench_growth.json and bench_growth.png")


if __name__ == "__main__":
    main()
