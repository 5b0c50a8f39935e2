"""The LR sweep's bookkeeping (scaling/lr_transfer.py): the best LR per width and parametrization,
diverged runs, the verdicts and the table, on rows written here; and a run that diverges."""

import math

import pytest

from nemo_flm.scaling.lr_transfer import argmins, lr_grid, markdown_table, means, run, verdicts
from nemo_flm.scaling.sweep_data import SweepData
from nemo_flm.scaling.width_sweep import WidthSweep
from tests.helpers import random_batch


def _rows(losses):
    """{(parametrization, width): [held-out loss or None (diverged) per LR 2^-3..2^-1]}."""
    return [
        {
            "parametrization": p,
            "width": w,
            "lr": 2.0**e,
            "log2_lr": e,
            "held_out_loss": loss,
            "diverged": loss is None,
        }
        for (p, w), column in losses.items()
        for e, loss in zip((-3, -2, -1), column)
    ]


ROWS = _rows(
    {
        ("mup", 64): [5.0, 4.0, 4.5],
        ("mup", 128): [4.9, 4.1, 3.9],  # one grid step up: still "stays put"
        ("sp", 64): [5.0, 4.5, 4.0],
        ("sp", 128): [3.5, 4.2, None],  # two steps down, the largest LR diverged
    }
)


def test_the_best_lr_of_each_width_skips_diverged_runs():
    assert argmins(ROWS) == {("mup", 64): 0.25, ("mup", 128): 0.5, ("sp", 64): 0.5, ("sp", 128): 0.125}
    assert argmins(_rows({("sp", 64): [None, None, None]})) == {("sp", 64): None}


def test_verdicts_compare_the_moves_and_flag_an_optimum_at_the_grid_edge():
    lines = verdicts(argmins(ROWS), [0.125, 0.25, 0.5])
    assert lines == [
        "μP optimum moves by 1 grid step: 64: 2^-2, 128: 2^-1 (grid edge); an optimum at the grid's edge: "
        "widen the grid",
        "SP optimum moves by 2 grid steps: 64: 2^-1 (grid edge), 128: 2^-3 (grid edge); an optimum at the grid's edge: "
        "widen the grid",
        "μP moves 1, SP 2 grid steps: inconclusive (an optimum at the grid's edge)",
    ]
    # the README's measured means: μP 2^-7 at widths 64, 128, 256; SP 2^-7, 2^-8, 2^-8 on a grid 2^-10..2^-4
    measured = {("mup", 64): 2**-7, ("mup", 128): 2**-7, ("mup", 256): 2**-7}
    measured.update({("sp", 64): 2**-7, ("sp", 128): 2**-8, ("sp", 256): 2**-8})
    assert verdicts(measured, [2.0**e for e in range(-10, -3)]) == [
        "μP optimum stays put: 64: 2^-7, 128: 2^-7, 256: 2^-7",
        "SP optimum moves by 1 grid step: 64: 2^-7, 128: 2^-8, 256: 2^-8",
        "μP moves 0, SP 1 grid steps: μP transfers the LR better",
    ]
    grid = [2.0**e for e in range(-10, -3)]
    same = {("mup", 64): 2**-7, ("mup", 128): 2**-7, ("sp", 64): 2**-7, ("sp", 128): 2**-7}
    assert verdicts(same, grid)[-1] == "μP moves 0, SP 0 grid steps: no better transfer under μP at this grid"
    edge = {key: 2**-4 for key in same}
    assert "widen the grid" in verdicts(edge, grid)[0] and "inconclusive" in verdicts(edge, grid)[-1]


def test_the_table_bolds_each_columns_best_and_marks_diverged_runs():
    table = markdown_table(ROWS)
    assert table[0] == "| LR | μP 64 | μP 128 | SP 64 | SP 128 |"
    assert table[2] == "| 2^-3 | 5.000 | 4.900 | 5.000 | **3.500** |"
    assert table[4] == "| 2^-1 | 4.500 | **3.900** | **4.000** | diverged |"


def test_means_average_the_seeds_and_a_point_diverges_if_any_seed_did():
    runs = [
        {**row, "seed": seed, "train_loss": None if row["diverged"] else row["held_out_loss"] + 1}
        for seed, losses in ((1, [5.0, 4.0, 3.0]), (2, [6.0, 5.0, None]))
        for row in _rows({("mup", 64): losses})
    ]
    averaged = means(runs)
    assert [r["held_out_loss"] for r in averaged] == [5.5, 4.5, None]
    assert [r["train_loss"] for r in averaged] == [6.5, 5.5, None]
    assert [r["diverged"] for r in averaged] == [False, False, True] and {r["seeds"] for r in averaged} == {2}


def test_lr_grid_is_powers_of_two_and_an_empty_one_fails_in_one_line():
    assert lr_grid(-3, -1) == [0.125, 0.25, 0.5]
    with pytest.raises(ValueError, match=r"the LR grid 2\^-1..2\^-3 is empty"):
        lr_grid(-1, -3)


def test_a_run_that_turns_non_finite_is_recorded_as_diverged(single_process):
    sweep = WidthSweep(head_dim=16, base_width=32, seq_length=16, batch_size=2, vocab_size=256)
    batch = random_batch(2, 16, 256)
    data = SweepData(train=[batch] * 4, held_out=batch, vocab_size=256, shared_fraction=0.0)
    fine, wild = (run(sweep, 32, "sp", lr, data, warmup=0) for lr in (1e-3, 2.0**20))
    assert not fine["diverged"] and math.isfinite(fine["held_out_loss"])
    assert wild["diverged"] and wild["held_out_loss"] is None and wild["train_loss"] is None
