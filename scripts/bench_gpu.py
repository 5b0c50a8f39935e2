"""GPU throughput of the megatron engine at FLM's 16B layer shape, and a loss-goes-down check.

    python scripts/bench_gpu.py [--layers 12] [--steps 12]

Builds FLM's 16B block (hidden 4096, 32 heads of 128, FFN 16384, sequence 2048, bf16, the 100,352-row
vocabulary) with as many layers as --layers, on one GPU through the production path (training/
megatron_engine.py: megatron DDP, the distributed optimizer at DP = 1, the PP = 1 schedule), local
spec with SDPA (flash) attention, and prints tokens/s and MFU (training FLOPs of flops.py
over the GPU's dense bf16 peak) without and with full activation recompute, and with
parallel.overlap_param_gather (at DP = 1 there is nothing to gather: it checks that megatron's
pre-hook path runs on CUDA and what it costs; the gain needs DP > 1). Then 30 steps on one
fixed batch, whose loss must fall (memorisation). CUDA only; compare the MFU with FLM's 52.9% on A800s
(Transformer Engine and fused kernels there).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import torch

from nemo_flm.console import quiet_startup

quiet_startup()

from nemo_flm import parallel  # noqa: E402
from nemo_flm.config import load_model_config  # noqa: E402
from nemo_flm.flops import train_flops_per_token  # noqa: E402
from nemo_flm.model.builder import build_chunks  # noqa: E402
from nemo_flm.training.megatron_engine import MegatronEngine  # noqa: E402
from nemo_flm.training.throughput import peak_flops  # noqa: E402


def model_cfg(layers: int, recompute: bool, micro: int, batch: int, overlap_param_gather: bool = False):
    return load_model_config(
        dict(
            num_layers=layers,
            hidden_size=4096,
            num_attention_heads=32,
            ffn_hidden_size=16384,
            seq_length=2048,
            params_dtype="bf16",
            micro_batch_size=micro,
            global_batch_size=batch,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            recompute="full" if recompute else None,
            optim=dict(lr=1e-4, min_lr=1e-5, lr_warmup_samples=0, lr_decay_samples=10**6),
            parallel=dict(overlap_param_gather=overlap_param_gather),
        )
    )


def random_batch(cfg, generator):
    b, s = cfg.global_batch_size, cfg.seq_length
    tokens = torch.randint(0, cfg.vocab_size, (b, s + 1), generator=generator).cuda()
    ones = torch.ones(b, s, device="cuda")
    return {
        "tokens": tokens[:, :-1],
        "labels": tokens[:, 1:],
        "loss_mask": ones,
        "position_ids": torch.arange(s, device="cuda").expand(b, -1),
    }


def throughput(cfg, steps: int) -> tuple:
    """(tokens/s, MFU, last loss) over `steps` steps after 2 warm-up steps."""
    parallel.initialize(cfg.parallel, cfg.seed)
    engine = MegatronEngine(build_chunks(cfg), cfg)
    batch = random_batch(cfg, torch.Generator().manual_seed(0))
    for _ in range(2):
        engine.train_step(batch)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss, _ = engine.train_step(batch)
    torch.cuda.synchronize()
    tokens_per_s = steps * cfg.global_batch_size * cfg.seq_length / (time.perf_counter() - start)
    peak = peak_flops(torch.device("cuda"), torch.bfloat16) or float("nan")
    return tokens_per_s, tokens_per_s * train_flops_per_token(cfg) / peak, loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU here (this benchmark measures the GPU path)")
    print(f"{torch.cuda.get_device_name()}: FLM 16B layer shape, {args.layers} layers, bf16, batch {args.batch}")
    base = None
    variants = [
        ("recompute off ", False, False),
        ("recompute full", True, False),
        ("overlap_param_gather", False, True),
    ]
    for label, recompute, overlap in variants:
        cfg = model_cfg(args.layers, recompute, args.micro_batch, args.batch, overlap)
        tps, mfu, _ = throughput(cfg, args.steps)
        base = base or tps
        memory = torch.cuda.max_memory_allocated() / 2**30
        print(
            f"  {label}: {tps:,.0f} tokens/s, MFU {mfu:.1%}, "
            f"{tps / base:.2f}x the run without recompute; peak memory {memory:.1f} GiB"
        )
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = model_cfg(2, False, 2, 4)
    parallel.initialize(cfg.parallel, cfg.seed)
    engine = MegatronEngine(build_chunks(cfg), cfg)
    batch = random_batch(cfg, torch.Generator().manual_seed(1))
    losses = [engine.train_step(batch)[0] for _ in range(30)]
    print(f"  loss on one fixed batch: {losses[0]:.3f} -> {losses[-1]:.3f}")
    if not losses[-1] < losses[0] - 1.0:
        sys.exit("error: the loss did not fall")


if __name__ == "__main__":
    main()
