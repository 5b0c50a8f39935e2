"""Shared fixtures: one gloo process group for the session, tiny configs, one thread per test."""
import os
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")


def tiny_cfg(**overrides):
    """A tiny FLM config (vocab <= 1k, hidden <= 64), dropout off, validated."""
    from nemo_flm.config import load_model_config

    base = dict(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=256, seq_length=32,
                vocab_size=1000, hidden_dropout=0.0, attention_dropout=0.0, micro_batch_size=2,
                global_batch_size=4)
    parallel = overrides.pop("parallel", {})
    base.update(overrides)
    base["parallel"] = parallel
    return load_model_config(base)


@pytest.fixture(scope="session")
def single_process():
    """megatron parallel state for one CPU process (TP=PP=DP=1)."""
    from nemo_flm import parallel

    torch.set_num_threads(int(os.environ.get("FLM_TEST_THREADS", "2")))
    parallel.initialize(tiny_cfg().parallel, seed=1234)
    yield


@pytest.fixture
def build(single_process):
    """Build a tiny model with the given overrides, seeded."""
    from nemo_flm import parallel
    from nemo_flm.model.builder import build_model

    def _build(**overrides):
        cfg = tiny_cfg(**overrides)
        parallel.seed_everything(cfg.seed)
        return build_model(cfg).eval(), cfg

    return _build
