"""The memory/FLOPs estimator: parameter counts by hand and against a built model, FLM's layouts
against 80 GB, and the estimate against a measured run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_flm.compose import compose_job
from tests.helpers import tiny_cfg

SCRIPT = str(Path(__file__).parents[2] / "scripts" / "estimate.py")


def test_101b_parameters_per_gpu_by_hand():
    """TP4 x PP4: 20 layers of (12h^2 + 7h)/4 sharded + 6h replicated; the last stage's output layer
    V*h/4 plus the final LayerNorm (2h) outweighs the first stage's embedding V*h/4."""
    from nemo_flm.config import load_model_config
    from nemo_flm.estimate import params_per_gpu

    cfg = load_model_config(compose_job("flm_101b").model)
    h, v = 10240, 100352
    assert params_per_gpu(cfg, 4, 4) == 20 * ((12 * h * h + 7 * h) // 4 + 6 * h) + v * h // 4 + 2 * h


def test_parameters_per_gpu_at_tp1_pp1_is_the_models_size(build):
    from nemo_flm.estimate import params_per_gpu

    model, cfg = build(num_layers=3, ffn_hidden_size=160)
    assert params_per_gpu(cfg, 1, 1) == sum(p.numel() for p in model.parameters())


def test_non_embedding_parameters_of_a_built_model(build):
    """N of the scaling laws: everything but the input and output embeddings (final LayerNorm in)."""
    from nemo_flm.config import padded_vocab_size
    from nemo_flm.estimate import non_embedding_params

    model, cfg = build(num_layers=3, ffn_hidden_size=160)
    embeddings = model.embedding.word_embeddings.weight.numel() + model.output_layer.weight.numel()
    assert embeddings == 2 * padded_vocab_size(cfg) * cfg.hidden_size
    assert non_embedding_params(cfg) == sum(p.numel() for p in model.parameters()) - embeddings


def test_flm_layouts_fit_80gb_only_with_the_distributed_optimizer():
    from nemo_flm.config import load_model_config
    from nemo_flm.estimate import estimate

    for name in ("flm_16b", "flm_51b", "flm_101b"):
        result = estimate(load_model_config(compose_job(name).model), 192)
        assert result["total_distributed_gb"] < 80 < result["total_gb"], (name, result)


def test_recompute_and_sequence_parallel_shrink_activations():
    from nemo_flm.estimate import estimate

    plain = estimate(tiny_cfg(parallel={"tensor_model_parallel_size": 2}), 2)
    sp = estimate(tiny_cfg(parallel={"tensor_model_parallel_size": 2, "sequence_parallel": True}), 2)
    assert sp["activations_gb"] < plain["activations_gb"]
    assert plain["activations_recompute_gb"] < plain["activations_gb"]


@pytest.mark.slow
def test_estimate_is_within_15_percent_of_a_measured_run():
    out = subprocess.run(
        [sys.executable, SCRIPT, "--config-name", "flm_tiny", "--measure", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    ratio = float(re.search(r"ratio ([\d.]+)", out.stdout).group(1))
    assert 0.85 <= ratio <= 1.15, out.stdout
