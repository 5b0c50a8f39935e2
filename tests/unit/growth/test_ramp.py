"""Starting from a grown checkpoint: with a ramp, the masked model at c = 0 computes the old
function; with the explicit `no_ramp` opt-in, a plain model whose new entries act at once, and a
warning that says so. A checkpoint that is not grown, or grown to another shape, and a ramp that
does not end inside the stage are refused in one line before anything is built."""

import logging

import pytest
import torch

from nemo_flm.config import check_ramp_fits
from nemo_flm.errors import ConfigError
from nemo_flm.growth.grown_checkpoint import check_grown_checkpoint, copy_weights, write_grown_checkpoint
from nemo_flm.growth.ramp import start_from_grown
from nemo_flm.model.sharding import partition_dims
from tests.helpers import GROWTH_OLD, GROWTHS, entries, grow_pair, logits_of, tiny_cfg

NEW = {**GROWTH_OLD, **GROWTHS["all"]}


def _grown_checkpoint(tmp_path):
    old, grown, cfg, masks, state = grow_pair(GROWTH_OLD, NEW)
    path = str(tmp_path / "grown")
    write_grown_checkpoint(path, entries(state), iter(()), masks.plan, partition_dims(grown), consumed_samples=96)
    return old, path


def _masked(model):
    return any("Masked" in type(m).__name__ for m in model.modules())


def test_start_with_a_ramp_is_the_old_function(single_process, tmp_path):
    old, path = _grown_checkpoint(tmp_path)
    model, masks, consumed = start_from_grown(tiny_cfg(**NEW, growth={"init_from": path, "grow_steps": 10}), path)
    copy_weights(model, path)
    assert _masked(model) and masks.c == 0.0 and consumed == 96
    tokens = torch.randint(0, 1000, (2, 32))
    before = logits_of(old, tokens)
    torch.testing.assert_close(logits_of(model.eval(), tokens), before, rtol=0, atol=1e-10 * before.abs().max().item())


def test_start_without_a_ramp_is_plain_and_says_so(single_process, tmp_path, caplog):
    old, path = _grown_checkpoint(tmp_path)
    with caplog.at_level(logging.WARNING, logger="nemo_flm.growth.ramp"):
        model, masks, _ = start_from_grown(tiny_cfg(**NEW, growth={"init_from": path, "no_ramp": True}), path)
    copy_weights(model, path)
    assert masks is None and not _masked(model)
    assert "without the MSG mask ramp" in caplog.text
    tokens = torch.randint(0, 1000, (2, 32))
    assert (logits_of(model.eval(), tokens) - logits_of(old, tokens)).abs().max() > 1e-2  # not the old function


def test_init_from_that_is_not_a_grown_checkpoint_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is not a grown checkpoint") as err:
        check_grown_checkpoint(tiny_cfg(**NEW, growth={"init_from": str(tmp_path), "grow_steps": 10}))
    assert "\n" not in str(err.value)


def test_init_from_grown_to_another_shape_is_refused(single_process, tmp_path):
    _, path = _grown_checkpoint(tmp_path)
    other = {**GROWTH_OLD, **GROWTHS["width"]}  # the checkpoint was grown to "all" (5 layers, FFN 160)
    with pytest.raises(ConfigError, match=r"was grown to \(hidden, ffn, heads, layers\) = \(64, 160, 4, 5\)"):
        check_grown_checkpoint(tiny_cfg(**other, growth={"init_from": path, "grow_steps": 10}))


def test_ramp_must_end_inside_the_stage():
    growth = tiny_cfg(growth={"grow_steps": 10}).growth
    check_ramp_fits(growth, 11, "the job")  # masks fold at the start of step 11
    with pytest.raises(ConfigError, match="growth.grow_steps 10 is not below the job's max_steps 10"):
        check_ramp_fits(growth, 10, "the job")
