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
