"""What a run tells its user: a few lines before the first step and a summary after the last.

Before: the model (shape, parameters with and without embeddings), the data blend (datasets,
weights, tokens), the layout and precision, the backends in use (and those not installed, which
the quieted import warnings used to repeat), and where the outputs go. After: the .nemo, the last
checkpoint, the TensorBoard logs and a PNG of the train and validation loss curves beside them;
the final train loss and validation loss per dataset; tokens seen and wall time.
"""

from __future__ import annotations

import glob
import os
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from nemo_flm import compat, parallel
from nemo_flm.config import ffn_size, head_dim
from nemo_flm.curves import Panel, read_scalars, save_panels
from nemo_flm.training.engine import resolve_engine

CURVES = "loss_curves.png"


def _millions(n: float) -> str:
    return f"{n / 1e6:.2f}M"


def _parameters(network: torch.nn.Module) -> Dict[str, int]:
    """Full-model counts from this rank's tensor-parallel shards (this stage's, under PP)."""
    counts = {"total": 0, "embeddings": 0}
    for name, param in network.named_parameters():
        full = param.numel() * (parallel.tp_size() if getattr(param, "tensor_model_parallel", False) else 1)
        counts["total"] += full
        if "word_embeddings" in name or "output_layer" in name:
            counts["embeddings"] += full
    return counts


def _tokens(prefix: str) -> int:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(prefix)  # held while its memory-mapped index is read: it unmaps on deletion
    return int(dataset.sequence_lengths.sum())


def start_lines(model: Any, trainer: Any, log_dir: str) -> List[str]:
    """The lines printed before the first step (rank 0)."""
    return [
        _model_line(model),
        _data_line(model),
        _layout_line(model.cfg, trainer),
        _backends_line(model.cfg),
        f"output: {log_dir} (TensorBoard, checkpoints/, .nemo); {_start(model, trainer)}",
    ]


def _model_line(model: Any) -> str:
    cfg, counts = model.cfg, _parameters(model.model)
    shape = (
        f"{cfg.num_layers} layers, hidden {cfg.hidden_size}, {cfg.num_attention_heads} heads of {head_dim(cfg)}, "
        f"FFN {ffn_size(cfg)}, seq {cfg.seq_length}, {cfg.position_embedding}"
    )
    stage = " (this pipeline stage)" if cfg.parallel.pipeline_model_parallel_size > 1 else ""
    body = _millions(counts["total"] - counts["embeddings"])
    return f"model: {shape}; {_millions(counts['total'])} parameters, {body} without embeddings{stage}"


def _data_line(model: Any) -> str:
    blend = model.data_blend()
    total = sum(d.weight for d in blend)
    parts = [f"{d.name} {100 * d.weight / total:.1f}% ({_tokens(d.prefix):,} tokens)" for d in blend]
    source = "built-in corpus" if model.cfg.data.blend is None else "data.blend"
    return f"data ({source}): {', '.join(parts)}"


def _layout_line(cfg: Any, trainer: Any) -> str:
    tp, pp = cfg.parallel.tensor_model_parallel_size, cfg.parallel.pipeline_model_parallel_size
    world, steps = trainer.world_size, trainer.max_steps
    tokens = steps * cfg.global_batch_size * cfg.seq_length
    processes = f"{world} process{'es' if world > 1 else ''} on {trainer.strategy.root_device.type}"
    return (
        f"layout: {processes} (TP {tp} x PP {pp} x DP {world // (tp * pp)}), {resolve_engine(cfg)} engine, "
        f"{cfg.params_dtype} weights, precision {trainer.precision}; "
        f"global batch {cfg.global_batch_size} x {cfg.seq_length} tokens, {steps} steps ({tokens:,} tokens)"
    )


def _backends_line(cfg: Any) -> str:
    """The backends in use, and in one place the optional ones that are not installed."""
    from megatron.core.package_info import __version__

    used = (
        f"megatron-core {__version__} {cfg.transformer_impl} spec, {cfg.attention_backend} attention, "
        f"{torch.distributed.get_backend()} process groups"
    )
    optional = (
        ("Transformer Engine", compat.HAVE_TE),
        ("Apex", compat.HAVE_APEX),
        ("flash-attn", compat.HAVE_FLASH_ATTN),
    )
    missing = [name for name, have in optional if not have]
    if not missing:
        return f"backends: {used}"
    expected = " (expected without a GPU)" if not compat.HAVE_CUDA else ""
    return f"backends: {used}; not installed: {', '.join(missing)}{expected}"


def _start(model: Any, trainer: Any) -> str:
    if trainer.ckpt_path:
        return f"resuming from {trainer.ckpt_path}"
    if model.starts_from_growth:
        return f"starting from the grown checkpoint {model.grown_from}"
    return "starting from scratch"


@dataclass
class RunSummary:
    log_dir: str
    steps: int
    tokens: int
    wall_s: float
    train_loss: Optional[float] = None
    val_loss: Dict[str, float] = field(default_factory=dict)  # "all" and per dataset
    nemo: Optional[str] = None
    checkpoint: Optional[str] = None
    curves: Optional[str] = None


def summarize(model: Any, trainer: Any, log_dir: str, wall_s: float) -> RunSummary:
    """The run's final losses (Lightning's last logged values, whatever the logging interval), its
    outputs, and its loss curves (all resumes' TensorBoard scalars) drawn beside the logs."""
    summary = RunSummary(log_dir, trainer.global_step, model.consumed_samples * model.cfg.seq_length, wall_s)
    last = trainer.callback_metrics
    if "train_loss" in last:
        summary.train_loss = float(last["train_loss"])
    names = [("all", "val_loss")] + [(n, f"val_loss_{n}") for n in model.validation_names]
    summary.val_loss = {label: float(last[tag]) for label, tag in names if tag in last}
    checkpoints = os.path.join(log_dir, "checkpoints")
    nemo = os.path.join(checkpoints, f"{os.path.basename(log_dir.rstrip('/'))}.nemo")
    summary.nemo = nemo if os.path.exists(nemo) else None
    saved = sorted(glob.glob(os.path.join(checkpoints, "*-last")), key=os.path.getmtime)
    summary.checkpoint = saved[-1] if saved else None
    summary.curves = _draw_curves(log_dir, ["train_loss"] + [tag for _, tag in names])
    return summary


def _draw_curves(log_dir: str, tags: List[str]) -> Optional[str]:
    scalars = read_scalars(log_dir, tags)
    curves = {tag.replace("_loss", ""): tuple(zip(*points)) for tag, points in scalars.items() if points}
    if not curves:
        return None
    return save_panels(os.path.join(log_dir, CURVES), [Panel("train and validation loss", "step", curves=curves)])


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def summary_lines(s: RunSummary) -> List[str]:
    """The lines printed after the last step (rank 0)."""
    val = ", ".join(f"{k} {v:.3f}" for k, v in s.val_loss.items() if k != "all")
    losses = f"final train loss {s.train_loss:.3f}" if s.train_loss is not None else "no train loss logged"
    if "all" in s.val_loss:
        losses += f"; validation loss {s.val_loss['all']:.3f}" + (f" ({val})" if val else "")
    return [
        f"done: step {s.steps}, {s.tokens:,} tokens seen, {duration(s.wall_s)} wall time",
        f"  {losses}",
        f"  .nemo:        {s.nemo or '(none written)'}",
        f"  checkpoint:   {s.checkpoint or '(none written)'}",
        f"  TensorBoard:  tensorboard --logdir {s.log_dir}",
        f"  loss curves:  {s.curves or '(nothing logged)'}",
    ]


def next_commands(config_name: str, overrides: List[str], job: Any, checkpoint: Optional[str]) -> List[str]:
    """What to run next: resume or train longer, grow the result (MSG, width x2), train the grown
    model under a new name (its ramp a quarter of the run). `overrides` are the command line's."""
    args = "".join(f" {shlex.quote(o)}" for o in overrides if not o.startswith("trainer.max_steps="))
    other = "".join(f" {shlex.quote(o)}" for o in overrides if not o.startswith(("trainer.max_steps=", "name=")))
    train = f"python scripts/train.py --config-name {config_name}"
    m = job.model
    shape = f"model.hidden_size={2 * m.hidden_size} model.num_attention_heads={2 * m.num_attention_heads}"
    shape += f" model.ffn_hidden_size={2 * ffn_size(m)}"
    steps = job.trainer.max_steps
    grown = f"{job.name}_grown"
    return [
        "next:",
        f"  resume, or train longer:  {train}{args} trainer.max_steps={2 * steps}",
        f"  grow it (width x2, MSG):  python scripts/grow_checkpoint.py --checkpoint {checkpoint or '<checkpoint>'} "
        f"--config-name {config_name}{other} {shape} --output {grown}/",
        f"  train the grown model:    {train}{other} {shape} model.growth.init_from={grown}/ "
        f"model.growth.grow_steps={max(1, steps // 4)} trainer.max_steps={steps} name={grown}",
    ]
