"""FLMModel: the NeMo ModelPT that wires Lightning and exp_manager to the FLM functions.

It does no math itself: the network (this rank's model chunks) is built by model/builder.py, a
step is run by an engine (training/engine.py: megatron-core's DDP, distributed optimizer and
pipeline schedules on GPUs, a plain loop on CPU), data comes from data/datasets.py and process
groups from parallel.py. Optimization is manual: one optimizer step per Lightning step, with the
micro-batches inside the engine. Its one collective, the validation sums' reduce over data
parallel, runs on the model's device.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from nemo.core.classes import ModelPT
from nemo.core.classes.common import ALLOWED_TARGET_PREFIXES
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from nemo_flm import parallel
from nemo_flm.checkpoint.lightning_io import FLMCheckpointIO
from nemo_flm.checkpoint.nemo_file import FLMSaveRestoreConnector
from nemo_flm.config import load_model_config
from nemo_flm.config.blend import Dataset
from nemo_flm.data.datasets import build_train_dataset, build_valid_datasets, collate, data_blend
from nemo_flm.data.sampler import EvalBatchSampler, PretrainingBatchSampler
from nemo_flm.errors import ConfigError
from nemo_flm.flops import train_flops_per_token
from nemo_flm.growth.grown_checkpoint import copy_weights, load_grown_state
from nemo_flm.growth.ramp import MaskRamp, start_from_grown
from nemo_flm.model.builder import as_network, build_chunks, model_chunks
from nemo_flm.training.checkpointing import attach, restore
from nemo_flm.training.engine import build_engine, eval_sums
from nemo_flm.training.nonfinite import NonFiniteError
from nemo_flm.training.optim import build_scheduler, schedule_lr
from nemo_flm.training.throughput import throughput_monitor

# NeMo's restore_from only instantiates targets on its allow-list: add ours, never disable the check.
if "nemo_flm." not in ALLOWED_TARGET_PREFIXES:
    ALLOWED_TARGET_PREFIXES.append("nemo_flm.")


class FLMModel(ModelPT):
    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        cfg = load_model_config(cfg)
        super().__init__(cfg=cfg, trainer=trainer)
        self._save_restore_connector = FLMSaveRestoreConnector()
        parallel.initialize(cfg.parallel, cfg.seed)
        self._ramp: Optional[MaskRamp] = None
        self.grown_from: Optional[str] = None  # the grown checkpoint this stage starts from (Adam state too)
        self._grown_weights_read = False
        self._sample_offset = 0  # samples consumed by earlier stages of a staged run
        if cfg.growth.init_from and not self._is_model_being_restored():
            self.grown_from = os.path.expanduser(cfg.growth.init_from)
            self.model, masks, self._sample_offset = start_from_grown(cfg, self.grown_from)
            self._ramp = MaskRamp(masks, cfg.growth.grow_steps) if masks is not None else None
            self._cfg.growth.init_from = None  # the weights now live in the model: a .nemo restores as a plain model
        else:
            self.model = as_network(build_chunks(cfg))
        self._engine = None  # built with the optimizer (configure_optimizers), after the move to the device
        self.skipped_updates = 0  # steps whose update was skipped (non-finite, optim.on_nonfinite: skip)
        self.automatic_optimization = False
        self.consumed_samples = self._sample_offset
        self.validation_names: List[str] = []
        self._val_sums: Dict[str, torch.Tensor] = {}
        self._data_blend: Optional[List[Dataset]] = None

    @property
    def starts_from_growth(self) -> bool:
        """A stage beginning from a grown checkpoint (not resuming one that already began)."""
        return self.grown_from is not None and self.trainer is not None and self.trainer.ckpt_path is None

    def setup(self, stage: Optional[str] = None) -> None:
        """Lightning's first hook of validate and fit, once the resume is decided: a stage that
        starts from growth reads its grown weights here, once; one that resumes its own
        checkpoint reads that instead, and the grown checkpoint not at all."""
        super().setup(stage)
        if self.starts_from_growth and not self._grown_weights_read:
            copy_weights(self.model, self.grown_from)
            self._grown_weights_read = True

    @property
    def flops_per_batch(self) -> float:
        """Training FLOPs of one global batch on this device (read by the throughput monitor)."""
        tokens = self.cfg.global_batch_size * self.cfg.seq_length
        return tokens * train_flops_per_token(self.cfg) / self.trainer.world_size

    def configure_callbacks(self) -> List[Callback]:
        """Throughput/MFU logging, and the MSG mask ramp of a stage that starts from growth."""
        monitor = throughput_monitor(self.cfg.global_batch_size, self.cfg.seq_length, self.trainer.world_size)
        return [c for c in (monitor, self._ramp) if c is not None]

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        tokens: torch.Tensor,
        position_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        inference_context=None,
    ) -> torch.Tensor:
        """Logits [b, s, vocab] (vocab-sharded under TP), or per-token losses with labels."""
        if position_ids is None:
            position_ids = torch.arange(tokens.shape[1], device=tokens.device)[None].expand_as(tokens)
        return self.model(tokens, position_ids, None, labels=labels, inference_context=inference_context)

    # -------------------------------------------------------------------- data
    def setup_training_data(self, train_data_config: Any = None) -> None:
        """Data comes from cfg.data and is built lazily in train_dataloader (after a resume)."""

    def setup_validation_data(self, val_data_config: Any = None) -> None:
        """Validation data comes from cfg.data; built lazily in val_dataloader."""

    def _loader(self, dataset, sampler) -> DataLoader:
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=self.cfg.data.num_workers)

    def data_blend(self) -> List[Dataset]:
        """The training datasets (names, prefixes, weights); the built-in corpus is preprocessed
        once here, on rank 0 first."""
        if self._data_blend is None:
            self._data_blend = parallel.rank_zero_first(lambda: data_blend(self.cfg.data))
        return self._data_blend

    def train_dataloader(self) -> DataLoader:
        gbs = self.cfg.global_batch_size
        total = self._sample_offset + self.trainer.max_steps * gbs
        dataset = build_train_dataset(self.cfg.data, self.data_blend(), self.cfg.seq_length, total)
        sampler = PretrainingBatchSampler(
            total, lambda: self.consumed_samples, gbs, parallel.dp_rank(), parallel.dp_size()
        )
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> List[DataLoader]:
        """One loader per blend dataset over the first eval_samples of its validation split (all of it
        when shorter), every sample once whatever the data-parallel size, the same ones every time."""
        n = self.cfg.data.eval_samples
        datasets = build_valid_datasets(self.cfg.data, self.data_blend(), self.cfg.seq_length, n)
        counts = {name: min(n, len(ds)) for name, ds in datasets.items() if ds is not None}
        self.validation_names = list(counts)
        for name, count in counts.items():
            if count < parallel.dp_size():
                raise ConfigError(
                    f"'{name}' validation has {count} samples for {parallel.dp_size()} data-parallel "
                    "ranks: raise data.eval_samples (every rank needs one)"
                )
        return [
            self._loader(
                datasets[name],
                EvalBatchSampler(count, self.cfg.micro_batch_size, parallel.dp_rank(), parallel.dp_size()),
            )
            for name, count in counts.items()
        ]

    # ---------------------------------------------------------------- training
    def configure_optimizers(self):
        self._engine = build_engine(model_chunks(self.model), self.cfg)
        optimizer = self._engine.optimizer
        if self.starts_from_growth:  # a resumed stage reads its own checkpoint's state instead
            load_grown_state(self._engine, self.grown_from)
        scheduler = build_scheduler(optimizer, self.cfg.optim, self.cfg.global_batch_size)
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]

    def replace_network(self, network: torch.nn.Module) -> None:
        """Swap in a network holding the very same parameters (the MSG fold, growth/ramp.py)."""
        self.model = network
        if self._engine is not None:
            self._engine.rebind(model_chunks(network))

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        step = self.trainer.global_step + 1
        try:
            loss, grad_norm = self._engine.train_step(batch, self.optimizers().step, self._checkpoint_copied)
        except NonFiniteError as err:
            raise NonFiniteError(f"step {step}: {err}") from None
        if self._engine.skipped:
            logging.warning("step %d: non-finite loss or gradients: update skipped (optim.on_nonfinite: skip)", step)
            self.skipped_updates += 1
        scheduler = self.lr_schedulers()
        lr = schedule_lr(scheduler.optimizer)  # the configured schedule's; μP groups train at multiples
        scheduler.step()
        self.consumed_samples += self.cfg.global_batch_size
        metrics = {
            "train_loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "consumed_samples": float(self.consumed_samples),
            "skipped_updates": float(self.skipped_updates),
        }
        self.log_dict(metrics, prog_bar=False, batch_size=1)
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=1)
        return torch.tensor(loss)

    def _checkpoint_copied(self) -> None:
        """Before the update: an asynchronous checkpoint's copy of the weights and Adam state,
        overlapped with this step's forward and backward, must be complete."""
        io = self.trainer.strategy.checkpoint_io
        if isinstance(io, FLMCheckpointIO):
            io.wait_for_copy()

    # -------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def validation_step(self, batch: Dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self.validation_names[dataloader_idx]
        sums = eval_sums(model_chunks(self.model), batch, self.cfg).double()
        self._val_sums[name] = self._val_sums[name] + sums if name in self._val_sums else sums

    def on_validation_epoch_end(self) -> None:
        if not self._val_sums:
            return
        sums = torch.stack([self._val_sums[name] for name in self.validation_names])
        sums = parallel.all_reduce(sums, parallel.dp_group()).cpu()
        metrics = {
            f"val_loss_{name}": (s[0] / s[1].clamp_min(1)).item() for name, s in zip(self.validation_names, sums)
        }
        metrics["val_loss"] = (sums[:, 0].sum() / sums[:, 1].sum().clamp_min(1)).item()
        # a stage that starts from growth validates its grown model before any step (training/run.py):
        # logged apart, it is compared with the previous stage's final validation (growth/report.py)
        suffix = "_after_growth" if self.starts_from_growth and self.trainer.state.fn == TrainerFn.VALIDATING else ""
        self.log_dict({k + suffix: v for k, v in metrics.items()}, prog_bar=False, batch_size=1)
        self.log("val", metrics["val_loss"], prog_bar=True, logger=False, batch_size=1)
        self._val_sums = {}

    # ------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """This rank's pieces of the weights and Adam state, which every rank writes in parallel
        into a checkpoint any layout can resume or grow from (training/checkpointing.py)."""
        checkpoint["consumed_samples"] = self.consumed_samples
        attach(checkpoint, self.model, self._engine)
        # Lightning saves its logging step before incrementing it for the current batch, so a
        # resumed run would log every step one behind the uninterrupted run (and overwrite the
        # last logged one); with one optimizer step per batch it equals global_step.
        loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict")
        if loop is not None:
            loop["_batches_that_stepped"] = checkpoint["global_step"]

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Read this rank's pieces into the parameters and the engine's optimizer state (the
        strategies restore after setup, so the engine exists)."""
        self.consumed_samples = int(checkpoint.get("consumed_samples", 0))
        restore(checkpoint, self.model, self._engine, self.state_dict())

    def save_to(self, save_path: str) -> None:
        """Every rank takes part (each TP rank writes its shards); the .nemo is written under a
        temporary name and renamed when complete (checkpoint/nemo_file.py). A run stopped during
        the MSG ramp writes none: its masks are not part of a .nemo, which restores the plain model."""
        if self._ramp is not None and self._ramp.masks is not None:
            logging.warning(
                "no .nemo written to %s: the run stopped during the MSG ramp (c = %.3f); resume it to finish the ramp",
                save_path,
                self._ramp.masks.c,
            )
            return
        if self._engine is not None:  # overlap_param_gather defers the last update's all-gather
            self._engine.sync_weights()
        self._save_restore_connector.save_to(self, os.path.abspath(os.path.expanduser(save_path)))

    @classmethod
    def restore_from(cls, restore_path: str, *args, save_restore_connector=None, **kwargs):
        """NeMo's restore_from, reading the sharded weights of a nemo_flm .nemo by default."""
        connector = save_restore_connector or FLMSaveRestoreConnector()
        return super().restore_from(restore_path, *args, save_restore_connector=connector, **kwargs)

    @classmethod
    def list_available_models(cls) -> List:
        """No pretrained FLM checkpoints are published in NeMo format."""
        return []
