"""Shared fixtures: one gloo process group for the session, tiny models, one thread per test.
Helpers that tests import live in tests/helpers.py."""

import os
import shutil
import warnings

import pytest
import torch

from tests.helpers import tiny_cfg

warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")


def pytest_collection_modifyitems(config, items):
    """`gpu`-marked tests need CUDA: skipped, with the reason, on machines without it. Every test
    under tests/integration/ (processes, training runs, servers, a SLURM cluster) is `slow`, as are
    the unit tests marked so: `pytest -m "not slow"` is the fast subset."""
    skip = pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (run scripts/gpu_check.sh on a GPU machine)"
    )
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request):
    """A directory for one module's shared runs, removed when the module ends: checkpoints of the
    100K-vocabulary test models weigh ~150 MB each, and a suite that kept them all would fill a
    CI disk (pytest.ini removes each passing test's own tmp_path the same way)."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)
