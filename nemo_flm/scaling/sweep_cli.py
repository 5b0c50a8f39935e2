"""The command line the width-sweep scripts share (scripts/mup_coord_check.py, scripts/mup_lr_sweep.py):
the model shape, the data and the output directory, and the setup every sweep starts with."""

from __future__ import annotations

import argparse
import os
from typing import Sequence, Tuple

import torch

from nemo_flm import parallel
from nemo_flm.config import load_model_config
from nemo_flm.scaling.sweep_data import SweepData, sweep_data
from nemo_flm.scaling.width_sweep import WidthSweep, check_widths


def add_arguments(parser: argparse.ArgumentParser, widths: Sequence[int], out: str) -> None:
    parser.add_argument(
        "--widths", type=int, nargs="+", default=list(widths), help="hidden sizes (default: %(default)s)"
    )
    parser.add_argument("--head-dim", type=int, default=32, help="fixed head dim; heads = width / head dim")
    parser.add_argument("--base-width", type=int, help="μP base width (default: the smallest width)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seq", type=int, default=64, help="sequence length")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument(
        "--vocab", type=int, default=4096, help="compact vocabulary: the most frequent tokens (0: the tokenizer's 100K)"
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=out, help="output directory (default: %(default)s)")


def require_at_least(args: argparse.Namespace, **minimums: int) -> None:
    """One-line errors for counts below their minimum, e.g. require_at_least(args, steps=1)."""
    for name, least in minimums.items():
        value = getattr(args, name)
        if value < least:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {least}, got {value}")


def setup(args: argparse.Namespace, steps: int, held_out_per_dataset: int = 0) -> Tuple[WidthSweep, SweepData]:
    """Check the widths, start one CPU process, and read `steps` training batches of the built-in
    corpus (and held-out samples); raises ValueError in one line on bad input."""
    check_widths(args.widths, args.head_dim)
    torch.set_num_threads(args.threads)
    cfg = load_model_config({"seed": args.seed, "parallel": {}})
    parallel.initialize(cfg.parallel, cfg.seed)
    data = sweep_data(cfg.data, args.seq, args.batch, steps, args.vocab, held_out_per_dataset)
    if data.shared_fraction:
        print(f"compact vocabulary: {data.vocab_size} ids, {data.shared_fraction:.1%} of tokens share the last one")
    sweep = WidthSweep(
        head_dim=args.head_dim,
        base_width=min(args.widths) if args.base_width is None else args.base_width,
        num_layers=args.layers,
        seq_length=args.seq,
        batch_size=args.batch,
        vocab_size=data.vocab_size,
        seed=args.seed,
    )
    sweep.config(max(args.widths), "mup", lr=1e-3, steps=1)  # a bad shape fails here, in one line
    os.makedirs(args.out, exist_ok=True)
    return sweep, data
