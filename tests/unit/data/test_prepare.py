"""The data made ready once before training: global rank 0 builds megatron's indices beside the
data while the other ranks wait for its marker on the filesystem, with no process group at all."""

import json
import os
import time

import pytest

from tests.helpers import run_ranks, tiny_cfg
from tests.unit.data.test_datasets import write_dataset


def _rank(rank, prefix, out):
    import torch.distributed as dist

    from nemo_flm.data.prepare import prepare_data

    cfg = tiny_cfg(seq_length=16, data={"blend": [prefix], "split": "80,20,0", "eval_samples": 4})
    if rank == 0:
        time.sleep(3.0)  # a slow build: the other rank must wait for it
    prepare_data(cfg, 64)
    json.dump({"returned": time.time(), "group": dist.is_initialized()}, open(f"{out}.{rank}", "w"))


@pytest.mark.slow
def test_rank_zero_builds_the_indices_beside_the_data_and_the_others_wait_for_its_marker(tmp_path):
    prefix = tmp_path / "data" / "text"
    write_dataset(tmp_path / "src", prefix, [f"document {i}: " + "word " * 30 for i in range(40)])
    run_ranks(2, _rank, str(prefix), str(tmp_path / "out"))
    (marker,) = (tmp_path / "data" / "index-cache").glob("ready-*")
    first, second = (json.load(open(tmp_path / f"out.{r}")) for r in range(2))
    assert not first["group"] and not second["group"]  # no collective was involved
    assert second["returned"] >= os.path.getmtime(marker) >= first["returned"] - 5
    cached = [p for p in (tmp_path / "data" / "index-cache").rglob("*.npy")]
    assert any("train" in p.name for p in cached) and any("valid" in p.name for p in cached)


def test_the_marker_names_the_whole_request():
    """Another blend weighting builds another blended index: its marker must differ, or the other
    ranks would take the old marker for the new build."""
    from nemo_flm.data.prepare import _marker

    base = tiny_cfg()
    reweighted = tiny_cfg(data={"corpus": {"weights": {"en": 0.9, "zh": 0.1}}})
    assert dict(base.data.corpus.weights) != dict(reweighted.data.corpus.weights)
    assert _marker(base, 64) != _marker(reweighted, 64)
    assert _marker(base, 64) != _marker(base, 128)
    assert _marker(base, 64) == _marker(tiny_cfg(), 64)
