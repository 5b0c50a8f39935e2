"""Config -> megatron TransformerConfig -> FLMGPTModel, built from the FLM layer spec."""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from megatron.core.transformer.transformer_block import get_num_layers_to_build
from megatron.core.transformer.transformer_config import TransformerConfig

from nemo_flm.compat import require_backends
from nemo_flm.config import ffn_size, head_dim, padded_vocab_size
from nemo_flm.model.gpt import FLMGPTModel
from nemo_flm.model.spec import flm_block_spec, flm_layer_spec, growth_block_spec
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


def build_model(cfg: Any, pre_process: bool = True, post_process: bool = True, growth_masks=None) -> FLMGPTModel:
    """Build this rank's FLMGPTModel; megatron parallel_state must be initialised first.

    With `growth_masks` (growth/masks.py) the block uses the masked MSG leaves of a growth ramp."""
    require_backends(cfg.transformer_impl, cfg.attention_backend)
    tcfg = transformer_config(cfg)
    if growth_masks is not None:
        if cfg.transformer_impl != "local" or cfg.parallel.pipeline_model_parallel_size != 1:
            raise ValueError("a growth ramp runs on the local spec with pipeline size 1 (masked LayerNorms cannot be fused)")
        block = growth_block_spec(position_config(cfg), growth_masks, cfg.attention_backend)
    else:
        layer = flm_layer_spec(position_config(cfg), cfg.transformer_impl, cfg.attention_backend)
        block = flm_block_spec(layer, get_num_layers_to_build(tcfg))
    return FLMGPTModel(
        config=tcfg,
        transformer_layer_spec=block,
        vocab_size=padded_vocab_size(cfg),
        max_sequence_length=cfg.seq_length,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=cfg.tie_word_embeddings,
        position_embedding_type="none",
        input_mult=cfg.input_mult,
        logit_scale=logit_scale(cfg),
        growth_masks=growth_masks,
    )
