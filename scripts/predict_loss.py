"""Loss prediction from small μP proxies (μScaling): train the sweep, fit L(N) = a * N^b + c,
check it on held-out larger proxies, predict the targets (FLM's stages).

    python scripts/predict_loss.py                           # conf/scaling/mup_proxies.yaml, trains what is missing
    python scripts/predict_loss.py --read-only               # fit the finished proxies only
    python scripts/predict_loss.py --proxies DIR/proxies.json  # fit a proxies.json written before
    python scripts/predict_loss.py 'widths=[32,64,96,128,192]' held_out=1   # sweep keys as overrides

Each proxy trains through the normal entry point (nemo_flm.training.run.train) in its own
exp_manager directory under the sweep's exp_dir; a re-run skips finished proxies and resumes an
interrupted one. One line per proxy (name, N, tokens, validation loss, time), then the fit.
Writes --out/proxies.json (the records the growth planner reads), loss_prediction.json and
loss_prediction.png. The pipeline is in nemo_flm/scaling/.
"""

from __future__ import annotations

import argparse
import os

from nemo_flm.console import quiet_startup

quiet_startup()

from nemo_flm.errors import ConfigError  # noqa: E402
from nemo_flm.scaling.loss_prediction import plot_prediction, predict, summary_lines, write_prediction  # noqa: E402
from nemo_flm.scaling.proxies import read_proxies, write_proxies  # noqa: E402
from nemo_flm.scaling.sweep import load_sweep, proxy_jobs, run_sweep, target_sizes  # noqa: E402
from nemo_flm.training.nonfinite import NonFiniteError  # noqa: E402

CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf")


def _train(job) -> None:
    from nemo_flm.training.run import train

    train(job)


def _proxies(args, sweep):
    """The finished proxies: from a proxies.json, or from the sweep (training what is missing
    unless --read-only), written to --out/proxies.json."""
    if args.proxies:
        return read_proxies(args.proxies)
    jobs = proxy_jobs(sweep, CONF)  # every proxy's config checked before the first one trains
    proxies = run_sweep(jobs, None if args.read_only else _train)
    write_proxies(os.path.join(args.out, "proxies.json"), proxies)
    return proxies


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(CONF, "scaling", "mup_proxies.yaml"), help="the sweep YAML")
    p.add_argument("--out", default="loss_prediction", help="directory for proxies.json and loss_prediction.*")
    p.add_argument("--read-only", action="store_true", help="fit the finished proxies only; train nothing")
    p.add_argument("--proxies", metavar="JSON", help="fit this proxies.json instead of the sweep's runs")
    p.add_argument("overrides", nargs="*", help="sweep keys, e.g. 'widths=[32,64,96,128,192]' held_out=1")
    args = p.parse_intermixed_args()
    try:
        sweep = load_sweep(args.config, args.overrides)
        targets = target_sizes(sweep, CONF)
        os.makedirs(args.out, exist_ok=True)
        prediction = predict(_proxies(args, sweep), sweep.held_out, targets)
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    except NonFiniteError as err:
        raise SystemExit(f"error: {err}") from None
    print("\n".join(summary_lines(prediction)))
    written = [
        write_prediction(os.path.join(args.out, "loss_prediction.json"), prediction),
        plot_prediction(os.path.join(args.out, "loss_prediction.png"), prediction),
    ]
    print(f"wrote {', '.join(written)}" + ("" if args.proxies else f" and {args.out}/proxies.json"))


if __name__ == "__main__":
    main()
