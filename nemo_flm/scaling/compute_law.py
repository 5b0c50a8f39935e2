"""The compute law L(N, D) = E + A / N^alpha + B / D^beta: its fit from proxy runs, and its file.

N is the non-embedding parameter count (nemo_flm/estimate.py), D the training tokens, L the
validation loss. The fit is Chinchilla's approach 3 (Hoffmann et al. 2022): the log of the law,
written as log-sum-exp(e, a - alpha x, b - beta y), is matched to the log of the measured loss
under a Huber loss (delta 1e-3, theirs: one odd run does not drag the fit), from a grid of starts
(the objective has local minima). x and y are log N and log D measured from their geometric means
(scaled units), which keeps each amplitude nearly uncorrelated with its exponent. Standard errors
come from the Gauss-Newton covariance at the optimum, carried to E, A and B by the delta method.

What the points must hold: the law is additive in N and D, so with proxies at only two token
budgets B / D^beta is seen at two values of D, and E, B and beta (three unknowns) cannot be
separated: the fit needs three token budgets, or two with beta held fixed. A and alpha likewise
need three distinct sizes.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from nemo_flm.atomic import atomic_output
from nemo_flm.errors import ConfigError

PARAMS = ("E", "A", "alpha", "B", "beta")
HUBER_DELTA = 1e-3  # Chinchilla's approach 3, on log-loss residuals


@dataclass(frozen=True)
class ComputeLaw:
    E: float
    A: float
    alpha: float
    B: float
    beta: float
    stderr: Optional[Dict[str, float]] = None  # per parameter; None when the law was given, not fit

    def loss(self, n: Any, d: Any) -> Any:
        """Predicted loss of a size-n model after d tokens (numpy broadcasting; d = 0 gives inf)."""
        with np.errstate(divide="ignore"):
            return self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)

    def tokens_to_reach(self, n: Any, loss: Any) -> Any:
        """Tokens a size-n model needs from scratch to reach `loss`; inf at or below its floor
        E + A / n^alpha. This is how growth carries a smaller stage's progress (scaling/growth_run.py)."""
        gap = np.asarray(loss - self.E - self.A / np.power(n, self.alpha), dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap > 0, np.power(self.B / np.where(gap > 0, gap, 1.0), 1.0 / self.beta), np.inf)

    def describe(self) -> str:
        err = self.stderr or {}
        return ", ".join(f"{p} = {getattr(self, p):.4g}" + (f" ± {err[p]:.2g}" if p in err else "") for p in PARAMS)


def check_law(law: ComputeLaw) -> ComputeLaw:
    """A usable law: E >= 0, A, B > 0 and exponents > 0, all finite."""
    values = {p: getattr(law, p) for p in PARAMS}
    bad = [p for p, v in values.items() if not math.isfinite(v) or v < 0 or (v == 0 and p != "E")]
    if bad:
        raise ConfigError(f"law parameter {bad[0]} = {values[bad[0]]} is unusable: E >= 0, A, B, alpha, beta > 0")
    return law


def read_law(path: str) -> ComputeLaw:
    """A law from its JSON file ({"E", "A", "alpha", "B", "beta"[, "stderr"]}, as write_law writes)."""
    with open(path) as handle:
        data = json.load(handle)
    missing = [p for p in PARAMS if p not in data]
    if missing:
        raise ConfigError(
            f"law file {path} lacks {missing}: it needs {list(PARAMS)} (scripts/plan_growth.py --save-law)"
        )
    return check_law(ComputeLaw(**{p: float(data[p]) for p in PARAMS}, stderr=data.get("stderr")))


def write_law(law: ComputeLaw, path: str) -> None:
    with atomic_output(path) as tmp, open(tmp, "w") as handle:
        json.dump(asdict(law), handle, indent=1)


def check_points(names: Sequence[str], n: np.ndarray, d: np.ndarray, loss: np.ndarray, beta: Optional[float]) -> None:
    """Enough distinct sizes and token budgets to identify the law, and finite positive values."""
    for label, values in (("val_loss", loss), ("non_embedding_params", n), ("tokens", d)):
        bad = np.nonzero(~np.isfinite(values) | (values <= 0))[0]
        if bad.size:
            i = bad[0]
            raise ConfigError(
                f"proxy '{names[i]}' has {label} {values[i]}: drop or rerun it (values must be finite, > 0)"
            )
    sizes, budgets = np.unique(n), np.unique(d)
    if sizes.size < 3:
        raise ConfigError(f"the L(N, D) fit needs proxies of >= 3 distinct sizes, got {sizes.size}: add proxy widths")
    if budgets.size < 2:
        raise ConfigError(f"the L(N, D) fit needs >= 2 token budgets, got {budgets.size}: rerun proxies at more tokens")
    if budgets.size == 2 and beta is None:
        raise ConfigError(
            "proxies at 2 token budgets cannot separate E, B and beta (the law is additive in N and D): add a third "
            "token budget, or hold beta fixed (--beta)"
        )
    free = len(PARAMS) - (beta is not None)
    if loss.size <= free:
        raise ConfigError(f"{loss.size} proxy points for {free} free parameters: add proxies (at least {free + 1})")


class _LogLaw:
    """The law in scaled log units: theta = (e, a, alpha, b, beta); log L = LSE(e, a - alpha x, b - beta y)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, beta: Optional[float]):
        self.x, self.y, self.beta = x, y, beta

    def full(self, theta: np.ndarray) -> np.ndarray:
        return theta if self.beta is None else np.append(theta, self.beta)

    def terms(self, theta: np.ndarray) -> np.ndarray:
        e, a, alpha, b, beta = self.full(theta)
        return np.stack([np.full_like(self.x, e), a - alpha * self.x, b - beta * self.y])  # [3, points]

    def log_loss(self, theta: np.ndarray) -> np.ndarray:
        terms = self.terms(theta)
        top = terms.max(axis=0)
        return top + np.log(np.exp(terms - top).sum(axis=0))

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """d log L / d theta, [points, free parameters]: softmax weights of the three terms."""
        terms = self.terms(theta)
        w = np.exp(terms - self.log_loss(theta))
        cols = [w[0], w[1], -self.x * w[1], w[2], -self.y * w[2]]
        return np.stack(cols[: len(theta)], axis=1)


def _starts(log_min: float, beta: Optional[float]) -> List[np.ndarray]:
    """A grid of starting points (approach 3 fits from a grid): each amplitude a share of the smallest
    loss, each exponent from typical values."""
    betas = (0.1, 0.5) if beta is None else (None,)
    starts = []
    for e, a, alpha, b, be in itertools.product((0.3, 0.7), (0.3,), (0.1, 0.5), (0.3,), betas):
        start = [log_min + math.log(e), log_min + math.log(a), alpha, log_min + math.log(b)]
        starts.append(np.array(start if be is None else start + [be]))
    return starts


def _stderr(model: _LogLaw, theta: np.ndarray, residuals: np.ndarray, log_n0: float, log_d0: float) -> Dict[str, float]:
    """Standard errors from the Gauss-Newton covariance of theta (a fixed beta: 0), carried to E, A
    and B by the delta method (log A = a + alpha log n0 undoes the scaled units; B likewise)."""
    jac = model.jacobian(theta)
    cov = np.zeros((5, 5))
    try:
        cov[: theta.size, : theta.size] = (
            np.linalg.inv(jac.T @ jac) * (residuals @ residuals) / (residuals.size - theta.size)
        )
    except np.linalg.LinAlgError:
        cov[: theta.size, : theta.size] = np.inf
    e, a, alpha, b, beta = model.full(theta)

    def log_amplitude_sd(amp: int, exponent: int, log_scale: float) -> float:
        var = cov[amp, amp] + log_scale**2 * cov[exponent, exponent] + 2 * log_scale * cov[amp, exponent]
        return math.sqrt(var)

    return {
        "E": math.exp(e) * math.sqrt(cov[0, 0]),
        "A": math.exp(a + alpha * log_n0) * log_amplitude_sd(1, 2, log_n0),
        "alpha": math.sqrt(cov[2, 2]),
        "B": math.exp(b + beta * log_d0) * log_amplitude_sd(3, 4, log_d0),
        "beta": math.sqrt(cov[4, 4]),
    }


def fit_compute_law(
    names: Sequence[str], n: Sequence[float], d: Sequence[float], loss: Sequence[float], beta: Optional[float] = None
) -> ComputeLaw:
    """Fit L(N, D) to proxy points (beta held fixed when given); one-line ConfigError on unusable points."""
    from scipy.optimize import least_squares

    n, d, loss = (np.asarray(v, dtype=float) for v in (n, d, loss))
    check_points(names, n, d, loss, beta)
    log_n0, log_d0 = float(np.log(n).mean()), float(np.log(d).mean())
    model = _LogLaw(np.log(n) - log_n0, np.log(d) - log_d0, beta)
    target = np.log(loss)
    free = 5 if beta is None else 4
    lower, upper = np.array([-30, -30, 0, -30, 0][:free]), np.array([math.log(loss.min()), 30, 3, 30, 3][:free])

    def residuals(theta: np.ndarray) -> np.ndarray:
        return model.log_loss(theta) - target

    fits = [
        least_squares(
            residuals,
            np.clip(s, lower + 1e-9, upper - 1e-9),
            jac=model.jacobian,
            bounds=(lower, upper),
            loss="huber",
            f_scale=HUBER_DELTA,
        )
        for s in _starts(math.log(loss.min()), beta)
    ]
    best = min(fits, key=lambda fit: fit.cost)
    e, a, alpha, b, fitted_beta = model.full(best.x)
    return ComputeLaw(
        E=math.exp(e),
        A=math.exp(a + alpha * log_n0),
        alpha=float(alpha),
        B=math.exp(b + fitted_beta * log_d0),
        beta=float(fitted_beta),
        stderr=_stderr(model, best.x, best.fun, log_n0, log_d0),
    )
