"""Parameters, memory and FLOPs per GPU of a config at a layout, before anything is launched.

Parameters are counted exactly for FLM's blocks on the most loaded pipeline stage (the first one
holds the embedding, the last the output layer and final LayerNorm): tensor-parallel shards
divided by TP, the tensors TP replicates (row-parallel biases, LayerNorms) whole. Bytes per
parameter on the megatron engine (mixed precision): the model dtype's weights; fp32 gradients
(megatron's main-grad buffer) plus the gradient a backward pass makes in the model's dtype before
it is added to them; Adam's two fp32 moments plus fp32 main weights for a bf16
model, which the distributed optimizer shards over data parallel.

Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", Table 2) with the attention scores never stored (SDPA / flash attention):
per layer and micro-batch s*b*h*(10 + 24/t) bytes at 16 bits with tensor parallelism, s*b*h*34/t
with sequence parallelism; full recomputation keeps each layer's input (2*s*b*h/t) plus one layer's
activations. Under 1F1B the first stage holds min(PP, micro-batches) micro-batches of its L/PP
layers. The last stage also holds the fp32 softmax that megatron's vocab-parallel cross-entropy
computes in place of the logits and keeps for backward (where it becomes their gradient),
4*s*b*V/t bytes. Training
keeps no KV cache. FLOPs per token are flops.py's (4/3 x the layers' with recompute).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from nemo_flm.config import ffn_size, head_dim, padded_vocab_size
from nemo_flm.flops import train_flops_per_token

GB = 1024**3
WEIGHT_BYTES = {"bf16": 2, "fp32": 4, "fp64": 8}


@dataclass
class Layout:
    tp: int
    pp: int
    dp: int
    micro_batches: int  # per data-parallel rank and step


def layout_of(cfg: Any, gpus: int) -> Layout:
    par = cfg.parallel
    tp, pp = par.tensor_model_parallel_size, par.pipeline_model_parallel_size
    dp = gpus // (tp * pp)
    return Layout(tp, pp, dp, max(1, cfg.global_batch_size // (cfg.micro_batch_size * dp)))


def params_per_gpu(cfg: Any, tp: int, pp: int) -> int:
    """Parameters on one GPU of the most loaded pipeline stage."""
    h, f, v = cfg.hidden_size, ffn_size(cfg), padded_vocab_size(cfg)
    a = cfg.num_attention_heads * head_dim(cfg)
    sharded = (3 * a * h + 3 * a) + h * a + (f * h + f) + h * f  # qkv, proj, fc1, fc2 (+ column biases)
    replicated = h + h + 4 * h  # row-parallel biases of proj and fc2, two LayerNorms
    layers = cfg.num_layers // pp * (sharded // tp + replicated)
    embedding, output = v * h // tp, v * h // tp + 2 * h
    return layers + (embedding + output if pp == 1 else max(embedding, output))


def non_embedding_params(cfg: Any) -> int:
    """The model's parameters without the input and output embeddings (blocks and final LayerNorm):
    the N of the scaling laws (docs/flm_facts.md §6), counted as params_per_gpu counts the whole model."""
    return params_per_gpu(cfg, 1, 1) - 2 * padded_vocab_size(cfg) * cfg.hidden_size


def activation_bytes(cfg: Any, lay: Layout, recompute: bool) -> float:
    """Activations of the first pipeline stage (or of the only one), plus the logits."""
    s, b, h, t = cfg.seq_length, cfg.micro_batch_size, cfg.hidden_size, lay.tp
    per_layer = s * b * h * (34 / t if cfg.parallel.sequence_parallel else 10 + 24 / t)
    per_layer *= WEIGHT_BYTES[cfg.params_dtype] / 2
    layers = cfg.num_layers // lay.pp
    in_flight = min(lay.pp, lay.micro_batches)
    if recompute:
        stored = in_flight * layers * 2 * s * b * h / t * WEIGHT_BYTES[cfg.params_dtype] / 2 + per_layer
    else:
        stored = in_flight * layers * per_layer
    logits = 4 * s * b * padded_vocab_size(cfg) / t  # the fp32 softmax, made in place of the logits
    return stored + logits


def estimate(cfg: Any, gpus: int) -> Dict[str, float]:
    """GB per GPU of each part (activations with and without recompute), the totals at the config's
    recompute setting with and without the distributed optimizer, and FLOPs per token and per step."""
    lay = layout_of(cfg, gpus)
    params = params_per_gpu(cfg, lay.tp, lay.pp)
    weight = WEIGHT_BYTES[cfg.params_dtype]
    optimizer = params * (8 + (4 if weight < 4 else 0))
    parts = {
        "params_per_gpu": params,
        "weights_gb": params * weight / GB,
        "grads_gb": params * (4 + weight) / GB,
        "optimizer_gb": optimizer / GB,
        "optimizer_distributed_gb": optimizer / lay.dp / GB,
        "activations_gb": activation_bytes(cfg, lay, recompute=False) / GB,
        "activations_recompute_gb": activation_bytes(cfg, lay, recompute=True) / GB,
    }
    static = parts["weights_gb"] + parts["grads_gb"]
    static += parts["activations_recompute_gb"] if cfg.recompute else parts["activations_gb"]
    parts["total_gb"] = static + parts["optimizer_gb"]
    parts["total_distributed_gb"] = static + parts["optimizer_distributed_gb"]
    per_token = train_flops_per_token(cfg)
    parts["flops_per_token"] = per_token
    parts["flops_per_step"] = per_token * cfg.global_batch_size * cfg.seq_length
    return {"tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "micro_batches": lay.micro_batches, **parts}
