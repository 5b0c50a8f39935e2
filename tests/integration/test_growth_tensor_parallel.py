"""Growth under TP=2: the state grown in the TP=1 layout, sharded over two gloo ranks with masks at
c = 0, reproduces the old model's logits (float64)."""
import dataclasses

import torch

from tests.helpers import run_ranks
from tests.unit.growth.test_function_preserving import GROWTHS, OLD, _grow, _logits


def _rank(rank, new_over, path):
    from nemo_flm import parallel
    from nemo_flm.growth.masks import GrowthMasks
    from nemo_flm.growth.plan import GrowthPlan
    from nemo_flm.model.builder import build_model
    from nemo_flm.model.sharding import shard_of
    from tests.conftest import tiny_cfg

    saved = torch.load(path)
    cfg = tiny_cfg(**new_over, parallel={"tensor_model_parallel_size": 2})
    parallel.initialize(cfg.parallel, cfg.seed)
    model = build_model(cfg, growth_masks=GrowthMasks(GrowthPlan(**saved["plan"]), c=0.0)).eval()
    model.load_state_dict(shard_of(model, saved["state"]))
    logits = parallel.gather_vocab(_logits(model, saved["tokens"]))
    if rank == 0:
        torch.save(logits, path + ".out")
    parallel.shutdown()


def test_growth_preserves_logits_under_tp2(single_process, tmp_path):
    new_over = {**OLD, **GROWTHS["all"]}
    old, _, cfg, masks, state = _grow(OLD, new_over)
    tokens = torch.randint(0, cfg.vocab_size, (2, 2 * cfg.seq_length))
    path = str(tmp_path / "grown.pt")
    torch.save({"plan": dataclasses.asdict(masks.plan), "state": state, "tokens": tokens}, path)
    run_ranks(2, _rank, new_over, path)
    before, after = _logits(old, tokens), torch.load(path + ".out")
    torch.testing.assert_close(after, before, rtol=0, atol=1e-10 * before.abs().max().item())
