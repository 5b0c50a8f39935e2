"""Loss prediction from finished proxies: the size law fitted per token budget, checked on
held-out larger proxies against a naive baseline, and extrapolated to target sizes.

For each token budget the proxies are sorted by N; the `held_out` largest are kept out of the
fit and predicted from it. The naive baseline predicts every held-out loss as the largest fitted
proxy's loss ("bigger helps no further"): a fit that cannot beat it has not learned the trend.
Relative errors are (predicted - actual) / actual. Targets (e.g. FLM's stages) are predicted at
the proxies' token budget and data: the law says how loss falls with size at that budget, which
is what μScaling transfers, not a forecast of the targets' own full-budget runs.
`loss_prediction.json` and `loss_prediction.png` hold the result.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

import numpy as np

from nemo_flm.atomic import atomic_output
from nemo_flm.curves import save_figure
from nemo_flm.errors import ConfigError
from nemo_flm.scaling.proxies import Proxy
from nemo_flm.scaling.size_law import LAW, SizeLawFit, fit_size_law


def _relative(predicted: float, actual: float) -> float:
    return (predicted - actual) / actual


def predict_budget(proxies: List[Proxy], held_out: int, targets: Dict[str, int]) -> Dict[str, Any]:
    """Fit the proxies of one token budget (all but the `held_out` largest), score the held-out
    ones against the naive baseline and predict the targets."""
    if held_out < 1 or held_out >= len(proxies):
        raise ConfigError(f"held_out must be in 1..{len(proxies) - 1} for {len(proxies)} proxies, got {held_out}")
    ordered = sorted(proxies, key=lambda p: p.non_embedding_params)
    fitted, kept_out = ordered[:-held_out], ordered[-held_out:]
    fit = fit_size_law([p.non_embedding_params for p in fitted], [p.val_loss for p in fitted])
    naive = fitted[-1].val_loss
    scored = [_held_out_entry(fit, p, naive) for p in kept_out]
    return {
        "tokens": ordered[0].tokens,
        "law": LAW,
        "fit": _fit_entry(fit),
        "fitted": [_fitted_entry(fit, p) for p in fitted],
        "held_out": scored,
        "held_out_mean_abs_relative_error": float(np.mean([abs(s["relative_error"]) for s in scored])),
        "naive_mean_abs_relative_error": float(np.mean([abs(s["naive_relative_error"]) for s in scored])),
        "targets": [_target_entry(fit, name, n) for name, n in targets.items()],
    }


def _fit_entry(fit: SizeLawFit) -> Dict[str, float]:
    errors = fit.errors()
    return {
        **{"a": fit.a, "a_err": errors[0], "b": fit.b, "b_err": errors[1], "c": fit.c, "c_err": errors[2]},
        "cov": fit.cov.tolist(),  # of (a, b, c): what predictions' errors at other sizes need
    }


def _fitted_entry(fit: SizeLawFit, p: Proxy) -> Dict[str, Any]:
    value = float(fit.predict(p.non_embedding_params)[0])
    return {"name": p.name, "non_embedding_params": p.non_embedding_params, "val_loss": p.val_loss, "fitted": value}


def _held_out_entry(fit: SizeLawFit, p: Proxy, naive: float) -> Dict[str, Any]:
    mean, err = (float(v) for v in fit.predict(p.non_embedding_params))
    return {
        "name": p.name,
        "non_embedding_params": p.non_embedding_params,
        "val_loss": p.val_loss,
        "predicted": mean,
        "predicted_err": err,
        "relative_error": _relative(mean, p.val_loss),
        "naive": naive,
        "naive_relative_error": _relative(naive, p.val_loss),
    }


def _target_entry(fit: SizeLawFit, name: str, n: int) -> Dict[str, Any]:
    mean, err = (float(v) for v in fit.predict(n))
    return {"name": name, "non_embedding_params": n, "predicted": mean, "predicted_err": err}


def predict(proxies: List[Proxy], held_out: int, targets: Dict[str, int]) -> Dict[str, Any]:
    """One prediction per token budget present in the proxies, smallest budget first."""
    budgets = sorted({p.tokens for p in proxies})
    if not budgets:
        raise ConfigError("no finished proxies to fit: train the sweep first (scripts/predict_loss.py --config ...)")
    return {"budgets": [_predict_named(proxies, t, held_out, targets) for t in budgets]}


def _predict_named(proxies: List[Proxy], tokens: int, held_out: int, targets: Dict[str, int]) -> Dict[str, Any]:
    """predict_budget on the proxies of one token budget; its one-line errors name the budget."""
    try:
        return predict_budget([p for p in proxies if p.tokens == tokens], held_out, targets)
    except ConfigError as err:
        raise ConfigError(f"the {tokens:,}-token proxies: {err}") from None


def write_prediction(path: str, prediction: Dict[str, Any]) -> str:
    with atomic_output(path) as tmp:
        with open(tmp, "w") as handle:
            json.dump(prediction, handle, indent=1)
    return path


def summary_lines(prediction: Dict[str, Any]) -> List[str]:
    """What the script prints: per budget the law, each held-out proxy against the baseline, the targets."""
    lines = []
    for b in prediction["budgets"]:
        f = b["fit"]
        lines.append(
            f"{b['tokens']:,} tokens: L(N) = {f['a']:.4g}(±{f['a_err']:.2g}) * (N/1e6)^{f['b']:.4g}(±{f['b_err']:.2g})"
            f" + {f['c']:.4g}(±{f['c_err']:.2g}), fitted on {len(b['fitted'])} proxies"
        )
        if f["b"] > -1e-3:
            lines.append(
                "  warning: the fitted exponent is ~0: these losses do not fall with size (noise or too few steps)"
            )
        for h in b["held_out"]:
            lines.append(
                f"  held out {h['name']} (N {h['non_embedding_params']:,}): actual {h['val_loss']:.4f}, predicted "
                f"{h['predicted']:.4f} ± {h['predicted_err']:.4f} ({100 * h['relative_error']:+.2f}%), naive "
                f"{h['naive']:.4f} ({100 * h['naive_relative_error']:+.2f}%)"
            )
        for t in b["targets"]:
            size = f"N {t['non_embedding_params'] / 1e9:.2f}B"
            lines.append(f"  {t['name']} ({size}): {t['predicted']:.3f} ± {t['predicted_err']:.3f}")
    return lines


def plot_prediction(path: str, prediction: Dict[str, Any]) -> str:
    """Loss against N (log x): proxies, held-out points, the fitted law, the naive baseline;
    right panel the law extended to the targets with its one-sigma band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for b in prediction["budgets"]:
        _plot_budget(axes, b)
    axes[0].set(title="μP proxies: fit and held out", xlabel="non-embedding parameters N", ylabel="validation loss")
    axes[1].set(title="extrapolated to the targets (±1σ)", xlabel="non-embedding parameters N", ylabel="loss")
    for ax, subs in zip(axes, [(1.0, 2.0, 5.0), (1.0,)]):  # the proxies span ~2 decades, the targets ~7
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=subs))
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())  # 20 k, 1 M, 100 G
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def _plot_budget(axes, b: Dict[str, Any]) -> None:
    f, tag = b["fit"], f"{b['tokens']:,} tok"
    fit = SizeLawFit(f["a"], f["b"], f["c"], cov=np.asarray(f["cov"]))
    n_fit = [p["non_embedding_params"] for p in b["fitted"]]
    n_out = [p["non_embedding_params"] for p in b["held_out"]]
    line = axes[0].plot(n_fit, [p["val_loss"] for p in b["fitted"]], "o", label=f"fitted proxies, {tag}")[0]
    color = line.get_color()
    axes[0].plot(n_out, [p["val_loss"] for p in b["held_out"]], "s", mfc="none", color=color, ms=8, label="held out")
    axes[0].plot(n_out, [p["predicted"] for p in b["held_out"]], "x", color=color, ms=8, label="predicted")
    axes[0].axhline(b["held_out"][0]["naive"], color=color, ls=":", lw=0.8, label="naive (largest fitted)")
    xs = np.geomspace(min(n_fit), max(n_out), 100)
    axes[0].plot(xs, fit.predict(xs)[0], color=color, lw=1, label=f"a={f['a']:.3g} b={f['b']:.3g} c={f['c']:.3g}")
    targets = b["targets"]
    n_target = [t["non_embedding_params"] for t in targets]
    xs = np.geomspace(min(n_fit), max(n_target + n_out), 200)
    mean, err = fit.predict(xs)
    axes[1].plot(xs, mean, color=color, lw=1, label=tag)
    axes[1].fill_between(xs, mean - err, mean + err, color=color, alpha=0.2, lw=0)
    axes[1].plot(n_fit + n_out, [p["val_loss"] for p in b["fitted"] + b["held_out"]], "o", color=color, ms=3)
    axes[1].errorbar(
        n_target, [t["predicted"] for t in targets], yerr=[t["predicted_err"] for t in targets], fmt="D", color=color
    )
    for i, t in enumerate(targets):  # stacked labels: the targets sit close on a log axis
        xy = (t["non_embedding_params"], t["predicted"])
        axes[1].annotate(t["name"], xy, xytext=(-30, 12 + 10 * i), textcoords="offset points", fontsize=7)
