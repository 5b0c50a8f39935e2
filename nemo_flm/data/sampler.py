"""A resumable pre-training batch sampler (NeMo 3.0 no longer ships Megatron's).

Samples are consumed in order, one global batch per step; data-parallel rank r takes its
contiguous slice of each global batch. Every `iter()` starts at the live consumed-sample count
(read through a callable, because Lightning may re-create iterators when it resumes), so a resumed
run continues exactly where the interrupted one stopped: no sample repeated, none skipped.
"""

from __future__ import annotations

from typing import Callable, Iterator, List


class PretrainingBatchSampler:
    def __init__(
        self,
        total_samples: int,
        consumed_samples: Callable[[], int],
        global_batch_size: int,
        dp_rank: int,
        dp_size: int,
    ):
        if global_batch_size % dp_size:
            raise ValueError(f"global batch {global_batch_size} is not divisible by data-parallel size {dp_size}")
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // dp_size
        self.dp_rank = dp_rank

    def __len__(self) -> int:
        return max(0, self.total_samples - self.consumed_samples()) // self.global_batch_size

    def __iter__(self) -> Iterator[List[int]]:
        start = self.consumed_samples() + self.dp_rank * self.local_batch_size
        for _ in range(len(self)):
            yield list(range(start, start + self.local_batch_size))
            start += self.global_batch_size


class EvalBatchSampler:
    """The first `num_samples` samples split contiguously over the data-parallel ranks, in batches
    of at most `batch_size` (the last one may be shorter): every sample is evaluated exactly once
    at any data-parallel size, so validation losses do not depend on the layout (a staged run may
    change it between stages and compare the validation before and after a growth)."""

    def __init__(self, num_samples: int, batch_size: int, dp_rank: int, dp_size: int):
        self.start = dp_rank * num_samples // dp_size
        self.stop = (dp_rank + 1) * num_samples // dp_size
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-(self.stop - self.start) // self.batch_size)

    def __iter__(self) -> Iterator[List[int]]:
        for first in range(self.start, self.stop, self.batch_size):
            yield list(range(first, min(first + self.batch_size, self.stop)))
