"""Growth with a TP change: a grown checkpoint written in the full (TP=1) layout and read by two
gloo ranks (TP=2) with masks at c = 0 reproduces the old TP=1 model's logits (float64)."""
import torch

from nemo_flm.growth.init_file import write_grown_init
from nemo_flm.model.sharding import partition_dims
from tests.helpers import run_ranks
from tests.unit.growth.test_function_preserving import GROWTHS, OLD, _grow, _logits


def _rank(rank, new_over, grown_dir, tokens_path):
    from nemo_flm import parallel
    from nemo_flm.growth.init_file import copy_weights, read_index
    from nemo_flm.growth.masks import GrowthMasks
    from nemo_flm.model.builder import build_model
    from tests.conftest import tiny_cfg

    cfg = tiny_cfg(**new_over, parallel={"tensor_model_parallel_size": 2})
    parallel.initialize(cfg.parallel, cfg.seed)
    model = build_model(cfg, growth_masks=GrowthMasks(read_index(grown_dir)["plan"], c=0.0)).eval()
    copy_weights(model, grown_dir)
    logits = parallel.gather_vocab(_logits(model, torch.load(tokens_path)))
    if rank == 0:
        torch.save(logits, tokens_path + ".out")
    parallel.shutdown()


def test_grown_checkpoint_read_at_tp2_preserves_logits(single_process, tmp_path):
    new_over = {**OLD, **GROWTHS["all"]}
    old, new, cfg, masks, state = _grow(OLD, new_over)
    write_grown_init(str(tmp_path / "grown"), state.items(), iter(()), masks.plan, partition_dims(new))
    tokens = torch.randint(0, cfg.vocab_size, (2, 2 * cfg.seq_length))
    torch.save(tokens, tmp_path / "tokens.pt")
    run_ranks(2, _rank, new_over, str(tmp_path / "grown"), str(tmp_path / "tokens.pt"))
    before, after = _logits(old, tokens), torch.load(tmp_path / "tokens.pt.out")
    torch.testing.assert_close(after, before, rtol=0, atol=1e-10 * before.abs().max().item())
