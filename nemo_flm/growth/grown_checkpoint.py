"""The grown checkpoint: what one growth event hands to the next stage's training.

A sharded checkpoint directory (checkpoint/shards.py) in the full (TP=1) layout, written tensor
by tensor so that growth never holds the model twice: group `model` (grown weights), groups
`exp_avg` / `exp_avg_sq` (grown Adam moments, optional), and in its meta the plan, the samples
consumed so far and the Adam step. It is written under a temporary name and renamed when complete (atomic.py);
readers copy one tensor at a time into this rank's tensor-parallel shard, so any TP size can
start from it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, Mapping, Optional, Tuple, TypeVar

import torch
from torch import Tensor
from tqdm import tqdm

from nemo_flm import parallel
from nemo_flm.atomic import atomic_output
from nemo_flm.checkpoint.shards import ShardReader, ShardWriter
from nemo_flm.checkpoint.weights import MODEL, PREFIX
from nemo_flm.config import ffn_size
from nemo_flm.errors import ConfigError
from nemo_flm.growth.plan import GrowthPlan
from nemo_flm.model.sharding import global_names

T = TypeVar("T")


def write_grown_checkpoint(
    path: str,
    model_entries: Iterable[Tuple[str, Callable[[], Any]]],
    moment_entries: Iterable[Tuple[str, str, Callable[[], Tensor]]],
    plan: GrowthPlan,
    dims: Mapping[str, Optional[int]],
    step: Optional[float] = None,
    consumed_samples: int = 0,
    workers: int = 1,
) -> None:
    """Make and write every grown tensor (operators.grown_entries: name and a function making
    it), `workers` at a time on threads (the reads, copies, random draws and writes release the
    GIL), so memory stays near `workers` x (a tensor read + its grown copy). `moment_entries` may
    be empty (no optimizer state to carry). `dims` are the grown model's TP partition dims
    (model/sharding.py), for readers at TP > 1."""
    if os.path.exists(path):
        raise FileExistsError(f"grown checkpoint '{path}' exists: choose another output or delete it")
    if workers < 1:
        raise ConfigError(f"growth workers must be at least 1, got {workers}")
    jobs = [(MODEL, name, make) for name, make in model_entries] + list(moment_entries)
    with atomic_output(path) as tmp:
        writer = ShardWriter(tmp)
        written = _in_order((functools.partial(_write, writer, job, dims) for job in jobs), workers)
        bar = tqdm(written, total=len(jobs), desc="growing", unit=" tensors", disable=None)
        moments = 0
        for (group, name, _), entry in zip(jobs, bar):
            if entry is not None:  # megatron's `_extra_state` entries are dropped
                writer.record(group, name, entry)
                moments += group != MODEL
        writer.write_index(
            {
                "plan": dataclasses.asdict(plan),
                "consumed_samples": consumed_samples,
                "adam_step": float(step) if moments and step is not None else None,
            }
        )


def _write(writer: ShardWriter, job: Tuple[str, str, Callable[[], Any]], dims) -> Optional[Dict[str, Any]]:
    group, name, make = job
    value = make()
    return writer.write(group, name, value, dims.get(name)) if torch.is_tensor(value) else None


def _in_order(jobs: Iterable[Callable[[], T]], workers: int) -> Iterator[T]:
    """The results of `jobs`, in order, run `workers` at a time on threads; a job starts only
    when the result `workers` places before it has been taken, which bounds what is in memory."""
    with ThreadPoolExecutor(workers) as pool:
        window: Deque[Future] = deque()
        for job in jobs:
            window.append(pool.submit(job))
            if len(window) == workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def check_grown_checkpoint(cfg: Any) -> None:
    """`growth.init_from` must be a complete grown checkpoint of this config's shape: refused in one
    line before anything is built (its plan records the shape it was grown to)."""
    path = os.path.expanduser(cfg.growth.init_from)
    try:
        plan = read_grown_meta(path)["plan"]
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"growth.init_from '{path}' is not a grown checkpoint ({type(err).__name__}: {err}): "
            "write one with scripts/grow_checkpoint.py"
        ) from None
    grown = (plan.new_hidden, plan.new_ffn, plan.new_heads, len(plan.source))
    wanted = (cfg.hidden_size, ffn_size(cfg), cfg.num_attention_heads, cfg.num_layers)
    if grown != wanted:
        raise ConfigError(
            f"growth.init_from '{path}' was grown to (hidden, ffn, heads, layers) = {grown} but this config is "
            f"{wanted}: grow to this config's shape, or give this config the grown shape"
        )


def read_grown_meta(path: str) -> Dict[str, Any]:
    """The grown checkpoint's meta: plan (a GrowthPlan), consumed_samples, adam_step."""
    meta = dict(ShardReader(path).meta)
    meta["plan"] = GrowthPlan(**meta["plan"])
    return meta


def copy_weights(network: torch.nn.Module, path: str) -> None:
    """Copy the grown weights into `network` (this rank's layers at its TP shard), one tensor at a time."""
    reader = ShardReader(path)
    names = global_names(network)
    rank, size = parallel.tp_rank(), parallel.tp_size()
    with torch.no_grad():
        for name, param in network.named_parameters():
            param.copy_(reader.read(MODEL, names[name], rank, size))


def load_grown_state(engine: Any, path: str) -> None:
    """The grown Adam state (if the checkpoint has one) read into an engine's optimizer, each rank
    reading its own pieces (checkpoint/pieces.py: with megatron's distributed optimizer, only the
    ranges it owns), then the engine's step count and weight all-gather (finish_load)."""
    reader = ShardReader(path)
    step = reader.meta["adam_step"]
    if step is None:
        return
    engine.prepare_state()
    with torch.no_grad():
        for piece in engine.checkpoint_pieces(save=False, moments=True):
            group, name = _stored(reader, piece.keys)
            piece.tensor.copy_(reader.read_box(group, name, piece.offsets, piece.tensor.shape))
    engine.finish_load(step)


def _stored(reader: ShardReader, keys) -> Tuple[str, str]:
    """(group, name) of the first of `keys` the grown checkpoint holds (it names tensors as the
    network does, without FLMModel's prefix)."""
    for key in keys:
        group, name = key.split("/", 1)
        name = name.removeprefix(PREFIX)
        if name in reader.tensors.get(group, {}):
            return group, name
    raise ConfigError(f"grown checkpoint '{reader.root}' holds no '{keys[0]}': grow it again for this model")
