"""Lightning checkpoints as sharded directories, so any layout can save, resume and be grown.

A checkpoint `<name>.ckpt` is written as the directory `<name>/` (NeMo's convention for
distributed checkpoints, which exp_manager's resume and top-k bookkeeping already understand):

    index.json, model/, exp_avg/, exp_avg_sq/   weights and Adam moments (checkpoint/shards.py);
    main_param/                                  fp32 main weights of a bf16 run (megatron engine)
    trainer_state.pt                            everything else Lightning saves (loops, callbacks,
                                                 schedulers, hyper-parameters, Adam steps)

FLMModel.on_save_checkpoint keys weights and optimizer state by their names in the whole model
(global layer numbers, key_checkpoint_by_global_name) and records the TP layout; every
model-parallel rank (TP x PP) of data-parallel rank 0 calls save_checkpoint (FLMStrategy) and
writes its own shards into `<name>.partial/`; the first rank merges the stages' indexes and
renames the folder when all are done. Loading (read_this_rank) reads this rank's layers at its TP
shard, whatever TP and PP wrote them.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from nemo.utils.model_utils import ckpt_to_dir

from nemo_flm import parallel
from nemo_flm.atomic import discard, partial_path, publish
from nemo_flm.checkpoint.shards import MODEL, ShardReader, ShardWriter, merge_tables
from nemo_flm.model.sharding import global_names, partition_dims
from nemo_flm.training.optim import optimizer_groups, optimizer_param_names, state_by_index, state_by_name

TRAINER_STATE = "trainer_state.pt"
LAYOUT = "flm_layout"
SHARDS = "flm_shards"  # the directory a loaded checkpoint's tensors are read from


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


def checkpoint_problem(path) -> Optional[str]:
    """Why the checkpoint at `path` cannot be resumed from (one line), or None when it is whole:
    its trainer state loads and every tensor file the index names opens completely."""
    try:
        read_trainer_state(path)
        ShardReader(checkpoint_dir(path)).verify()
    except Exception as err:  # noqa: BLE001 - whatever fails, the checkpoint is unusable
        return str(err).splitlines()[0]
    return None


def last_good_checkpoint(path) -> Optional[str]:
    """`path` if whole; otherwise the newest whole checkpoint beside it (logging why `path` is
    not used), or None. Staging folders of interrupted writes (`.partial`) are never candidates."""
    problem = checkpoint_problem(path)
    if problem is None:
        return str(path)
    folder = os.path.dirname(checkpoint_dir(path))
    candidates = [
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if os.path.isdir(os.path.join(folder, name)) and not name.endswith(".partial")
    ]
    candidates = sorted(candidates, key=os.path.getmtime, reverse=True)
    fallback = next((c for c in candidates if c != checkpoint_dir(path) and checkpoint_problem(c) is None), None)
    logging.warning(
        "not resuming from %s: %s; %s",
        checkpoint_dir(path),
        problem,
        f"resuming from {fallback}" if fallback else "no other whole checkpoint",
    )
    return fallback


def key_checkpoint_by_global_name(checkpoint: Dict[str, Any], network: torch.nn.Module, prefix: str = "model.") -> None:
    """Before saving: weights and optimizer state keyed by their names in the whole model (valid at
    any TP and PP size, and after growth) and this rank's layout; `network` is what the state dict
    holds under `prefix`."""
    names = global_names(network, prefix)
    order = [names[n] for n in optimizer_param_names(network, prefix)]
    checkpoint["state_dict"] = {names.get(k, k): v for k, v in checkpoint["state_dict"].items()}
    checkpoint["optimizer_states"] = [state_by_name(s, order) for s in checkpoint.get("optimizer_states", [])]
    checkpoint[LAYOUT] = {
        "tp_rank": parallel.tp_rank(),
        "tp_size": parallel.tp_size(),
        "partition_dims": {names[k]: d for k, d in partition_dims(network, prefix).items()},
    }


def read_this_rank(checkpoint: Dict[str, Any], network: torch.nn.Module, prefix: str = "model.") -> None:
    """After loading: this rank's tensors (its pipeline stage's layers, at its TP shard) under the
    network's own names, and the optimizer state keyed by number, as Lightning loads them."""
    reader = ShardReader(checkpoint.pop(SHARDS))
    names = global_names(network, prefix)
    rank, size = parallel.tp_rank(), parallel.tp_size()
    saved = checkpoint["state_dict"]  # the non-tensor entries (megatron's empty _extra_state)
    checkpoint["state_dict"] = {
        local: reader.read(MODEL, name, rank, size) if name in reader.tensors[MODEL] else saved[name]
        for local, name in names.items()
        if name in reader.tensors[MODEL] or name in saved
    }
    order = [names[n] for n in optimizer_param_names(network, prefix)]
    moments = [key for key in reader.tensors if key != MODEL]
    for opt in checkpoint.get("optimizer_states", []):
        for name in order:
            if name in opt["state"]:
                opt["state"][name].update(
                    {m: reader.read(m, name, rank, size) for m in moments if name in reader.tensors[m]}
                )
    groups = optimizer_groups(network)
    checkpoint["optimizer_states"] = [state_by_index(s, order, groups) for s in checkpoint.get("optimizer_states", [])]


class FLMCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if LAYOUT not in checkpoint:
            raise ValueError(
                "this checkpoint has no layout (FLMModel.on_save_checkpoint did not run): "
                "weights-only Lightning checkpoints are not supported, use the .nemo instead"
            )
        layout = checkpoint[LAYOUT]
        root = checkpoint_dir(path)
        staging = partial_path(root)
        first = parallel.tp_rank() == 0 and parallel.pp_rank() == 0
        if first:
            discard(staging)
        parallel.mp_barrier()
        writer = ShardWriter(staging, layout["tp_rank"], layout["tp_size"])
        rest = dict(checkpoint)
        rest["state_dict"] = writer.add_tensors(MODEL, checkpoint["state_dict"].items(), layout["partition_dims"])
        rest["optimizer_states"] = [
            self._write_optimizer(writer, opt, layout["partition_dims"])
            for opt in checkpoint.get("optimizer_states", [])
        ]
        merge_tables(writer, parallel.pp_group())
        rest = _merge_stages(rest)
        if first:
            torch.save(rest, os.path.join(staging, TRAINER_STATE))
            writer.write_index()
        parallel.mp_barrier()
        if first:
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
        """The trainer state; the tensors are read by FLMModel.on_load_checkpoint (read_this_rank),
        which knows which layers and shards this rank holds."""
        checkpoint = read_trainer_state(path)
        checkpoint[SHARDS] = checkpoint_dir(path)
        return checkpoint

    def remove_checkpoint(self, path) -> None:
        discard(checkpoint_dir(path))


def _merge_stages(rest: Dict[str, Any]) -> Dict[str, Any]:
    """The union of the pipeline stages' trainer states: their state-dict entries and per-parameter
    optimizer scalars are keyed by global name, so one file describes the whole model."""
    if parallel.pp_size() == 1:
        return rest
    stages: List[Dict[str, Any]] = [None] * parallel.pp_size()
    dist.all_gather_object(stages, rest, group=parallel.pp_group())
    merged = dict(stages[0])
    merged["state_dict"] = {k: v for stage in stages for k, v in stage["state_dict"].items()}
    merged["optimizer_states"] = [
        _merge_optimizer([stage["optimizer_states"][i] for stage in stages])
        for i in range(len(merged["optimizer_states"]))
    ]
    return merged


def _merge_optimizer(parts: List[Dict[str, Any]]) -> Dict[str, Any]:
    groups = [
        {**group, "params": [n for part in parts for n in part["param_groups"][i]["params"]]}
        for i, group in enumerate(parts[0]["param_groups"])
    ]
    return {**parts[0], "state": {k: v for part in parts for k, v in part["state"].items()}, "param_groups": groups}
