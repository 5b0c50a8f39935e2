"""The loss model of a growth run: stages of growing size, each trained for some tokens.

Stage i trains a model of N_i non-embedding parameters for D_i tokens, at flops.py's
FLOPs per token (what the trainer and the growth report count). Its predicted loss is
L(N_i, X_i + D_i), where X_i are the tokens stage i's model "has already seen" thanks to growth:

    X_1 = 0,    X_{i+1} = eta * D*(N_{i+1}, L_i),    D*(N, L) = tokens a size-N model needs from
                                                      scratch to reach loss L (ComputeLaw.tokens_to_reach)

MSG growth preserves the function, so the grown model starts at the smaller model's loss L_i; at
eta = 1 it then trains like a from-scratch model of its own size that reached L_i (the predicted
loss is continuous at the growth); eta < 1 discounts that head start (eta = 0: growth is worth
nothing). For stages of equal size this is the rule "earlier tokens count eta times",
D_eff = D_k + eta D_{k-1} + eta^2 D_{k-2} + ...; across sizes it counts what the smaller model
learned, not the tokens it read.

Why not count tokens directly (D_eff = D_k + eta * sum_{i<k} D_i for any sizes): that rule makes
the final loss linear in the early stages' tokens, so any eta above the FLOPs ratio c_1/c_k of the
smallest to the final stage (1/64 for a width-1/8 first stage) sends the whole budget into the
smallest model, which the law itself contradicts (a small model stalls at E + A / N^alpha).

Limits: one eta for every growth (it depends on the sizes, the ramp and the LR re-warmup, which
the model ignores); below 1 the predicted loss jumps up at a growth, which function-preserving
growth rules out at that step: eta is an average over the stage, not a description of the jump;
the law is a from-scratch law with its own schedule per point, while stages re-warm and decay per
stage; the prediction is of the validation loss the law was fitted to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nemo_flm.errors import ConfigError
from nemo_flm.estimate import non_embedding_params
from nemo_flm.flops import train_flops_per_token
from nemo_flm.scaling.compute_law import ComputeLaw


@dataclass(frozen=True)
class Stage:
    params: int  # non-embedding parameters N
    flops_per_token: float  # training FLOPs per token, lm_head included (flops.py)
    tokens: float = 0.0

    @property
    def flops(self) -> float:
        return self.flops_per_token * self.tokens


def stage_of(cfg: Any, tokens: float = 0.0) -> Stage:
    """A typed model config's size and cost, with its tokens."""
    return Stage(non_embedding_params(cfg), train_flops_per_token(cfg), float(tokens))


def check_eta(eta: float) -> float:
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(
            f"growth efficiency eta must be in [0, 1], got {eta}: 1 = growth loses nothing, 0 = worthless"
        )
    return eta


def carried_tokens(law: ComputeLaw, eta: float, params: Sequence[int], tokens: np.ndarray) -> np.ndarray:
    """X_i per stage [k, ...]: the from-scratch tokens each stage's model starts with (X_1 = 0).
    `tokens` is [k, ...] (any trailing shape: many token splits at once)."""
    carried = [np.zeros_like(tokens[0], dtype=float)]
    for i in range(1, len(params)):
        loss = law.loss(params[i - 1], carried[-1] + tokens[i - 1])
        carried.append(eta * law.tokens_to_reach(params[i], loss) if eta > 0 else np.zeros_like(carried[-1]))
    return np.stack(carried)


def stage_losses(law: ComputeLaw, eta: float, params: Sequence[int], tokens: np.ndarray) -> np.ndarray:
    """Predicted loss at the end of each stage, [k, ...]."""
    params_col = np.reshape(np.asarray(params, dtype=float), (-1,) + (1,) * (np.ndim(tokens) - 1))
    return law.loss(params_col, carried_tokens(law, eta, params, tokens) + tokens)
