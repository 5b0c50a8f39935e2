"""The width-sweep scripts' shared command line (scaling/sweep_cli.py): counts below their minimum
fail in one line naming the option."""

import argparse

import pytest

from nemo_flm.scaling.sweep_cli import add_arguments, require_at_least


def test_counts_below_their_minimum_fail_in_one_line_naming_the_option():
    parser = argparse.ArgumentParser()
    add_arguments(parser, widths=(64, 128), out="out")
    parser.add_argument("--held-out", type=int, default=0)
    args = parser.parse_args(["--layers", "2"])
    require_at_least(args, layers=1, batch=8)
    with pytest.raises(ValueError, match=r"^--held-out must be >= 1, got 0$"):
        require_at_least(args, layers=1, held_out=1)
