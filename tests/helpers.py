"""Test helpers: launch N gloo ranks on CPU."""
import os
import socket

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, fn, args):
    import torch

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    fn(rank, *args)


def run_ranks(world: int, fn, *args) -> None:
    """Run fn(rank, *args) in `world` spawned processes (one thread each) joined by gloo."""
    mp.spawn(_entry, args=(world, free_port(), fn, args), nprocs=world, join=True)


def trained_model(cfg, steps: int = 3):
    """A model and AdamW (nemo_flm's groups) after `steps` updates on random tokens."""
    import torch

    from nemo_flm.model.builder import build_model
    from nemo_flm.training.optim import build_optimizer

    model = build_model(cfg)
    opt = build_optimizer(model, cfg.optim)
    for _ in range(steps):
        tokens = torch.randint(0, cfg.vocab_size, (2, 8))
        model(tokens, torch.arange(8)[None].expand(2, -1), None, labels=tokens).mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt
