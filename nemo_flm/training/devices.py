"""`trainer.devices` resolved to a number of processes per node, before the trainer exists.

nemo_flm runs one process per device, launched by torchrun (or one process alone), and lays out
TP x PP x DP over the world those processes form. Lightning reads `devices` its own way ("auto"
is one device on CPUs, a list names GPU indices), and a world size that differs from the launched
one would choose the wrong strategy (one process's strategy, or Lightning's DDP all-reducing
tensor-parallel shards): so `auto` (or -1) becomes the launched count, and what cannot be a count
is refused in one line.
"""

from __future__ import annotations

import os
from typing import Any, Dict

import torch

from nemo_flm.errors import ConfigError


def _launched_per_node(accelerator: Any) -> int:
    """Processes per node that torchrun started, else the GPUs of this node (a lone process: 1)."""
    if "LOCAL_WORLD_SIZE" in os.environ:
        return int(os.environ["LOCAL_WORLD_SIZE"])
    if accelerator != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 1


def resolve_devices(trainer_kwargs: Dict[str, Any]) -> int:
    """Set trainer_kwargs['devices'] to the processes per node; returns the world size
    (devices x num_nodes), checked against torchrun's WORLD_SIZE when launched by it."""
    devices = trainer_kwargs.get("devices", 1)
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if devices in ("auto", -1):
        devices = _launched_per_node(trainer_kwargs.get("accelerator", "auto"))
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ConfigError(
            f"trainer.devices {devices!r} is not a number of processes per node: set an integer (or auto); "
            "select GPUs with CUDA_VISIBLE_DEVICES, since nemo_flm runs one process per device"
        )
    trainer_kwargs["devices"] = devices
    world = devices * int(trainer_kwargs.get("num_nodes", 1))
    launched = int(os.environ.get("WORLD_SIZE", world))
    if launched != world:
        raise ConfigError(
            f"trainer.devices x trainer.num_nodes = {world} but {launched} processes were launched (WORLD_SIZE): "
            "make torchrun's --nproc_per_node x --nnodes equal them"
        )
    return world
