"""A quiet console: third-party output that is expected on the machine in use is filtered before
the imports that make it, so that what a run prints first is what it is doing (training/summary.py).

What goes: the "Transformer Engine and Apex are not installed" warnings megatron-core repeats at
import (the start lines say once which backends are missing), NeMo's telemetry notices, Hydra's
working-directory notice, megatron's dataset-index lines, NeMo's and Lightning's INFO lines (the
start lines give the device, layout and output directory), exp_manager's notes on version folders,
on starting without a checkpoint and on monitoring a validation value, Lightning's advice to
sync_dist logged values (FLMModel all-reduces them itself), the checkpoint callback's note that the
first step-N checkpoint precedes the first validation (so has no val_loss), and a megatron-core
deprecation its own defaults trigger. Real warnings still show. Entry scripts call `quiet_startup` first;
NEMO_FLM_VERBOSE=1 keeps everything.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

EXPECTED_WARNINGS = (
    r"Transformer Engine and Apex are not installed",
    r"Apex is not installed",
    r"full scope is deprecated",  # megatron-core's own TransformerConfig default
    r"It is recommended to use `self.log\(",  # FLMModel all-reduces its metrics over data parallel
    # a checkpoint every N steps is saved before that step's validation runs: the first has no val_loss yet
    r"`ModelCheckpoint\(monitor='val_loss'\)` could not find the monitored key",
)
EXPECTED_NEMO_WARNINGS = re.compile(
    r"No version folders would be created|There were no checkpoints found|"
    r"The checkpoint callback was told to monitor a validation value"
)
QUIET_LOGGERS = {
    "nv_one_logger": logging.ERROR,  # NeMo's telemetry: "OneLogger: ...", "No exporters were provided"
    "megatron.core.datasets": logging.WARNING,  # index-building lines, several per dataset and split
    "lightning.pytorch.utilities.rank_zero": logging.WARNING,  # "GPU available: ...", "`Trainer.fit` stopped"
}


class _NeMoNoise(logging.Filter):
    """NeMo's INFO lines and its expected warnings (NeMo resets its logger's level, not its filters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO and not EXPECTED_NEMO_WARNINGS.search(record.getMessage())


def quiet_startup() -> None:
    """Filter the expected noise; call before importing NeMo, megatron-core or Lightning."""
    if os.environ.get("NEMO_FLM_VERBOSE", "") not in ("", "0"):
        return
    for pattern in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger("nemo_logger").addFilter(_NeMoNoise())
