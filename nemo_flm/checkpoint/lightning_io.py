"""Lightning checkpoints as sharded directories, so TP > 1 runs can save, resume and be grown.

A checkpoint `<name>.ckpt` is written as the directory `<name>/` (NeMo's convention for
distributed checkpoints, which exp_manager's resume and top-k bookkeeping already understand):

    index.json, model/, exp_avg/, exp_avg_sq/   weights and Adam moments (checkpoint/shards.py)
    trainer_state.pt                            everything else Lightning saves (loops, callbacks,
                                                 schedulers, hyper-parameters, Adam steps)

FLMModel.on_save_checkpoint keys the optimizer state by parameter name and records the TP layout
(`flm_tp_layout`, key_optimizer_state_by_name); every tensor-parallel rank of data-parallel rank 0 calls save_checkpoint
(FLMStrategy) and writes its own shards into `<name>.partial/`, which TP rank 0 renames when all
are done. Loading reads this rank's shards at the current TP size, whatever TP wrote them.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from nemo.utils.model_utils import ckpt_to_dir

from nemo_flm import parallel
from nemo_flm.atomic import discard, partial_path, publish
from nemo_flm.checkpoint.shards import MODEL, ShardReader, ShardWriter
from nemo_flm.model.sharding import partition_dims
from nemo_flm.training.optim import optimizer_param_names, state_by_index, state_by_name

TRAINER_STATE = "trainer_state.pt"
LAYOUT = "flm_tp_layout"


def checkpoint_dir(path) -> str:
    """The directory behind a Lightning checkpoint path (`x.ckpt` -> `x`, a directory stays)."""
    return str(ckpt_to_dir(path))


def read_trainer_state(path) -> Dict[str, Any]:
    """The checkpoint without its tensors (step, hyper-parameters, consumed samples): cheap."""
    root = checkpoint_dir(path)
    state_file = os.path.join(root, TRAINER_STATE)
    if not os.path.isfile(state_file):
        raise ValueError(
            f"'{root}' is not a complete nemo_flm checkpoint (no {TRAINER_STATE}): "
            "pass the checkpoint directory exp_manager wrote"
        )
    return torch.load(state_file, map_location="cpu", weights_only=False)


def key_optimizer_state_by_name(checkpoint: Dict[str, Any], network: torch.nn.Module, prefix: str = "model.") -> None:
    """Before saving: optimizer state keyed by parameter name (valid at any TP size and after
    growth) and this rank's TP layout; `network` is what the state dict holds under `prefix`."""
    names = optimizer_param_names(network, prefix)
    checkpoint["optimizer_states"] = [state_by_name(s, names) for s in checkpoint.get("optimizer_states", [])]
    checkpoint[LAYOUT] = {
        "tp_rank": parallel.tp_rank(),
        "tp_size": parallel.tp_size(),
        "partition_dims": partition_dims(network, prefix),
    }


def key_optimizer_state_by_number(checkpoint: Dict[str, Any], network: torch.nn.Module, prefix: str = "model.") -> None:
    """After loading: optimizer state keyed by number again, as optimizer.load_state_dict wants."""
    names = optimizer_param_names(network, prefix)
    checkpoint["optimizer_states"] = [state_by_index(s, names) for s in checkpoint.get("optimizer_states", [])]


class FLMCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if LAYOUT not in checkpoint:
            raise ValueError(
                "this checkpoint has no tensor-parallel layout (FLMModel.on_save_checkpoint did not run): "
                "weights-only Lightning checkpoints are not supported, use the .nemo instead"
            )
        layout = checkpoint[LAYOUT]
        root = checkpoint_dir(path)
        staging = partial_path(root)
        if layout["tp_rank"] == 0:
            discard(staging)
        parallel.tp_barrier()
        writer = ShardWriter(staging, layout["tp_rank"], layout["tp_size"])
        rest = dict(checkpoint)
        rest["state_dict"] = writer.add_tensors(MODEL, checkpoint["state_dict"].items(), layout["partition_dims"])
        rest["optimizer_states"] = [
            self._write_optimizer(writer, opt, layout["partition_dims"])
            for opt in checkpoint.get("optimizer_states", [])
        ]
        if layout["tp_rank"] == 0:
            torch.save(rest, os.path.join(staging, TRAINER_STATE))
            writer.write_index()
        parallel.tp_barrier()
        if layout["tp_rank"] == 0:
            publish(staging, root)

    @staticmethod
    def _write_optimizer(writer: ShardWriter, opt: Dict[str, Any], dims: Dict[str, Any]) -> Dict[str, Any]:
        """Write each parameter's moment tensors (group = the moment's name); the scalar step
        stays in the trainer state. Returns the rest."""
        state = {}
        for name, entries in opt["state"].items():
            state[name] = {}
            for key, value in entries.items():
                if torch.is_tensor(value) and value.ndim >= 1:
                    writer.add(key, name, value, dims[name])
                else:
                    state[name][key] = value
        return {**opt, "state": state}

    def load_checkpoint(
        self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None
    ) -> Dict[str, Any]:
        """The checkpoint with this rank's shards at the current TP size."""
        checkpoint = read_trainer_state(path)
        reader = ShardReader(checkpoint_dir(path))
        rank, size = parallel.tp_rank(), parallel.tp_size()
        checkpoint["state_dict"].update({n: reader.read(MODEL, n, rank, size) for n in reader.names(MODEL)})
        for opt in checkpoint.get("optimizer_states", []):
            for name, entries in opt["state"].items():
                entries.update(
                    {
                        key: reader.read(key, name, rank, size)
                        for key in reader.tensors
                        if key != MODEL and name in reader.tensors[key]
                    }
                )
        return checkpoint

    def remove_checkpoint(self, path) -> None:
        discard(checkpoint_dir(path))
