"""The .nemo with sharded weights: `model_config.yaml` + `model_weights/` (checkpoint/shards.py).

NeMo's default connector pickles the whole state dict on global rank 0, which works neither under
tensor parallelism (rank 0 holds a shard) nor for streaming growth (a pickle is read whole). Here
every model-parallel rank (TP x PP) of data-parallel rank 0 writes its own shards, under the
tensors' names in the whole model (model/sharding.global_names), into a staging folder beside the
.nemo; global rank 0 adds the config, packs the folder under a temporary name and renames it when
complete. Restoring reads this rank's layers at its TP shard, whatever TP and PP wrote them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Mapping

import torch
from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

from nemo_flm import parallel
from nemo_flm.atomic import atomic_output, discard
from nemo_flm.checkpoint.nemo_archive import WEIGHTS
from nemo_flm.checkpoint.shards import ShardReader, ShardWriter, merge_tables
from nemo_flm.checkpoint.weights import MODEL
from nemo_flm.model.sharding import global_names, partition_dims


class FLMSaveRestoreConnector(SaveRestoreConnector):
    def __init__(self) -> None:
        super().__init__()
        self.model_weights_ckpt = WEIGHTS

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

    def _load_state_dict_from_disk(self, model_weights: str, map_location=None) -> Mapping[str, Any]:
        """The whole model's tensors by global name, each read at this rank's TP shard only when
        load_instance_with_state_dict asks for it, so a rank reads just its own layers (NeMo calls
        this after building the model, so process groups exist). NeMo deletes its extraction
        folder before that: the weights are kept, as hard links (no copy), beside it until then."""
        self._kept = tempfile.mkdtemp(prefix="flm_weights_", dir=os.path.dirname(os.path.dirname(model_weights)))
        kept = os.path.join(self._kept, WEIGHTS)
        shutil.copytree(model_weights, kept, copy_function=_link_or_copy)
        return ShardReader(kept).group(MODEL, tp_rank=parallel.tp_rank(), tp_size=parallel.tp_size())

    def load_instance_with_state_dict(self, instance, state_dict: Mapping[str, Any], strict: bool) -> None:
        """Load the tensors of this rank's layers into the instance under its own names."""
        try:
            names = global_names(instance.model, "model.")
            local = {k: state_dict[g] if g in state_dict else None for k, g in names.items()}
            super().load_instance_with_state_dict(instance, local, strict)
        finally:
            discard(self._kept)


def pack_nemo(staging: str, save_path: str) -> None:
    """Tar the folder `staging` (model_config.yaml + model_weights/) into the .nemo at `save_path`, as
    NeMo does, under a temporary name renamed when complete."""
    with atomic_output(save_path) as tmp:
        SaveRestoreConnector._make_nemo_file_from_folder(filename=tmp, source_dir=staging)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copy2(src, dst)


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
