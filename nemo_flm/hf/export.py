"""A nemo_flm .nemo -> a Hugging Face folder that `AutoModelForCausalLM.from_pretrained(dir,
trust_remote_code=True)` loads without nemo_flm (scripts/convert_nemo_to_hf.py).

The folder: config.json in FLM-101B's schema (hf_config.py), safetensors shards in GPT-2 names
(mapping.py), this package's configuration/modeling/tokenization code (remote_code/, standalone)
and, when the model's vocab covers FLM's tokenizer ids, the tokenizer files (the offline
cl100k_base ranks). The .nemo's tensors are read one at a time (any TP size wrote them) and shards
are written as they fill, so memory stays near one shard. The folder is written under a temporary
name and renamed when complete; the input is never modified.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Optional

import torch

from nemo_flm.atomic import atomic_output
from nemo_flm.checkpoint.nemo_archive import open_nemo
from nemo_flm.checkpoint.shards import ShardReader
from nemo_flm.checkpoint.weights import MODEL
from nemo_flm.config import ffn_size, load_shape_config
from nemo_flm.data.tokenizer import ENDOFTEXT, TOKENIZER_IDS, cl100k_path
from nemo_flm.hf.hf_config import HF_DTYPES, check_exportable, to_hf_config
from nemo_flm.hf.mapping import NEMO_PREFIX, name_pairs, sizes_of, to_hf
from nemo_flm.hf.weights import SafetensorsShards, parse_size

REMOTE_CODE = ("configuration_flm.py", "modeling_flm.py", "tokenization_flm.py")
EMBEDDING = NEMO_PREFIX + "embedding.word_embeddings.weight"


@dataclass
class Exported:
    """What an export wrote."""

    path: str
    shards: int
    total_bytes: int
    dtype: str
    tokenizer: bool


def export_to_hf(
    nemo: str, output: str, dtype: Optional[str] = None, max_shard_size: str = "2GB", overwrite: bool = False
) -> Exported:
    """Write the HF folder `output` from `nemo`; `dtype` (fp32|bf16) casts the weights (default: as stored)."""
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"output '{output}' exists: choose another --output or pass --overwrite")
    max_bytes = parse_size(max_shard_size)
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    reader, raw_cfg = open_nemo(nemo)
    cfg = load_shape_config(raw_cfg)
    check_exportable(cfg)
    dtype = dtype or cfg.params_dtype
    with atomic_output(output) as tmp:
        os.makedirs(tmp)
        shards = _write_weights(reader, cfg, tmp, getattr(torch, HF_DTYPES[dtype]), max_bytes)
        vocab = reader.shape(MODEL, EMBEDDING)[0]
        _write_json(os.path.join(tmp, "config.json"), to_hf_config(cfg, vocab, dtype))
        _copy_remote_code(tmp)
        tokenizer = _write_tokenizer(tmp, cfg, vocab)
    return Exported(output, len(shards.files), shards.total, HF_DTYPES[dtype], tokenizer)


def _write_weights(reader: ShardReader, cfg: Any, root: str, dtype: torch.dtype, max_bytes: int) -> SafetensorsShards:
    sizes = sizes_of(cfg.hidden_size, ffn_size(cfg), cfg.num_attention_heads, reader.shape(MODEL, EMBEDDING)[0])
    shards = SafetensorsShards(root, max_bytes)
    for nemo_name, hf_name, key in name_pairs(cfg.num_layers, cfg.tie_word_embeddings):
        shards.add(hf_name, to_hf(key, reader.read(MODEL, nemo_name), sizes).to(dtype))
    shards.finish()
    return shards


def _write_json(path: str, content: Any) -> None:
    with open(path, "w") as handle:
        json.dump(content, handle, indent=2)
        handle.write("\n")


def _copy_remote_code(root: str) -> None:
    code = files("nemo_flm.hf") / "remote_code"
    for name in REMOTE_CODE:
        with open(os.path.join(root, name), "wb") as handle:
            handle.write((code / name).read_bytes())


def _write_tokenizer(root: str, cfg: Any, vocab: int) -> bool:
    """FLM's tokenizer files, when the embedding has a row for every id the tokenizer writes."""
    if vocab < TOKENIZER_IDS:
        return False
    shutil.copyfile(cl100k_path(), os.path.join(root, "cl100k_base.tiktoken"))
    config = {
        "tokenizer_class": "FLMTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_flm.FLMTokenizer", None]},
        "model_max_length": cfg.seq_length,
        "bos_token": ENDOFTEXT,
        "eos_token": ENDOFTEXT,
        "unk_token": ENDOFTEXT,
        "pad_token": "[pad]",
        "add_bos_token": False,
        "add_eos_token": False,
    }
    _write_json(os.path.join(root, "tokenizer_config.json"), config)
    return True
