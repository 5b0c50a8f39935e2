"""config.json in FLM-101B's schema <-> the nemo_flm model config.

FLM's keys (docs/flm_facts.md §2) map one to one onto nemo_flm's, except:
- `vocab_size` is the padded embedding size (100352 for FLM); an import sets nemo's vocab_size to
  it and picks make_vocab_size_divisible_by so that padding adds nothing at the chosen TP size.
- `rotary_xpos_gamma` is not in FLM's schema: written only when gamma differs from FLM's 0.4.
- `embd_pdrop` is written as the hidden dropout (megatron has one dropout for both) and not read.
- `tie_word_embeddings` is written explicitly (transformers defaults it to true); on import, a
  config without it is tied exactly when the checkpoint has no lm_head.weight.
- fp16 weights import as fp32 (exact; nemo_flm trains in fp32 or bf16).
- The head dim is n_embd / n_head: a model whose kv_channels differs cannot be exported.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

from nemo_flm.config import ffn_size, head_dim
from nemo_flm.errors import ConfigError
from nemo_flm.model import mup

FLM_GAMMA = 0.4
TOKEN_ID = 100256  # FLM's <|endoftext|>: bos = eos
AUTO_MAP = {
    "AutoConfig": "configuration_flm.FLMConfig",
    "AutoModel": "modeling_flm.FLM",
    "AutoModelForCausalLM": "modeling_flm.FLM",
    "AutoTokenizer": ["tokenization_flm.FLMTokenizer", None],
}
HF_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp64": "float64"}
NEMO_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float64": "fp64", "float16": "fp32"}
TANH_GELU = ("gelu_fast", "gelu_new", "gelu_pytorch_tanh")


def check_exportable(cfg: Any) -> None:
    """FLM's schema has no head-dim key (the head dim must be hidden / heads) and no μP attention
    scale (scores are 1/sqrt(d_head), so a mup_base_head_dim must equal the head dim)."""
    if cfg.hidden_size % cfg.num_attention_heads or head_dim(cfg) != cfg.hidden_size // cfg.num_attention_heads:
        raise ConfigError(
            f"head dim {head_dim(cfg)} is not hidden_size / num_attention_heads ({cfg.hidden_size} / "
            f"{cfg.num_attention_heads}): FLM's HF schema cannot express it; grow or retrain to a consistent shape"
        )
    scale = mup.softmax_scale(cfg)
    if scale is not None and not math.isclose(scale, head_dim(cfg) ** -0.5):
        raise ConfigError(
            f"mup_base_head_dim {cfg.mup_base_head_dim} differs from the head dim {head_dim(cfg)}: FLM's HF schema "
            "scores attention by 1/sqrt(d_head) and has no key for μP's 1/d_head scale; export a model without it"
        )


def to_hf_config(cfg: Any, vocab_rows: int, dtype: str) -> Dict[str, Any]:
    """config.json of a model config whose embedding has `vocab_rows` rows, weights in `dtype` (fp32|bf16|fp64)."""
    check_exportable(cfg)
    hf = {
        "architectures": ["FLM"],
        "auto_map": AUTO_MAP,
        "model_type": "flm",
        "vocab_size": vocab_rows,
        "n_embd": cfg.hidden_size,
        "n_layer": cfg.num_layers,
        "n_head": cfg.num_attention_heads,
        "n_inner": ffn_size(cfg),
        "n_positions": cfg.seq_length,
        "activation_function": "gelu_fast",
        "attn_pdrop": cfg.attention_dropout,
        "embd_pdrop": cfg.hidden_dropout,
        "resid_pdrop": cfg.hidden_dropout,
        "initializer_range": cfg.init_method_std,
        "layer_norm_epsilon": cfg.layernorm_epsilon,
        "relative_encoding": "rotary",
        "rotary_theta": cfg.rotary_base,
        "rotary_use_xpos": cfg.position_embedding == "xpos",
        "rotary_xpos_scale_base": cfg.xpos_scale_base,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": True,
        "reorder_and_upcast_attn": True,
        "use_mup": cfg.use_mup,
        "mup_base_width": cfg.mup_base_width,
        "mup_scale_factor": mup.width_mult(cfg),
        "input_mult": cfg.input_mult,
        "output_mult": cfg.output_mult,
        "bos_token_id": TOKEN_ID,
        "eos_token_id": TOKEN_ID,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "use_cache": True,
        "torch_dtype": HF_DTYPES[dtype],
        "dtype": HF_DTYPES[dtype],
    }
    if cfg.xpos_gamma != FLM_GAMMA:
        hf["rotary_xpos_gamma"] = cfg.xpos_gamma
    return hf


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _vocab_divisor(vocab: int, tp: int) -> int:
    """The largest power of two <= 128 that, times TP, divides the HF vocab: no padding at this TP."""
    divisor = next((m for m in (128, 64, 32, 16, 8, 4, 2, 1) if vocab % (m * tp) == 0), None)
    _require(
        divisor is not None,
        f"vocab_size {vocab} does not split over tensor-parallel size {tp}: choose a TP dividing it",
    )
    return divisor


def _check_supported(hf: Dict[str, Any]) -> None:
    _require(
        hf.get("model_type") == "flm",
        f"config.json has model_type {hf.get('model_type')!r}, not 'flm': this converter reads FLM checkpoints only",
    )
    for key in ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions"):
        _require(key in hf, f"config.json lacks '{key}', which FLM's schema requires")
        _require(
            isinstance(hf[key], int) and not isinstance(hf[key], bool) and hf[key] > 0,
            f"config.json's '{key}' must be a positive integer, got {hf[key]!r}",
        )
    _require(
        hf.get("activation_function", "gelu_fast") in TANH_GELU,
        f"activation_function {hf.get('activation_function')!r} is not GeLU's tanh approximation {TANH_GELU}",
    )
    _require(
        hf.get("relative_encoding", "rotary") == "rotary",
        f"relative_encoding {hf.get('relative_encoding')!r} is not supported: FLM models are 'rotary'",
    )
    _require(hf["n_embd"] % hf["n_head"] == 0, f"n_embd {hf['n_embd']} is not divisible by n_head {hf['n_head']}")


def from_hf_config(hf: Dict[str, Any], tp: int, tied: Optional[bool]) -> Dict[str, Any]:
    """The `model:` section (before schema validation) of an FLM config.json, at tensor-parallel size
    `tp`; `tied`: whether the checkpoint lacks lm_head.weight (None when unknown)."""
    _check_supported(hf)
    dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    _require(dtype in NEMO_DTYPES, f"torch_dtype {dtype!r} is not one of {sorted(NEMO_DTYPES)}")
    return {
        "num_layers": hf["n_layer"],
        "hidden_size": hf["n_embd"],
        "num_attention_heads": hf["n_head"],
        "ffn_hidden_size": hf.get("n_inner") or 4 * hf["n_embd"],
        "seq_length": hf["n_positions"],
        "vocab_size": hf["vocab_size"],
        "make_vocab_size_divisible_by": _vocab_divisor(hf["vocab_size"], tp),
        "layernorm_epsilon": hf.get("layer_norm_epsilon", 1e-5),
        "hidden_dropout": hf.get("resid_pdrop", 0.1),
        "attention_dropout": hf.get("attn_pdrop", 0.1),
        "init_method_std": hf.get("initializer_range", 0.02),
        "tie_word_embeddings": hf.get("tie_word_embeddings", bool(tied)),
        "position_embedding": "xpos" if hf.get("rotary_use_xpos", True) else "rope",
        "rotary_base": float(hf.get("rotary_theta", 10000.0)),
        "xpos_gamma": float(hf.get("rotary_xpos_gamma", FLM_GAMMA)),
        "xpos_scale_base": float(hf.get("rotary_xpos_scale_base", 512.0)),
        "use_mup": hf.get("use_mup", False),
        "input_mult": float(hf.get("input_mult", 1.0)),
        "output_mult": float(hf.get("output_mult", 1.0)),
        "mup_scale_factor": float(hf.get("mup_scale_factor", 1.0)),
        "mup_base_width": hf.get("mup_base_width", 256),
        "params_dtype": NEMO_DTYPES[dtype],
        "parallel": {"tensor_model_parallel_size": tp},
    }
