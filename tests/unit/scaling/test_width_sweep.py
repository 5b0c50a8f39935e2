"""Width sweeps (scaling/width_sweep.py, sweep_data.py): the widths a sweep accepts, the compact
vocabulary, and the shared point of the two parametrizations at the base width."""

import pytest
import torch

from nemo_flm.scaling.sweep_data import compact_vocab, remap
from nemo_flm.scaling.width_sweep import WidthSweep, build, check_widths, train
from tests.helpers import random_batch


@pytest.mark.parametrize(
    "widths, message",
    [
        ([64], r"at least 2 distinct widths, got \[64\]"),
        ([64, 64], r"at least 2 distinct widths, got \[64, 64\]"),
        ([64, 96, 100], r"widths \[100\] are not positive multiples of the head dim 32"),
        ([0, 64], r"widths \[0\] are not positive multiples of the head dim 32"),
    ],
)
def test_bad_widths_fail_in_one_line(widths, message):
    with pytest.raises(ValueError, match=message) as err:
        check_widths(widths, head_dim=32)
    assert "\n" not in str(err.value)


def test_compact_vocab_keeps_the_most_frequent_tokens_by_rank_and_shares_the_last_id():
    tokens = torch.tensor([[7, 7, 7, 3, 3, 100, 5]])
    batch = {"tokens": tokens, "labels": torch.tensor([[7, 3, 100, 9, 11, 12, 7]])}
    mapping = compact_vocab([batch], size=4)  # counts: 7 x5, 3 x3, 100 x2, then 5, 9, 11, 12 once
    assert mapping[[7, 3, 100]].tolist() == [0, 1, 2]
    assert mapping[[5, 9, 11, 12, 0, 100_000]].tolist() == [3] * 6
    mapped = remap(batch, mapping)
    assert mapped["tokens"].tolist() == [[0, 0, 0, 1, 1, 2, 3]] and mapped["labels"].tolist() == [[0, 1, 2, 3, 3, 3, 0]]


def test_mup_and_sp_are_the_same_model_at_the_base_width_and_differ_beyond(single_process):
    sweep = WidthSweep(head_dim=16, base_width=32, seq_length=16, batch_size=2, vocab_size=256)
    batch = random_batch(2, 16, 256)

    def losses(width, parametrization):
        cfg = sweep.config(width, parametrization, lr=1e-2, steps=3)
        assert cfg.num_attention_heads == width // 16
        return train(build(cfg), cfg, [batch] * 3)

    assert losses(32, "mup") == losses(32, "sp")
    assert losses(64, "mup") != losses(64, "sp")
