"""Growth with a TP change: a grown checkpoint written in the full (TP=1) layout and read by two
gloo ranks (TP=2) with masks at c = 0 reproduces the old TP=1 model's logits (float64)."""

import torch

from nemo_flm.growth.grown_checkpoint import write_grown_checkpoint
from nemo_flm.model.sharding import partition_dims
from tests.helpers import (
    GROWTH_OLD,
    GROWTHS,
    end_ranks,
    entries,
    gather_vocab,
    grow_pair,
    logits_of,
    run_ranks,
    tiny_cfg,
)


def _rank(rank, new_over, grown_dir, tokens_path):
    from nemo_flm import parallel
    from nemo_flm.growth.grown_checkpoint import copy_weights, read_grown_meta
    from nemo_flm.growth.masks import GrowthMasks, build_masked_model

    cfg = tiny_cfg(**new_over, parallel={"tensor_model_parallel_size": 2})
    parallel.initialize(cfg.parallel, cfg.seed)
    model = build_masked_model(cfg, GrowthMasks(read_grown_meta(grown_dir)["plan"], c=0.0)).eval()
    copy_weights(model, grown_dir)
    logits = gather_vocab(logits_of(model, torch.load(tokens_path)))
    if rank == 0:
        torch.save(logits, tokens_path + ".out")
    end_ranks()


def test_grown_checkpoint_read_at_tp2_preserves_logits(single_process, tmp_path):
    new_over = {**GROWTH_OLD, **GROWTHS["all"]}
    old, new, cfg, masks, state = grow_pair(GROWTH_OLD, new_over)
    write_grown_checkpoint(str(tmp_path / "grown"), entries(state), iter(()), masks.plan, partition_dims(new))
    tokens = torch.randint(0, cfg.vocab_size, (2, 2 * cfg.seq_length))
    torch.save(tokens, tmp_path / "tokens.pt")
    run_ranks(2, _rank, new_over, str(tmp_path / "grown"), str(tmp_path / "tokens.pt"))
    before, after = logits_of(old, tokens), torch.load(tmp_path / "tokens.pt.out")
    torch.testing.assert_close(after, before, rtol=0, atol=1e-10 * before.abs().max().item())
