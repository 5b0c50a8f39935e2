"""An inference job's config (conf/flm_inference.yaml) to a ready Generator, its default sampling
parameters and the server's limits: one reading for scripts/flm_eval.py and scripts/flm_server.py."""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from nemo_flm import parallel
from nemo_flm.data.tokenizer import FLMTokenizer, check_vocab_covers_tokenizer
from nemo_flm.errors import ConfigError

from .api import ServerLimits
from .generator import Generator
from .loading import load_for_inference
from .sampling import SamplingParams


def model_path(cfg: DictConfig) -> str:
    """The .nemo or checkpoint to load: exactly one of gpt_model_file and checkpoint_dir."""
    if cfg.checkpoint_dir:
        path = os.path.join(cfg.checkpoint_dir, cfg.checkpoint_name or "")
    elif cfg.gpt_model_file:
        path = cfg.gpt_model_file
    else:
        raise ConfigError("set gpt_model_file (a .nemo) or checkpoint_dir (+ checkpoint_name)")
    if not os.path.exists(path) and not os.path.exists(path.removesuffix(".ckpt")):
        raise ConfigError(f"model '{path}' not found: train one first (python scripts/train.py) or point at yours")
    if cfg.pipeline_model_parallel_size not in (-1, 1):
        raise ConfigError("inference runs on one pipeline stage: set pipeline_model_parallel_size to -1 or 1")
    return path


def sampling_defaults(cfg: DictConfig) -> SamplingParams:
    return SamplingParams.from_mapping(OmegaConf.to_container(cfg.inference, resolve=True))


def server_limits(cfg: DictConfig) -> ServerLimits:
    return ServerLimits.from_mapping(OmegaConf.to_container(cfg.server_limits, resolve=True))


def load_generator(cfg: DictConfig) -> Generator:
    """The configured model, loaded at this rank's TP shard, behind a Generator."""
    loaded = load_for_inference(model_path(cfg), cfg.tensor_model_parallel_size, cfg.model_overrides)
    check_vocab_covers_tokenizer(loaded.cfg)
    return Generator(loaded.network, FLMTokenizer(), cfg.max_context)


def check_single_process() -> None:
    """The server answers requests on one process: tensor-parallel ranks would each need every request."""
    if parallel.tp_size() > 1:
        raise ConfigError("the server runs the model on one process: set tensor_model_parallel_size=1")
