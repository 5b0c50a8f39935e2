"""The data a job reads, made ready once before training, without a collective.

Building the built-in corpus and megatron's sample indices (which documents and tokens make each
sample the job will draw, in which order) is work for one process. Global rank 0 does it before
any process group exists and then writes a marker; the other ranks wait for the marker on the
filesystem (up to parallel.distributed_timeout_minutes), so no barrier holds 191 ranks while one
works, and no collective can time out. megatron then finds every index cached. The indices live
beside the data by default (data_cfg.index_cache_dir, data/datasets.py): a cache that only rank 0's
node can see is named, in one line, on the ranks of the other nodes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

from omegaconf import OmegaConf

from nemo_flm import parallel
from nemo_flm.atomic import atomic_output
from nemo_flm.data.datasets import (
    blend_datasets,
    build_train_dataset,
    build_valid_datasets,
    data_blend,
    data_fingerprint,
    index_cache_base,
)
from nemo_flm.errors import ConfigError

POLL_SECONDS = 1.0


def _marker(model_cfg: Any, train_samples: int) -> str:
    """The marker of this request (same path on every rank, computable before the data exists): of
    the whole data section (the blend's weights included: they change megatron's blended index),
    the sequence length and the number of training samples."""
    data = model_cfg.data
    prefixes = [d.prefix for d in blend_datasets(data)]
    request = [prefixes, OmegaConf.to_container(data, resolve=True), model_cfg.seq_length, train_samples]
    name = "ready-" + hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(index_cache_base(data, prefixes), name)


def _current(marker: str, prefixes) -> bool:
    """The marker is there and was written for the data as it is now (its .idx fingerprint)."""
    try:
        with open(marker) as handle:
            return handle.read().strip() == data_fingerprint(prefixes)
    except OSError:  # no marker yet, or the data is not there yet
        return False


def prepare_data(model_cfg: Any, train_samples: int) -> None:
    """Global rank 0 builds the corpus and the indices of `train_samples` training samples and of
    the validation samples; the other ranks wait until it has. In a process whose groups already
    exist (a later stage of a staged run) megatron's own rank-0-first build does it, with every
    rank present."""
    if parallel.started():
        return
    data = model_cfg.data
    marker = _marker(model_cfg, train_samples)
    if parallel.launch_rank() != 0:
        _wait(marker, [d.prefix for d in blend_datasets(data)], model_cfg.parallel.distributed_timeout_minutes)
        return
    try:
        os.makedirs(os.path.dirname(marker), exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cannot write megatron's index cache at '{os.path.dirname(marker)}' ({err.strerror}): set "
            "model.data.index_cache_dir to a folder every node shares"
        ) from None
    with parallel.alone():
        blend = data_blend(data)
        build_train_dataset(data, blend, model_cfg.seq_length, train_samples)
        build_valid_datasets(data, blend, model_cfg.seq_length, data.eval_samples)
    with atomic_output(marker) as tmp, open(tmp, "w") as handle:
        handle.write(data_fingerprint([d.prefix for d in blend]) + "\n")


def _wait(marker: str, prefixes, minutes: int) -> None:
    started = time.monotonic()
    while not _current(marker, prefixes):
        waited = time.monotonic() - started
        if waited > minutes * 60:
            raise ConfigError(
                f"rank {parallel.launch_rank()}: global rank 0 did not make the data ready in {minutes} min, or "
                f"this node cannot see '{marker}': put the data and model.data.index_cache_dir on storage every "
                "node shares"
            )
        if int(waited) % 60 == 0:
            logging.info("waiting for global rank 0 to build the data indices (%s)", marker)
        time.sleep(POLL_SECONDS)
