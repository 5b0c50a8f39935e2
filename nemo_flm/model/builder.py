"""Config -> megatron TransformerConfig -> FLMGPTModel, built from the FLM layer spec."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, List, Optional

import torch
import torch.nn.functional as F
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build
from megatron.core.transformer.transformer_config import TransformerConfig

from nemo_flm import parallel
from nemo_flm.compat import require_backends
from nemo_flm.config import ffn_size, head_dim, padded_vocab_size
from nemo_flm.model import mup
from nemo_flm.model.gpt import FLMGPTModel
from nemo_flm.model.spec import flm_block_spec, flm_layer_spec
from nemo_flm.model.xpos import PositionConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp64": torch.float64}  # fp64: exactness checks


def transformer_config(cfg: Any) -> TransformerConfig:
    """The megatron TransformerConfig of an FLM model config (names map one to one)."""
    dtype = DTYPES[cfg.params_dtype]
    par = cfg.parallel
    fused = torch.cuda.is_available()
    return TransformerConfig(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        ffn_hidden_size=ffn_size(cfg),
        kv_channels=head_dim(cfg),
        add_bias_linear=True,
        # HF gelu_fast (tanh approximation). megatron fuses only activation_func F.gelu, and its fused
        # bias-GeLU kernel computes the tanh approximation: the same function on both paths.
        activation_func=F.gelu if fused else partial(F.gelu, approximate="tanh"),
        normalization="LayerNorm",
        layernorm_epsilon=cfg.layernorm_epsilon,
        hidden_dropout=cfg.hidden_dropout,
        attention_dropout=cfg.attention_dropout,
        init_method_std=cfg.init_method_std,
        tensor_model_parallel_size=par.tensor_model_parallel_size,
        pipeline_model_parallel_size=par.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=par.virtual_pipeline_model_parallel_size,
        sequence_parallel=par.sequence_parallel,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        use_cpu_initialization=not torch.cuda.is_available(),
        # the loss of a step is the mean over the global batch's loss tokens: megatron's schedules
        # sum per-token losses and finalize_model_grads divides by the DP-wide token count
        calculate_per_token_loss=True,
        recompute_granularity=cfg.recompute,
        recompute_method="uniform" if cfg.recompute else None,
        recompute_num_layers=1 if cfg.recompute else None,
        # fused bias-GeLU and bias-dropout-add on GPUs (jit-fused by torch). Off everywhere: masked
        # softmax (FLM attention is SDPA/flash/TE), gradient-accumulation fusion and persistent
        # LayerNorm (apex or TE), rope fusion (positions are applied by FLMSelfAttention)
        bias_activation_fusion=fused,
        bias_dropout_fusion=fused,
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        softmax_scale=mup.softmax_scale(cfg),
    )


def position_config(cfg: Any) -> PositionConfig:
    """xPos centred at half the training length (a KV cache moves the centre: model/kv_cache.py)."""
    return PositionConfig(
        kind=cfg.position_embedding,
        theta=cfg.rotary_base,
        gamma=cfg.xpos_gamma,
        scale_base=cfg.xpos_scale_base,
        center=float(cfg.seq_length // 2),
    )


def block_spec(cfg: Any, vp_stage: Optional[int] = None) -> TransformerBlockSubmodules:
    """The decoder block of this pipeline stage (model chunk `vp_stage`): FLM layers for the configured backend."""
    layer = flm_layer_spec(position_config(cfg), cfg.transformer_impl, cfg.attention_backend)
    return flm_block_spec([layer] * get_num_layers_to_build(transformer_config(cfg), vp_stage=vp_stage))


def build_model(
    cfg: Any, vp_stage: Optional[int] = None, block: Optional[TransformerBlockSubmodules] = None
) -> FLMGPTModel:
    """Build this rank's FLMGPTModel (model chunk `vp_stage` under virtual pipelining), initialised
    as μP says when use_mup is on (model/mup.py); megatron parallel_state must be initialised
    first. The embedding lives on the first pipeline stage and the output layer on the last
    (megatron's pre_process / post_process).

    `block` replaces the FLM block spec: features that swap leaves (growth/masks.py) pass their own."""
    require_backends(cfg.transformer_impl, cfg.attention_backend)
    model = FLMGPTModel(
        config=transformer_config(cfg),
        transformer_layer_spec=block if block is not None else block_spec(cfg, vp_stage),
        vocab_size=padded_vocab_size(cfg),
        max_sequence_length=cfg.seq_length,
        pre_process=parallel.is_first_stage(vp_stage),
        post_process=parallel.is_last_stage(vp_stage),
        vp_stage=vp_stage,
        share_embeddings_and_output_weights=cfg.tie_word_embeddings,
        position_embedding_type="none",
        input_mult=cfg.input_mult,
        logit_scale=mup.logit_scale(cfg),
        blockwise_window=cfg.seq_length if cfg.blockwise_attention else None,
    )
    mup.apply(model, cfg)
    return model


def vp_stages(cfg: Any) -> List[Optional[int]]:
    """The model chunks of this rank: [None] without virtual pipelining, else 0..vp-1."""
    vp = cfg.parallel.virtual_pipeline_model_parallel_size
    return [None] if vp is None else list(range(vp))


def build_chunks(cfg: Any, build: Callable[..., torch.nn.Module] = build_model) -> List[torch.nn.Module]:
    """This rank's model chunks, `build(cfg, vp_stage=...)` each (one chunk without virtual pipelining)."""
    return [build(cfg, vp_stage=stage) for stage in vp_stages(cfg)]


def as_network(chunks: List[torch.nn.Module]) -> torch.nn.Module:
    """What FLMModel holds in `.model`: the chunk itself, or a ModuleList of virtual-stage chunks."""
    return chunks[0] if len(chunks) == 1 else torch.nn.ModuleList(chunks)


def model_chunks(network: torch.nn.Module) -> List[torch.nn.Module]:
    """The inverse of as_network."""
    return list(network) if isinstance(network, torch.nn.ModuleList) else [network]
