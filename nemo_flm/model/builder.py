"""Config -> megatron TransformerConfig -> FLMGPTModel, built from the FLM layer spec."""

from __future__ import annotations

from functools import partial
from typing import Any, Optional

import torch
import torch.nn.functional as F
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build
from megatron.core.transformer.transformer_config import TransformerConfig

from nemo_flm.compat import require_backends
from nemo_flm.config import ffn_size, head_dim, padded_vocab_size
from nemo_flm.model.gpt import FLMGPTModel
from nemo_flm.model.spec import flm_block_spec, flm_layer_spec
from nemo_flm.model.xpos import PositionConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp64": torch.float64}  # fp64: exactness checks


def transformer_config(cfg: Any) -> TransformerConfig:
    """The megatron TransformerConfig of an FLM model config (names map one to one)."""
    dtype = DTYPES[cfg.params_dtype]
    par = cfg.parallel
    return TransformerConfig(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        ffn_hidden_size=ffn_size(cfg),
        kv_channels=head_dim(cfg),
        add_bias_linear=True,
        activation_func=partial(F.gelu, approximate="tanh"),  # HF gelu_fast
        normalization="LayerNorm",
        layernorm_epsilon=cfg.layernorm_epsilon,
        hidden_dropout=cfg.hidden_dropout,
        attention_dropout=cfg.attention_dropout,
        init_method_std=cfg.init_method_std,
        tensor_model_parallel_size=par.tensor_model_parallel_size,
        pipeline_model_parallel_size=par.pipeline_model_parallel_size,
        sequence_parallel=par.sequence_parallel,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        use_cpu_initialization=not torch.cuda.is_available(),
        # the fused kernels below are CUDA-only or need apex
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
    )


def position_config(cfg: Any) -> PositionConfig:
    """xPos centre fixed at half the training length: keys are placed once, before the cache."""
    return PositionConfig(
        kind=cfg.position_embedding,
        theta=cfg.rotary_base,
        gamma=cfg.xpos_gamma,
        scale_base=cfg.xpos_scale_base,
        center=float(cfg.seq_length // 2),
    )


def logit_scale(cfg: Any) -> float:
    """FLM's HF semantics: logits x output_mult / mup_scale_factor when use_mup is on."""
    return cfg.output_mult / cfg.mup_scale_factor if cfg.use_mup else 1.0


def block_spec(cfg: Any) -> TransformerBlockSubmodules:
    """The decoder block of this pipeline stage: FLM layers for the configured backend."""
    layer = flm_layer_spec(position_config(cfg), cfg.transformer_impl, cfg.attention_backend)
    return flm_block_spec([layer] * get_num_layers_to_build(transformer_config(cfg)))


def build_model(
    cfg: Any, pre_process: bool = True, post_process: bool = True, block: Optional[TransformerBlockSubmodules] = None
) -> FLMGPTModel:
    """Build this rank's FLMGPTModel; megatron parallel_state must be initialised first.

    `block` replaces the FLM block spec: features that swap leaves (growth/masks.py) pass their own."""
    require_backends(cfg.transformer_impl, cfg.attention_backend)
    return FLMGPTModel(
        config=transformer_config(cfg),
        transformer_layer_spec=block if block is not None else block_spec(cfg),
        vocab_size=padded_vocab_size(cfg),
        max_sequence_length=cfg.seq_length,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=cfg.tie_word_embeddings,
        position_embedding_type="none",
        input_mult=cfg.input_mult,
        logit_scale=logit_scale(cfg),
    )
