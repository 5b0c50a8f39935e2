"""The relations between a model config's fields, checked section by section at load time.

Each check raises `ConfigError` with one line naming the problem and the fix, before any model is
built or file written: a config the code cannot honour never starts.
"""

from __future__ import annotations

import math
import os
from typing import Any

from nemo_flm.config.blend import parse_blend
from nemo_flm.config.shapes import ffn_size, head_dim, xpos_reach
from nemo_flm.errors import ConfigError


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_shape(cfg: Any) -> None:
    _require(
        cfg.kv_channels is not None or cfg.hidden_size % cfg.num_attention_heads == 0,
        f"hidden_size {cfg.hidden_size} is not divisible by num_attention_heads "
        f"{cfg.num_attention_heads}: pick heads that divide it (or set kv_channels, the head dim)",
    )
    _require(
        head_dim(cfg) % 2 == 0, f"head dim {head_dim(cfg)} must be even for rotary/xPos: change heads or kv_channels"
    )
    _require(cfg.seq_length >= 2, f"seq_length must be >= 2, got {cfg.seq_length}")
    _require(cfg.vocab_size >= 1, f"vocab_size must be >= 1, got {cfg.vocab_size}")
    _require(
        cfg.make_vocab_size_divisible_by >= 1,
        f"make_vocab_size_divisible_by must be >= 1, got {cfg.make_vocab_size_divisible_by}",
    )


def _check_tensor_parallel(cfg: Any) -> None:
    tp = cfg.parallel.tensor_model_parallel_size
    pp = cfg.parallel.pipeline_model_parallel_size
    _require(tp >= 1 and pp >= 1, f"parallel sizes must be >= 1, got TP={tp} PP={pp}")
    _require(
        cfg.parallel.distributed_timeout_minutes >= 1,
        f"parallel.distributed_timeout_minutes must be >= 1, got {cfg.parallel.distributed_timeout_minutes}",
    )
    _require(
        cfg.num_attention_heads % tp == 0,
        f"num_attention_heads {cfg.num_attention_heads} is not divisible by "
        f"tensor_model_parallel_size {tp}: choose a TP size that divides the heads",
    )
    _require(
        ffn_size(cfg) % tp == 0,
        f"ffn_hidden_size {ffn_size(cfg)} is not divisible by tensor_model_parallel_size {tp}",
    )
    _require(
        not cfg.parallel.sequence_parallel or tp > 1,
        "sequence_parallel needs tensor_model_parallel_size > 1: turn it off or raise TP",
    )
    _require(
        cfg.seq_length % tp == 0 or not cfg.parallel.sequence_parallel,
        f"seq_length {cfg.seq_length} is not divisible by TP {tp} (needed by sequence_parallel)",
    )


def _check_pipeline(cfg: Any) -> None:
    par = cfg.parallel
    pp, vp = par.pipeline_model_parallel_size, par.virtual_pipeline_model_parallel_size
    _require(
        par.engine in ("auto", "megatron", "local"),
        f"parallel.engine must be auto | megatron | local, got '{par.engine}'",
    )
    _require(
        vp is None or (vp >= 2 and pp >= 2),
        f"virtual_pipeline_model_parallel_size {vp} needs pipeline_model_parallel_size >= 2 and a value >= 2 "
        "(null: one model chunk per stage)",
    )
    chunks = pp * (vp or 1)
    _require(
        cfg.num_layers % chunks == 0,
        f"num_layers {cfg.num_layers} is not divisible by pipeline_model_parallel_size x virtual stages = {chunks}",
    )
    _require(
        pp == 1 or not cfg.tie_word_embeddings,
        "tie_word_embeddings with pipeline_model_parallel_size > 1 is not supported (the output layer would live on "
        "another stage than the embedding): untie them (FLM's default) or use PP=1",
    )


def _check_positions(cfg: Any) -> None:
    """xPos or RoPE constants, and one training sequence within one forward's xPos range
    (model/xpos.py); a KV cache needs a reach of at least one position."""
    _require(
        cfg.position_embedding in ("xpos", "rope"),
        f"position_embedding must be 'xpos' or 'rope', got '{cfg.position_embedding}'",
    )
    _require(cfg.xpos_scale_base > 0, "xpos_scale_base must be > 0")
    _require(cfg.xpos_gamma > 0, f"xpos_gamma must be > 0 (FLM: 0.4), got {cfg.xpos_gamma}")
    _require(cfg.rotary_base > 1, f"rotary_base must be > 1 (FLM: 10000), got {cfg.rotary_base}")
    if cfg.position_embedding != "xpos":
        return
    reach = xpos_reach(cfg.xpos_gamma, cfg.xpos_scale_base)
    _require(
        reach >= 1 and cfg.seq_length - 1 <= 2 * reach,
        f"seq_length {cfg.seq_length} is too long for xpos_scale_base {cfg.xpos_scale_base}: xPos factors of one "
        f"sequence would leave float range (at most {2 * reach + 1} positions); raise xpos_scale_base "
        "(FLM: 512 at 2048)",
    )


def _check_mup(cfg: Any) -> None:
    if not cfg.use_mup:
        return
    _require(cfg.mup_base_width >= 1, f"mup_base_width must be >= 1 (FLM: 256), got {cfg.mup_base_width}")
    m = cfg.hidden_size / cfg.mup_base_width
    given = cfg.mup_scale_factor
    _require(
        given is None or math.isclose(given, m, rel_tol=1e-6),
        f"mup_scale_factor {given} contradicts hidden_size / mup_base_width = {cfg.hidden_size} / "
        f"{cfg.mup_base_width} = {m:g}: drop mup_scale_factor (it is derived) or fix the width",
    )
    _require(cfg.mup_lr in ("base", "hidden"), f"mup_lr must be 'base' or 'hidden', got '{cfg.mup_lr}'")
    _require(
        cfg.mup_base_head_dim is None or cfg.mup_base_head_dim >= 1,
        f"mup_base_head_dim must be null or >= 1, got {cfg.mup_base_head_dim}",
    )


def _check_implementation(cfg: Any) -> None:
    """Layer implementation, attention backend, recompute and parameter dtype."""
    _require(
        not cfg.blockwise_attention or (cfg.seq_length % 2 == 0 and cfg.attention_backend == "sdpa"),
        "blockwise_attention needs an even seq_length (half windows) and attention_backend sdpa (it uses a mask)",
    )
    _require(
        cfg.transformer_impl in ("local", "transformer_engine"),
        f"transformer_impl must be 'local' or 'transformer_engine', got '{cfg.transformer_impl}'",
    )
    _require(
        cfg.attention_backend in ("sdpa", "flash_attn", "te"),
        f"attention_backend must be sdpa | flash_attn | te, got '{cfg.attention_backend}'",
    )
    _require(
        (cfg.attention_backend == "te") == (cfg.transformer_impl == "transformer_engine"),
        "attention_backend 'te' goes with transformer_impl 'transformer_engine' and only with it",
    )
    _require(cfg.recompute in (None, "full"), f"recompute must be null or full, got '{cfg.recompute}'")
    _require(
        cfg.params_dtype in ("fp32", "bf16", "fp64"),
        f"params_dtype must be fp32, bf16 or fp64, got '{cfg.params_dtype}'",
    )


def _check_batch_and_optim(cfg: Any) -> None:
    _require(
        cfg.global_batch_size % cfg.micro_batch_size == 0,
        f"global_batch_size {cfg.global_batch_size} is not a multiple of micro_batch_size {cfg.micro_batch_size}",
    )
    _require(0.0 <= cfg.hidden_dropout < 1 and 0.0 <= cfg.attention_dropout < 1, "dropout must be in [0, 1)")
    _require(cfg.optim.lr >= cfg.optim.min_lr, f"optim.lr {cfg.optim.lr} < optim.min_lr {cfg.optim.min_lr}")
    _require(cfg.optim.lr_decay_samples > 0, "optim.lr_decay_samples must be > 0")
    _require(
        cfg.optim.on_nonfinite in ("stop", "skip"),
        f"optim.on_nonfinite must be stop or skip, got '{cfg.optim.on_nonfinite}'",
    )


def _check_growth(cfg: Any) -> None:
    validate_ramp(cfg.growth, starts_grown=cfg.growth.init_from is not None)
    _require(
        cfg.growth.init_from is None or os.path.exists(os.path.expanduser(cfg.growth.init_from)),
        f"growth.init_from '{cfg.growth.init_from}' not found: point it at a grown checkpoint "
        "(scripts/grow_checkpoint.py) or drop it",
    )


def _check_data(cfg: Any) -> None:
    data = cfg.data
    parse_blend(data)  # the blend's shape; its files are checked where they are used (data/blend.py)
    _require(all(w > 0 for w in data.corpus.weights.values()), "data.corpus.weights must all be > 0")
    parts = data.split.split(",")
    _require(
        len(parts) == 3 and all(p.strip().replace(".", "", 1).isdigit() for p in parts),
        f"data.split must be three numbers 'train,valid,test', got '{data.split}'",
    )


SECTIONS = (
    _check_tensor_parallel,
    _check_shape,
    _check_pipeline,
    _check_positions,
    _check_mup,
    _check_implementation,
    _check_batch_and_optim,
    _check_growth,
    _check_data,
)


def validate(cfg: Any) -> None:
    """Check the relations between fields, one section at a time; each failure is one line with the fix."""
    for check in SECTIONS:
        check(cfg)


def validate_ramp(growth: Any, starts_grown: bool) -> None:
    """A model started from a grown checkpoint ramps its masks, or says explicitly that it does not."""
    _require(growth.grow_steps >= 0, f"growth.grow_steps must be >= 0, got {growth.grow_steps}")
    _require(
        not (growth.no_ramp and growth.grow_steps > 0),
        f"growth.no_ramp is set but growth.grow_steps is {growth.grow_steps}: drop one of them",
    )
    _require(
        not starts_grown or growth.grow_steps > 0 or growth.no_ramp,
        "growth.grow_steps is 0 on a stage that starts from a grown checkpoint: the model would not compute the "
        "previous stage's function; set growth.grow_steps > 0 (the MSG mask ramp) or growth.no_ramp: true",
    )


def check_ramp_fits(growth: Any, max_steps: int, stage: str) -> None:
    """The ramp must end inside the stage: c reaches 1 and the masks fold away at the start of step
    grow_steps + 1; a model that ends mid-ramp holds masks, which a .nemo (plain spec) cannot."""
    _require(
        growth.grow_steps < max_steps,
        f"growth.grow_steps {growth.grow_steps} is not below {stage}'s max_steps {max_steps}: the ramp must end "
        "inside the stage (masks fold at step grow_steps + 1); shorten the ramp or train longer",
    )
