"""The coordinate check (scaling/coord_check.py) tells μP from SP on small widths: after a few
steps at a high LR, μP's hidden activations and logits keep their size across widths and SP's grow.

The bands are from measurement (widths 32-256, 3 steps, LR 1e-2, random tokens): μP's largest
max/min over widths at the last step was 1.9 (an MLP output; layer outputs 1.35, logits 1.3), SP's
layer outputs spread 14-19x with log-log slopes 1.3-1.4 and its logits 4.9x (slope 0.9)."""

import pytest

from nemo_flm.scaling.coord_check import MODULES, across_widths, coord_data, slope, spread
from nemo_flm.scaling.width_sweep import WidthSweep
from tests.helpers import random_batch

WIDTHS = (32, 64, 128, 256)
STEPS = 3
SEQ, BATCH, VOCAB = 32, 4, 1000
MUP_BAND = 2.5  # μP: max/min of l1 over widths, every hidden module and the logits


@pytest.fixture(scope="module")
def rows(single_process):
    sweep = WidthSweep(head_dim=16, base_width=WIDTHS[0], seq_length=SEQ, batch_size=BATCH, vocab_size=VOCAB)
    return coord_data(sweep, WIDTHS, lr=1e-2, batch=random_batch(BATCH, SEQ, VOCAB), steps=STEPS)


def _last_step(rows, parametrization, module):
    return across_widths(rows, parametrization, module, STEPS)


def _modules(rows, pattern):
    return [m for m in dict.fromkeys(r["module"] for r in rows) if pattern(m)]


def test_every_recorded_module_at_every_width_and_step(rows):
    modules = _modules(rows, MODULES.fullmatch)
    assert len(modules) == 9  # embedding, 2 x (linear_proj, linear_fc2, layer), final LayerNorm, logits
    assert len(rows) == 2 * len(WIDTHS) * STEPS * len(modules)


def test_mup_hidden_activations_and_logits_stay_in_a_band_across_widths(rows):
    for module in _modules(rows, lambda m: m.startswith("decoder.layers") or m == "output_layer"):
        l1 = _last_step(rows, "mup", module)
        assert spread(l1) < MUP_BAND, (module, l1)


def test_sp_layer_outputs_and_logits_grow_with_width(rows):
    for module in _modules(rows, lambda m: m.startswith("decoder.layers") and m.count(".") == 2):
        l1 = _last_step(rows, "sp", module)
        assert spread(l1) > 3 * MUP_BAND and slope(l1) > 0.8, (module, l1)
    logits = _last_step(rows, "sp", "output_layer")
    assert spread(logits) > 1.5 * MUP_BAND and slope(logits) > 0.5, logits
