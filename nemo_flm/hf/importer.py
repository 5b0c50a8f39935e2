"""A Hugging Face FLM folder -> a nemo_flm .nemo at any tensor-parallel size (scripts/convert_hf_to_nemo.py).

Reads what CofeAI publishes for FLM-101B (pickled `pytorch_model-*.bin` shards with an index, ~205 GB)
as well as this package's own export (safetensors shards), one HF file at a time and one tensor at a
time within it (weights.py), so memory stays near one tensor. Each tensor is mapped to megatron's
layout (mapping.py), cast to the model's dtype and written at once as every TP rank's shard
(checkpoint/shards.py, the .nemo's own layout); megatron's meta-device skeleton says how each
parameter splits. The names are checked against the config before anything is written; the
.nemo is packed as FLMModel.save_to packs it, under a temporary name renamed when complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, List, Tuple

import torch
from omegaconf import OmegaConf

from nemo_flm.checkpoint.nemo_archive import CONFIG, WEIGHTS
from nemo_flm.checkpoint.nemo_file import pack_nemo
from nemo_flm.checkpoint.shards import ShardWriter
from nemo_flm.checkpoint.weights import MODEL
from nemo_flm.config import ffn_size, load_model_config, padded_vocab_size
from nemo_flm.errors import ConfigError
from nemo_flm.hf.hf_config import HF_DTYPES, from_hf_config
from nemo_flm.hf.mapping import HF_NAMES, OUTPUT, from_hf, name_pairs, sizes_of
from nemo_flm.hf.weights import iter_tensors, weight_files
from nemo_flm.model.sharding import partition_dims
from nemo_flm.model.skeleton import skeleton

# buffers, not weights, that GPT-2-lineage state dicts may carry (causal masks, rotary frequencies)
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", "inv_freq", ".xpos.scale")


def read_hf_config(folder: str) -> Dict[str, Any]:
    """config.json of an HF model folder."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"'{folder}' has no config.json: not a Hugging Face model folder")
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"'{path}' is not valid JSON: {err}") from None


def import_from_hf(folder: str, output: str, tp: int = 1, overwrite: bool = False) -> Any:
    """Write the .nemo `output` (weights split over `tp` ranks) from the HF folder; returns its model config."""
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"output '{output}' exists: choose another --output or pass --overwrite")
    output = os.path.abspath(output)
    hf = read_hf_config(folder)
    files = weight_files(folder)
    cfg = load_model_config(from_hf_config(hf, tp, tied=HF_NAMES[OUTPUT] not in files))
    names = _check_names(cfg, files)
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent) as staging:
        _write_shards(folder, files, names, cfg, os.path.join(staging, WEIGHTS))
        OmegaConf.save(cfg, os.path.join(staging, CONFIG))
        pack_nemo(staging, output)
    return cfg


def _check_names(cfg: Any, files: Dict[str, str]) -> Dict[str, Tuple[str, str]]:
    """{HF name: (.nemo name, AXES key)}, after checking the checkpoint has exactly those tensors."""
    names = {hf: (nemo, key) for nemo, hf, key in name_pairs(cfg.num_layers, cfg.tie_word_embeddings)}
    missing = sorted(set(names) - set(files))
    extra = sorted(n for n in set(files) - set(names) if not n.endswith(BUFFER_SUFFIXES))
    if missing or extra:
        raise ConfigError(
            f"the checkpoint does not match its config.json: missing {_few(missing)}, unexpected {_few(extra)}"
        )
    return names


def _few(names: List[str]) -> str:
    return "none" if not names else ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")


def _write_shards(folder: str, files: Dict[str, str], names: Dict[str, Tuple[str, str]], cfg: Any, root: str) -> None:
    tp = cfg.parallel.tensor_model_parallel_size
    dims = partition_dims(skeleton(cfg), "model.")
    sizes = sizes_of(cfg.hidden_size, ffn_size(cfg), cfg.num_attention_heads, padded_vocab_size(cfg))
    dtype = getattr(torch, HF_DTYPES[cfg.params_dtype])
    writers = [ShardWriter(root, rank, tp) for rank in range(tp)]
    written = set()
    for hf_name, tensor in iter_tensors(folder, files):
        if hf_name not in names:
            continue  # a buffer (_check_names allowed it)
        nemo_name, key = names[hf_name]
        written.add(hf_name)
        full = from_hf(key, tensor, sizes, hf_name).to(dtype)
        dim = dims[nemo_name]
        for rank, writer in enumerate(writers):
            writer.add(MODEL, nemo_name, full if dim is None or tp == 1 else full.chunk(tp, dim)[rank], dim)
    if set(names) - written:
        raise ValueError(f"the weight index names tensors its files do not hold: {_few(sorted(set(names) - written))}")
    writers[0].write_index()
