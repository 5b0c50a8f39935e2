"""The .nemo with sharded weights: `model_config.yaml` + `model_weights/` (checkpoint/shards.py).

NeMo's default connector pickles the whole state dict on global rank 0, which works neither under
tensor parallelism (rank 0 holds a shard) nor for streaming growth (a pickle is read whole). Here
every model-parallel rank (TP x PP) of data-parallel rank 0 writes its own shards, under the
tensors' names in the whole model (model/sharding.global_names), into a staging folder beside the
.nemo; global rank 0 adds the config, packs the folder under a temporary name and renames it when
complete. Restoring reads this rank's layers at its TP shard, whatever TP and PP wrote them,
from the archive in place (checkpoint/nemo_archive.py): NeMo extracts only the config.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from nemo.core.connectors.save_restore_connector import SaveRestoreConnector
from omegaconf import OmegaConf

from nemo_flm import parallel
from nemo_flm.atomic import atomic_output, discard
from nemo_flm.checkpoint.nemo_archive import CONFIG, WEIGHTS, ArchiveShardReader, open_nemo
from nemo_flm.checkpoint.shards import ShardReader, ShardWriter, merge_tables
from nemo_flm.checkpoint.source import open_checkpoint
from nemo_flm.checkpoint.weights import MODEL
from nemo_flm.model.sharding import global_names, partition_dims


class FLMSaveRestoreConnector(SaveRestoreConnector):
    def __init__(self) -> None:
        super().__init__()
        self.model_weights_ckpt = WEIGHTS
        self._archive = None  # the .nemo being restored, whose weights are read in place

    def save_to(self, model, save_path: str) -> None:
        """Called on every rank; the .nemo appears at `save_path` only when complete."""
        staging = f"{save_path}.staging"  # the folder packed into the .nemo
        if parallel.is_rank_zero():
            discard(staging)
            os.makedirs(os.path.dirname(save_path) or ".", exist_ok=True)
        parallel.barrier()
        if parallel.dp_rank() == 0:
            write_weights(model, os.path.join(staging, WEIGHTS))
        parallel.barrier()
        if parallel.is_rank_zero():
            try:
                self._pack(model, staging, save_path)
            finally:
                discard(staging)
        parallel.barrier()

    def _pack(self, model, staging: str, save_path: str) -> None:
        config_yaml = os.path.join(staging, self.model_config_yaml)
        model.to_config_file(path2yaml_file=config_yaml)
        if model.has_native_or_submodules_artifacts():
            self._handle_artifacts(model, nemo_file_folder=staging)
            self._update_artifact_paths(model, path2yaml_file=config_yaml)
        pack_nemo(staging, save_path)

    def load_config_and_state_dict(self, calling_cls, restore_path: str, *args, **kwargs):
        """NeMo's restore, remembering the archive: its weights are read in place, not extracted."""
        self._archive = restore_path if os.path.isfile(restore_path) else None
        return super().load_config_and_state_dict(calling_cls, restore_path, *args, **kwargs)

    def _filtered_tar_info(self, tar_path: str, filter_fn=None):
        """What NeMo extracts on every rank: the config and artifacts, not `model_weights/`."""
        members = super()._filtered_tar_info(tar_path, filter_fn)
        return [m for m in members if os.path.normpath(m.name).split(os.sep)[0] != WEIGHTS]

    def _load_state_dict_from_disk(self, model_weights: str, map_location=None) -> Mapping[str, Any]:
        """The whole model's tensors by global name, each read at this rank's TP shard only when
        load_instance_with_state_dict asks for it (NeMo calls this once the model, and so the
        process groups, exist): from the archive in place, or from an extracted folder
        (model_extracted_dir)."""
        reader = ArchiveShardReader(self._archive) if self._archive else ShardReader(model_weights)
        return reader.group(MODEL, tp_rank=parallel.tp_rank(), tp_size=parallel.tp_size())

    def load_instance_with_state_dict(self, instance, state_dict: Mapping[str, Any], strict: bool) -> None:
        """Load the tensors of this rank's layers into the instance under its own names."""
        names = global_names(instance.model, "model.")
        local = {k: state_dict[g] if g in state_dict else None for k, g in names.items()}
        super().load_instance_with_state_dict(instance, local, strict)


def pack_nemo(staging: str, save_path: str) -> None:
    """Tar the folder `staging` (model_config.yaml + model_weights/) into the .nemo at `save_path`, as
    NeMo does, under a temporary name renamed when complete."""
    with atomic_output(save_path) as tmp:
        SaveRestoreConnector._make_nemo_file_from_folder(filename=tmp, source_dir=staging)


def write_weights(model: torch.nn.Module, root: str) -> None:
    """This rank's shards of `model.state_dict()`, by global name; megatron's empty `_extra_state`
    entries (None) are not stored: the loader gives None to every name it has no tensor for."""
    names = global_names(model.model, "model.")
    dims = {names[k]: d for k, d in partition_dims(model).items()}
    writer = ShardWriter(root, parallel.tp_rank(), parallel.tp_size())
    rest = writer.add_tensors(MODEL, ((names.get(k, k), v) for k, v in model.state_dict().items()), dims)
    for name, value in rest.items():
        if value is not None:
            raise TypeError(f"state-dict entry '{name}' is a {type(value).__name__}, which a .nemo cannot store")
    merge_tables(writer, parallel.pp_group())
    if parallel.pp_rank() == 0:
        writer.write_index()


def packed_from(nemo: str, checkpoint: str) -> bool:
    """Whether `nemo` is a whole .nemo written after `checkpoint` (what a re-run of an export may
    keep; a .nemo from an earlier run in the same folder, or a damaged one, is not)."""
    if not os.path.exists(nemo) or os.path.getmtime(nemo) < os.path.getmtime(checkpoint):
        return False
    try:
        open_nemo(nemo)
    except ValueError:
        return False
    return True


def export_nemo(src: str, save_path: str) -> int:
    """A .nemo of the training checkpoint `src`, made by this process alone, one tensor at a time
    (a CPU job of its own at FLM's scale, instead of rank 0 packing ~205 GB at the end of a stage
    while the stage's other ranks wait): the weights in the TP=1 layout and the model config it
    carries, packed as FLMModel.save_to packs them. Returns the bytes of weights written."""
    reader, cfg, _ = open_checkpoint(src)
    save_path = os.path.abspath(save_path)
    staging = f"{save_path}.staging"
    discard(staging)
    writer = ShardWriter(os.path.join(staging, WEIGHTS))
    written = 0
    try:
        for name in reader.names(MODEL):
            tensor = reader.read(MODEL, name)
            writer.add(MODEL, name, tensor, reader.tensors[MODEL][name]["partition_dim"])
            written += tensor.nbytes
        writer.write_index()
        OmegaConf.save(OmegaConf.create(cfg), os.path.join(staging, CONFIG))
        pack_nemo(staging, save_path)
    finally:
        discard(staging)
    return written
