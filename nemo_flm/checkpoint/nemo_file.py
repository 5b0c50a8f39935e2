"""The .nemo with sharded weights: `model_config.yaml` + `model_weights/` (checkpoint/shards.py).

NeMo's default connector pickles the whole state dict on global rank 0, which works neither under
tensor parallelism (rank 0 holds a shard) nor for streaming growth (a pickle is read whole). Here
every TP rank of data-parallel rank 0 writes its own shards into a staging folder beside the
.nemo; global rank 0 adds the config, packs the folder under a temporary name and renames it when
complete. Restoring reads this rank's shards at the current TP size, whatever TP wrote them.
"""

from __future__ import annotations

import os
from typing import Any, Dict

import torch
from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

from nemo_flm import parallel
from nemo_flm.atomic import atomic_output, discard
from nemo_flm.checkpoint.shards import MODEL, ShardReader, ShardWriter
from nemo_flm.model.sharding import partition_dims

WEIGHTS = "model_weights"


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
        with atomic_output(save_path) as tmp:
            self._make_nemo_file_from_folder(filename=tmp, source_dir=staging)

    def _load_state_dict_from_disk(self, model_weights: str, map_location=None) -> Dict[str, Any]:
        """This rank's shards; NeMo calls it after building the model, so process groups exist."""
        reader = ShardReader(model_weights)
        rank, size = parallel.tp_rank(), parallel.tp_size()
        state: Dict[str, Any] = {n: reader.read(MODEL, n, rank, size) for n in reader.names(MODEL)}
        if map_location is not None:
            state = {n: t.to(map_location) for n, t in state.items()}
        state.update({name: None for name in reader.meta.get("none_entries", [])})
        return state


def write_weights(model: torch.nn.Module, root: str) -> None:
    """This rank's shards of `model.state_dict()`; megatron's empty `_extra_state` entries (None)
    are recorded by name so a strict load finds them."""
    writer = ShardWriter(root, parallel.tp_rank(), parallel.tp_size())
    rest = writer.add_tensors(MODEL, model.state_dict().items(), partition_dims(model))
    for name, value in rest.items():
        if value is not None:
            raise TypeError(f"state-dict entry '{name}' is a {type(value).__name__}, which a .nemo cannot store")
    writer.write_index({"none_entries": list(rest)})
