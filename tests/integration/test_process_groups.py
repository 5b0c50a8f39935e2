"""Process groups at scale: every group (torch's default and megatron's) waits
parallel.distributed_timeout_minutes, and the pipeline stages of a model built from scratch draw
different layers (a seed offset of 100 x the stage, Megatron-LM's: without it the middle stages of
PP >= 3, which draw nothing but layers, start identical), while the weights still do not
depend on the TP size (tests/integration/test_tensor_parallel.py)."""

import torch

from tests.helpers import end_ranks, run_ranks, tiny_cfg


def _rank(rank, out):
    from megatron.core import parallel_state

    from nemo_flm import parallel
    from nemo_flm.model.builder import build_chunks

    cfg = tiny_cfg(num_layers=4, parallel={"pipeline_model_parallel_size": 4, "distributed_timeout_minutes": 7})
    parallel.initialize(cfg.parallel, cfg.seed)
    groups = {
        "default": torch.distributed.distributed_c10d._get_default_group(),
        "pipeline": parallel.pp_group(),
        "data": parallel.dp_group(),
        "model": parallel_state.get_model_parallel_group(),
    }
    timeouts = {name: str(g._get_backend(torch.device("cpu")).options._timeout) for name, g in groups.items()}
    (chunk,) = build_chunks(cfg)
    layer = chunk.decoder.layers[0]
    torch.save({"timeouts": timeouts, "fc1": layer.mlp.linear_fc1.weight.detach().clone()}, f"{out}.{rank}")
    end_ranks()


def test_groups_time_out_as_configured_and_stages_draw_different_layers(tmp_path):
    run_ranks(4, _rank, str(tmp_path / "pp4"))
    stages = [torch.load(tmp_path / f"pp4.{rank}") for rank in range(4)]
    for result in stages:
        assert set(result["timeouts"].values()) == {"0:07:00"}, result["timeouts"]
    layers = [result["fc1"] for result in stages]  # global layers 0..3, one per stage
    assert all(not torch.equal(layers[i], layers[j]) for i in range(4) for j in range(i))
