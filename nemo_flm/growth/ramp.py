"""Starting a stage from a grown checkpoint, and the MSG mask ramp as a Lightning callback.

`start_from_grown` builds the grown model: with a ramp (`growth.grow_steps` > 0) the masked
model at c = 0, which computes the previous stage's function exactly; with the explicit opt-in
`growth.no_ramp` the plain model, whose new entries are live at once. `MaskRamp` then sets
c = step / grow_steps before every training step and, when c reaches 1 (every mask is 1), folds:
the very same parameters move into a plain-spec model built on the meta device, so the rest of
the stage, the .nemo, exports and inference carry no mask code. No copy is made and the
optimizer keeps its parameters and state (FLMModel.replace_network points the engine at the plain network).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Optional, Tuple

import lightning.pytorch as pl
import torch

from nemo_flm.growth.grown_checkpoint import read_grown_meta
from nemo_flm.growth.masks import GrowthMasks, build_masked_model
from nemo_flm.model.builder import as_network, build_chunks

log = logging.getLogger(__name__)


def start_from_grown(cfg: Any, path: str) -> Tuple[torch.nn.Module, Optional[GrowthMasks], int]:
    """(this rank's grown network (model chunks: builder.as_network), its masks or None, samples
    consumed by earlier stages). The network's weights are not read here: a stage that resumes
    its own checkpoint never needs them (FLMModel.setup reads them for a stage that starts)."""
    meta = read_grown_meta(path)
    if cfg.growth.grow_steps > 0:
        masks = GrowthMasks(meta["plan"], c=0.0)
        network = as_network(build_chunks(cfg, partial(build_masked_model, masks=masks)))
    else:  # config validation allows this only with growth.no_ramp
        log.warning(
            "growth.no_ramp: starting from '%s' without the MSG mask ramp; the new entries act at once, "
            "so the model does not compute the previous stage's function",
            path,
        )
        masks, network = None, as_network(build_chunks(cfg))
    return network, masks, int(meta["consumed_samples"])


def fold(network: torch.nn.Module, cfg: Any) -> torch.nn.Module:
    """The plain-spec network holding `network`'s very parameters (valid once every mask is 1)."""
    with torch.device("meta"):
        plain = as_network(build_chunks(cfg))
    for name, param in network.named_parameters():
        owner, _, leaf = name.rpartition(".")
        plain.get_submodule(owner).register_parameter(leaf, param)
    return plain


class MaskRamp(pl.Callback):
    """c = global_step / grow_steps before each training step (a resumed stage continues its ramp
    from its step); at c = 1 the module's `.model` is folded into the plain spec."""

    def __init__(self, masks: GrowthMasks, grow_steps: int):
        self.masks: Optional[GrowthMasks] = masks
        self.grow_steps = grow_steps

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.masks is None:
            return
        self.masks.c = min(1.0, trainer.global_step / self.grow_steps)
        pl_module.log("growth_mask", self.masks.c, batch_size=1)
        if self.masks.c >= 1.0:
            pl_module.replace_network(fold(pl_module.model, pl_module.cfg))
            self.masks = None
