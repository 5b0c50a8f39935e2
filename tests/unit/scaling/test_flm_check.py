"""FLM's published schedule through the planner's FLOPs accounting gives the paper's 72% saving."""

import pytest

from nemo_flm.compose import compose_job
from nemo_flm.config import load_shape_config
from nemo_flm.scaling.flm_check import flm_saving

# (stage, hidden, tokens): 80 layers, seq 2048, 100352 vocab rows; 16B/51B shapes reconstructed
STAGES = [("flm_16b", 4096, 245.37e9), ("flm_51b", 7168, 39.64e9), ("flm_101b", 10240, 26.54e9)]


def megatron_flops_per_token(h, layers=80, s=2048, v=100352):
    """Megatron's closed form 72 L h^2 (1 + s/(6h) + V/(12 L h)) (attention width h, FFN 4h)."""
    return 72 * layers * h**2 * (1 + s / (6 * h) + v / (12 * layers * h))


def test_flm_schedule_saves_72_percent_at_equal_mfu():
    jobs = [(name, load_shape_config(compose_job(name).model), compose_job(name).train_tokens) for name, _, _ in STAGES]
    check = flm_saving(jobs)
    grown = sum(megatron_flops_per_token(h) * tokens for _, h, tokens in STAGES)
    scratch = megatron_flops_per_token(10240) * sum(tokens for _, _, tokens in STAGES)
    assert check["saving"] == pytest.approx(1 - grown / scratch, rel=1e-9)
    assert abs(check["saving"] - 0.72) < 0.01 and abs(check["saving"] - check["published_saving"]) < 0.01
