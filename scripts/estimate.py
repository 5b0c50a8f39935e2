"""Parameters, memory and FLOPs per GPU of a job config at its layout, before launching it.

    python scripts/estimate.py --config-name flm_101b
    python scripts/estimate.py --config-name flm_101b_growth            # every stage of a plan
    python scripts/estimate.py --config-name flm_tiny --measure 2 model.hidden_size=256

--gpus defaults to trainer.devices x trainer.num_nodes. --measure N runs N training steps of the
config here (CPU, local engine, TP = PP = 1) and prints the measured peak host memory beside the
estimate. The model is in nemo_flm/estimate.py.
"""

from __future__ import annotations

import argparse
import sys

from nemo_flm.console import quiet_startup

quiet_startup()


from nemo_flm.compose import CONF_DIR, compose_job  # noqa: E402
from nemo_flm.config import load_shape_config  # noqa: E402
from nemo_flm.errors import ConfigError  # noqa: E402
from nemo_flm.estimate import GB, estimate  # noqa: E402
from nemo_flm.growth.staged import stage_job  # noqa: E402

ROWS = [
    ("layout TP x PP x DP", lambda e: f"{e['tp']} x {e['pp']} x {e['dp']}"),
    ("micro-batches per step", lambda e: f"{e['micro_batches']}"),
    ("parameters per GPU", lambda e: f"{e['params_per_gpu'] / 1e9:.2f} B"),
    ("weights", lambda e: f"{e['weights_gb']:.1f} GB"),
    ("gradients (fp32 + one in flight)", lambda e: f"{e['grads_gb']:.1f} GB"),
    ("Adam state (+ fp32 main weights)", lambda e: f"{e['optimizer_gb']:.1f} GB"),
    ("  sharded by the distributed optimizer", lambda e: f"{e['optimizer_distributed_gb']:.1f} GB"),
    ("activations", lambda e: f"{e['activations_gb']:.1f} GB"),
    ("  with full recompute", lambda e: f"{e['activations_recompute_gb']:.1f} GB"),
    ("total, plain Adam", lambda e: f"{e['total_gb']:.1f} GB"),
    ("total, distributed optimizer", lambda e: f"{e['total_distributed_gb']:.1f} GB"),
    ("training FLOPs per token", lambda e: f"{e['flops_per_token']:.3e}"),
    ("training FLOPs per step", lambda e: f"{e['flops_per_step']:.3e}"),
]


def table(names, estimates) -> str:
    width = max(len(label) for label, _ in ROWS)
    lines = [" " * width + "".join(f"{n:>16}" for n in names)]
    lines += [label.ljust(width) + "".join(f"{fmt(e):>16}" for e in estimates) for label, fmt in ROWS]
    return "\n".join(lines)


def measure(model_cfg, steps: int) -> float:
    """Peak anonymous host memory (GB) of `steps` local-engine steps, above the memory before the
    model was built."""
    import torch

    from nemo_flm import parallel
    from nemo_flm.host_memory import PeakAnon, anon_rss
    from nemo_flm.model.builder import build_model
    from nemo_flm.training.local_engine import LocalEngine

    parallel.initialize(model_cfg.parallel, model_cfg.seed)
    b, s = model_cfg.global_batch_size, model_cfg.seq_length
    tokens = torch.randint(0, model_cfg.vocab_size, (b, s + 1))
    batch = {
        "tokens": tokens[:, :-1],
        "labels": tokens[:, 1:],
        "loss_mask": torch.ones(b, s),
        "position_ids": torch.arange(s).expand(b, -1),
    }
    with PeakAnon() as mem:
        base = anon_rss()
        engine = LocalEngine(build_model(model_cfg), model_cfg.optim, model_cfg.micro_batch_size)
        for _ in range(steps):
            engine.train_step(batch)
    return (mem.peak - base) / GB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-name", default="flm_tiny")
    p.add_argument("--config-dir", default=CONF_DIR)
    p.add_argument("--gpus", type=int, default=None, help="default: trainer.devices x trainer.num_nodes")
    p.add_argument("--measure", type=int, default=0, metavar="STEPS", help="also measure STEPS steps here (CPU)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.parallel.tensor_model_parallel_size=8")
    args = p.parse_intermixed_args()
    try:
        cfg = compose_job(args.config_name, args.overrides, args.config_dir)
        jobs = [stage_job(cfg, i) for i in range(len(cfg.stages))] if cfg.stages else [cfg]
        names = [job.exp_manager.get("name") or cfg.name for job in jobs]
        models = [load_shape_config(job.model) for job in jobs]
        gpus = args.gpus or int(cfg.trainer.get("devices", 1)) * int(cfg.trainer.get("num_nodes", 1))
        estimates = [estimate(m, gpus) for m in models]
    except ConfigError as err:
        sys.exit(f"config error: {err}")
    print(f"{args.config_name} on {gpus} GPUs (per GPU, first pipeline stage)")
    print(table(names, estimates))
    if args.measure:
        measured = measure(models[-1], args.measure)
        expected = estimates[-1]["total_gb"]
        print(
            f"measured peak host memory of {args.measure} steps here: {measured:.3f} GB; estimate {expected:.3f} GB "
            f"(ratio {measured / expected:.3f})"
        )


if __name__ == "__main__":
    main()
