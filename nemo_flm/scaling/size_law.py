"""The size law of loss prediction (μScaling): L(N) = a * N^b + c, fitted to small proxies.

N is the non-embedding parameter count, in millions inside the fit: proxies span ~10^4..10^7
parameters and the targets ~10^10, so raw N would put a near 10^3 and its gradient near 10^-12,
and the least-squares Jacobian would be badly scaled. a is then the reducible loss at 1M
parameters, b < 0 how fast it shrinks, c >= 0 the irreducible loss (below every measured loss:
the curve must be able to pass under the points). The fit is scipy's bounded least squares from
a starting point found by a grid over c (for a given c, log(L - c) is linear in log N), so no
hand-tuned p0 is needed. Errors: the covariance curve_fit returns (residual variance scaled, as
the proxies' noise is unknown), and the delta method for predictions.

Pure functions on numbers; nothing here knows about models or training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from nemo_flm.errors import ConfigError

UNIT = 1e6  # N is fitted in millions of parameters
LAW = "L(N) = a * (N / 1e6)^b + c, N = non-embedding parameters"
MIN_POINTS = 4  # three parameters and at least one degree of freedom for their errors
C_GRID = 64  # starting values of c tried between 0 and the smallest loss


@dataclass(frozen=True)
class SizeLawFit:
    """Fitted a, b, c (a for N in millions) with their 3x3 covariance."""

    a: float
    b: float
    c: float
    cov: np.ndarray

    def errors(self) -> Tuple[float, float, float]:
        """Standard errors of a, b, c (inf where the data cannot constrain them)."""
        return tuple(float(math.sqrt(v)) if v >= 0 else math.inf for v in np.diag(self.cov))

    def predict(self, n: float | Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
        """Loss at N parameters and its standard error (delta method: the gradient of a*x^b + c
        in (a, b, c) through the covariance; linear in the parameters' errors, which is what a
        handful of proxies supports)."""
        x = np.atleast_1d(np.asarray(n, dtype=float)) / UNIT  # (points,)
        power = x**self.b
        mean = self.a * power + self.c
        grad = np.stack([power, self.a * power * np.log(x), np.ones_like(x)])  # (3, points)
        var = np.einsum("ip,ij,jp->p", grad, self.cov, grad)
        shape = np.shape(n)  # a scalar in, scalars out
        return mean.reshape(shape), np.sqrt(np.maximum(var, 0.0)).reshape(shape)


def law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """a * x^b + c, with x = N / UNIT."""
    return a * x**b + c


def check_points(n: Sequence[float], loss: Sequence[float], minimum: int = MIN_POINTS) -> None:
    """Refuse inputs the fit cannot use, in one line with the fix, before fitting."""
    n_arr, loss_arr = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if n_arr.ndim != 1 or n_arr.shape != loss_arr.shape:
        raise ConfigError(f"got {n_arr.size} sizes but {loss_arr.size} losses: give one loss per proxy size")
    if n_arr.size < minimum:
        raise ConfigError(
            f"the size law needs at least {minimum} fit points, got {n_arr.size}: add proxies or hold out fewer"
        )
    if not np.all(np.isfinite(loss_arr)) or np.any(loss_arr <= 0):
        raise ConfigError(f"losses must be finite and > 0, got {loss_arr.tolist()}: re-run or drop the bad proxy")
    if not np.all(np.isfinite(n_arr)) or np.any(n_arr <= 0):
        raise ConfigError(f"sizes must be finite and > 0, got {n_arr.tolist()}: count non-embedding parameters")
    if np.any(np.diff(n_arr) == 0):
        raise ConfigError(f"two fit points share a size in {n_arr.tolist()}: keep one proxy per width and token budget")
    if np.any(np.diff(n_arr) < 0):
        raise ConfigError(f"sizes must be strictly increasing, got {n_arr.tolist()}: sort the proxies by size")


def _start(x: np.ndarray, loss: np.ndarray) -> Tuple[float, float, float]:
    """A feasible starting point: for each c on a grid below min(loss), the straight line of
    log(loss - c) on log x; the c with the smallest squared error in loss wins."""
    best, best_sse = None, math.inf
    for c in np.linspace(0.0, loss.min(), C_GRID, endpoint=False):
        slope, intercept = np.polyfit(np.log(x), np.log(loss - c), 1)
        b = min(slope, -1e-3)  # feasible: b < 0
        a = math.exp(intercept)
        sse = float(np.sum((law(x, a, b, c) - loss) ** 2))
        if sse < best_sse:
            best, best_sse = (a, b, c), sse
    return best


def fit_size_law(n: Sequence[float], loss: Sequence[float]) -> SizeLawFit:
    """Least-squares fit of L(N) = a * N^b + c with a > 0, b < 0, 0 <= c < min(loss)."""
    from scipy.optimize import curve_fit

    check_points(n, loss)
    x, y = np.asarray(n, dtype=float) / UNIT, np.asarray(loss, dtype=float)
    lower, upper = [0.0, -np.inf, 0.0], [np.inf, 0.0, float(y.min())]
    params, cov = curve_fit(law, x, y, p0=_start(x, y), bounds=(lower, upper), maxfev=20_000)
    return SizeLawFit(*(float(p) for p in params), cov=np.asarray(cov, dtype=float))
