"""The pre-training sampler: in-order global batches, DP slices, resume without repeats or gaps."""

from nemo_flm.data.sampler import PretrainingBatchSampler


def _all(consumed, dp_size, total=40, gbs=8):
    return [list(PretrainingBatchSampler(total, lambda: consumed, gbs, r, dp_size)) for r in range(dp_size)]


def test_dp_ranks_partition_each_global_batch():
    ranks = _all(0, dp_size=2)
    for step, (a, b) in enumerate(zip(*ranks)):
        assert a + b == list(range(step * 8, step * 8 + 8))
    assert len(ranks[0]) == 5


def test_resume_continues_without_repeat_or_gap():
    state = {"consumed": 0}
    sampler = PretrainingBatchSampler(40, lambda: state["consumed"], 8, 0, 1)
    seen = []
    for batch in sampler:
        seen += batch
        state["consumed"] += 8
        if state["consumed"] == 16:
            break
    seen += [i for batch in sampler for i in batch]  # a fresh iterator starts at the live count
    assert seen == list(range(40))
    assert len(sampler) == 3  # consumed is still 16: a new iterator would yield 3 more batches


def test_eval_sampler_covers_every_sample_once_at_any_dp_size():
    from nemo_flm.data.sampler import EvalBatchSampler

    for dp_size in (1, 2, 3, 8):
        batches = [b for r in range(dp_size) for b in EvalBatchSampler(10, 4, r, dp_size)]
        assert sorted(i for b in batches for i in b) == list(range(10)), dp_size
        assert all(0 < len(b) <= 4 for b in batches)
    assert len(EvalBatchSampler(10, 4, 0, 1)) == 3 and list(EvalBatchSampler(10, 4, 0, 1))[-1] == [8, 9]
