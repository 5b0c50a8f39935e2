"""Length extrapolation: held-out perplexity at multiples of the training length.

The xPos paper's measurement (and FLM's claim that its window "can be extended well at
inference"): models trained at window W score held-out text of length W, 2W, 4W, 8W, with plain
causal attention and with blockwise causal attention (model/blockwise.py). Perplexity is over every
position of each sequence, the validation split of the data the model was trained on.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

import torch
from torch import Tensor

from nemo_flm import parallel
from nemo_flm.data.datasets import build_valid_datasets, data_blend
from nemo_flm.inference.generator import forward_in_chunks
from nemo_flm.model.kv_cache import FLMInferenceContext

LENGTH_FACTORS = (1, 2, 4, 8)


def held_out_sequences(data_cfg: Any, length: int, per_language: int) -> Dict[str, Tensor]:
    """Up to `per_language` validation sequences of `length` tokens (+1 for the last label) per
    dataset of the blend, distinct (one pass over the split, no repeats)."""
    blend = parallel.rank_zero_first(lambda: data_blend(data_cfg))
    out = {}
    for name, dataset in build_valid_datasets(data_cfg, blend, length, per_language).items():
        if dataset is None:
            continue
        count = min(per_language, len(dataset))
        out[name] = torch.stack(
            [torch.cat((s["tokens"][:1], s["labels"])) for s in map(dataset.__getitem__, range(count))]
        )
    if not out:
        raise ValueError(f"no validation sequence of {length} tokens in the data: use shorter lengths or more data")
    return out


@torch.no_grad()
def mean_nll(network: torch.nn.Module, sequences: Tensor, length: int, batch_size: int = 4) -> float:
    """Mean next-token loss over the first `length` positions of each sequence [n, >= length+1],
    through the KV cache so that any length keeps xPos in float range."""
    total = 0.0
    for batch in sequences[:, : length + 1].split(batch_size):
        ctx = FLMInferenceContext(batch.shape[0], length)
        total += float(forward_in_chunks(network, batch[:, :-1], ctx, labels=batch[:, 1:]).double().sum())
    return total / (sequences.shape[0] * length)


def perplexities(network: torch.nn.Module, sequences: Dict[str, Tensor], lengths: Sequence[int]) -> Dict[int, float]:
    """Length -> perplexity over all languages' sequences together (every token weighs the same)."""
    out = {}
    for length in lengths:
        losses = [mean_nll(network, seqs, length) * seqs.shape[0] for seqs in sequences.values()]
        out[length] = math.exp(sum(losses) / sum(s.shape[0] for s in sequences.values()))
    return out


def markdown_table(results: Dict[str, Dict[int, float]], window: int) -> List[str]:
    """Rows = model/attention, columns = length multiples, and ppl(4x)/ppl(1x)."""
    factors = [f for f in LENGTH_FACTORS]
    lines = [
        "| model | " + " | ".join(f"{f}x ({f * window})" for f in factors) + " | ppl(4x)/ppl(1x) |",
        "|---|" + "---|" * (len(factors) + 1),
    ]
    for name, ppl in results.items():
        cells = " | ".join(f"{ppl[f * window]:.2f}" for f in factors)
        lines.append(f"| {name} | {cells} | {ppl[4 * window] / ppl[window]:.3f} |")
    return lines


def plot(results: Dict[str, Dict[int, float]], window: int, path: str) -> None:
    """Perplexity against length, one line per model/attention, log-scaled length axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ppl in results.items():
        lengths = sorted(ppl)
        ax.plot(lengths, [ppl[n] for n in lengths], marker="o", label=name)
    ax.axvline(window, color="grey", linestyle=":", label=f"training length {window}")
    ax.set(xscale="log", xlabel="sequence length (tokens)", ylabel="held-out perplexity", title="Length extrapolation")
    ax.set_xticks([f * window for f in LENGTH_FACTORS], [str(f * window) for f in LENGTH_FACTORS])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
