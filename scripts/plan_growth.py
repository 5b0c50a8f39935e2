"""Plan a growth run under a compute budget: stage shapes and token split, written as a staged-run YAML.

    python scripts/plan_growth.py --law law.json --eta 0.9 --budget-flops 2.3e13 --final-config flm_tiny \\
        --stages 3 --grow-steps 30 --out plans/flm_tiny_plan.yaml
    python scripts/train.py --config-dir plans --config-name flm_tiny_plan
    python scripts/plan_growth.py --check-flm        # FLM's published schedule: the 72% time saving

The law L(N, D) = E + A/N^alpha + B/D^beta is read (--law) or fitted to proxy runs at several token
budgets (--proxies proxies.json, as the proxy sweep writes it; --save-law keeps the fit). The
growth efficiency eta is given (--eta) or derived from scripts/bench_growth.py's bench_growth.json
(--eta-from-bench). The budget is FLOPs, or GPU-hours x MFU x peak. Hydra overrides after the
options change the final config and are written into the YAML. Models: nemo_flm/scaling/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from nemo_flm.console import quiet_startup

quiet_startup()


from nemo_flm.compose import compose_job  # noqa: E402
from nemo_flm.config import load_shape_config  # noqa: E402
from nemo_flm.errors import ConfigError  # noqa: E402
from nemo_flm.scaling.compute_law import ComputeLaw, fit_compute_law, read_law, write_law  # noqa: E402
from nemo_flm.scaling.flm_check import flm_report, flm_saving  # noqa: E402
from nemo_flm.scaling.growth_efficiency import eta_from_bench  # noqa: E402
from nemo_flm.scaling.growth_run import check_eta  # noqa: E402
from nemo_flm.scaling.plan_output import check_plan_runs, plan_body, plan_table, write_plan  # noqa: E402
from nemo_flm.scaling.planner import Schedule, budget_flops, check_request, plan_growth  # noqa: E402
from nemo_flm.scaling.proxies import read_proxies  # noqa: E402

FLM_STAGES = ("flm_16b", "flm_51b", "flm_101b")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check-flm", action="store_true", help="FLM's published schedule: time saving from FLOPs")
    p.add_argument("--law", help="a fitted law: JSON with E, A, alpha, B, beta")
    p.add_argument("--proxies", help="proxies.json to fit the law to (proxies at >= 2 token budgets)")
    p.add_argument("--beta", type=float, help="hold beta fixed in the fit (needed with only 2 token budgets)")
    p.add_argument("--save-law", help="write the fitted law here (JSON, for --law)")
    p.add_argument("--eta", type=float, help="growth efficiency in [0, 1] (nemo_flm/scaling/growth_run.py)")
    p.add_argument("--eta-from-bench", help="derive eta from scripts/bench_growth.py's bench_growth.json")
    p.add_argument("--budget-flops", type=float, help="training FLOPs, as flops.py counts them")
    p.add_argument("--gpu-hours", type=float, help="the budget in GPU-hours (with --mfu and --peak-tflops)")
    p.add_argument("--mfu", type=float, help="model FLOPs utilisation, e.g. FLM's 0.52")
    p.add_argument("--peak-tflops", type=float, help="the GPU's peak TFLOP/s, e.g. 312 (A100/A800 bf16)")
    p.add_argument("--final-config", default="flm_tiny", help="the final shape: a config name in conf/")
    p.add_argument("--stages", type=int, default=3, help="number of stages, the final one included (FLM: 3)")
    p.add_argument("--grow-steps", type=int, help="MSG ramp steps per grown stage (default: the final config's)")
    p.add_argument("--width-fractions", type=float, nargs="+", default=[i / 10 for i in range(1, 10)])
    p.add_argument("--depth-fractions", type=float, nargs="+", default=[1.0], help="default: keep depth (FLM)")
    p.add_argument("--out", help="the growth YAML to write, e.g. plans/flm_tiny_plan.yaml")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the final config, e.g. model.seq_length=256")
    return p.parse_intermixed_args()


def check_flm() -> None:
    jobs = [compose_job(name) for name in FLM_STAGES]
    print(flm_report(flm_saving([(n, load_shape_config(j.model), j.train_tokens) for n, j in zip(FLM_STAGES, jobs)])))


def check_args(args: argparse.Namespace) -> None:
    """Every argument problem, in one line, before any work."""
    if (args.law is None) == (args.proxies is None):
        raise ConfigError("give the law as --law law.json, or --proxies proxies.json to fit it")
    if args.proxies is None and (args.beta is not None or args.save_law):
        raise ConfigError("--beta and --save-law go with --proxies (they concern the fit)")
    if (args.eta is None) == (args.eta_from_bench is None):
        raise ConfigError("give the growth efficiency as --eta (in [0, 1]) or --eta-from-bench bench_growth.json")
    if args.eta is not None:
        check_eta(args.eta)
    for path in (args.law, args.proxies, args.eta_from_bench):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{path} not found")
    if not args.out or not args.out.endswith(".yaml"):
        raise ConfigError(f"--out must name the growth YAML to write (*.yaml), got {args.out}")


def law_of(args: argparse.Namespace) -> ComputeLaw:
    if args.law:
        return read_law(args.law)
    proxies = read_proxies(args.proxies)
    columns = [[getattr(p, k) for p in proxies] for k in ("name", "non_embedding_params", "tokens", "val_loss")]
    return fit_compute_law(*columns, beta=args.beta)


def plan(args: argparse.Namespace) -> None:
    check_args(args)
    budget = budget_flops(args.budget_flops, args.gpu_hours, args.mfu, args.peak_tflops)
    job = compose_job(args.final_config, args.overrides)
    final = load_shape_config(job.model)
    grow_steps = args.grow_steps if args.grow_steps is not None else job.model.growth.grow_steps
    sched = Schedule.of_job(job, final, grow_steps)
    check_request(final, budget, args.stages, sched)
    law = law_of(args)
    eta = args.eta if args.eta is not None else eta_from_bench(law, args.eta_from_bench)
    result = plan_growth(law, eta, final, budget, args.stages, sched, args.width_fractions, args.depth_fractions)
    name = os.path.splitext(os.path.basename(args.out))[0]
    body = plan_body(result, name, args.overrides, grow_steps)
    check_plan_runs(job, body)
    run = f"python scripts/train.py --config-dir {os.path.dirname(args.out) or '.'} --config-name {name}"
    header = [
        "Growth plan written by scripts/plan_growth.py (rerun it rather than edit the numbers):",
        "  python scripts/plan_growth.py " + " ".join(sys.argv[1:]),
        f"law: {law.describe()}; eta {eta:.4g}",
        f"run: {run}",
    ]
    print(f"law: {law.describe()}\n{plan_table(result)}")
    write_plan(args.out, args.final_config, body, header)
    if args.save_law:
        write_law(law, args.save_law)
    print(f"wrote {args.out}; run it: {run}")


def main() -> None:
    args = parse()
    try:
        check_flm() if args.check_flm else plan(args)
    except (ConfigError, OSError, json.JSONDecodeError) as err:
        sys.exit(f"error: {str(err).splitlines()[0]}")


if __name__ == "__main__":
    main()
