"""A bf16 run on the megatron engine (bf16 weights, fp32 main weights and Adam moments in the
distributed optimizer: FLM's own precision) saved at DP4 and resumed at TP2 x PP2: every tensor
it saved comes back exactly, the fp32 main weights included (a resume that rebuilt them from the
bf16 weights would lose their low bits). An fp32 run's checkpoint (no main weights) resumed in
bf16 fills both the bf16 weights and the main weights from its weights. megatron's GPU machinery
runs on CPU through tests/cuda_on_cpu.py, in 4 gloo processes."""

import pytest
import torch

from tests.helpers import end_ranks, read_checkpoint, run_ranks, tiny_cfg, write_checkpoint

SHAPE = dict(num_layers=2, global_batch_size=8, micro_batch_size=2)
SAVED = dict()  # DP4: Adam sharded four ways
RESUMED = dict(tensor_model_parallel_size=2, pipeline_model_parallel_size=2)


def _engine(layout, dtype):
    from nemo_flm import parallel
    from nemo_flm.model.builder import as_network, build_chunks, model_chunks
    from nemo_flm.training.megatron_engine import MegatronEngine

    cfg = tiny_cfg(**SHAPE, params_dtype=dtype, parallel=layout)
    parallel.initialize(cfg.parallel, cfg.seed)
    return cfg, MegatronEngine(model_chunks(as_network(build_chunks(cfg))), cfg)


def _trained(rank, dtype, path):
    """Two steps at DP4 in `dtype`, then the checkpoint at `path`."""
    cfg, engine = _engine(SAVED, dtype)
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_length + 1), generator=torch.Generator().manual_seed(rank))
    batch = {
        "tokens": tokens[:, :-1],
        "labels": tokens[:, 1:],
        "loss_mask": torch.ones(2, cfg.seq_length),
        "position_ids": torch.arange(cfg.seq_length).expand(2, -1),
    }
    for _ in range(2):
        engine.train_step(batch)
    write_checkpoint(path, cfg, engine, 2)


def _resaved(source, path):
    """A bf16 engine at TP2 x PP2 resumes `source` and at once saves what it holds at `path`."""
    cfg, engine = _engine(RESUMED, "bf16")
    read_checkpoint(source, engine)
    write_checkpoint(path, cfg, engine, 2)


def _rank(rank, folder):
    from tests.cuda_on_cpu import cuda_on_cpu

    with cuda_on_cpu():
        _trained(rank, "bf16", f"{folder}/bf16.ckpt")
        _trained(rank, "fp32", f"{folder}/fp32.ckpt")
        _resaved(f"{folder}/bf16.ckpt", f"{folder}/bf16_again.ckpt")
        _resaved(f"{folder}/fp32.ckpt", f"{folder}/from_fp32.ckpt")
    end_ranks()


@pytest.fixture(scope="module")
def checkpoints(module_tmp, single_process):
    from nemo_flm.checkpoint.dcp_reader import TrainingCheckpointReader

    run_ranks(4, _rank, str(module_tmp))
    names = ("bf16", "fp32", "bf16_again", "from_fp32")
    return {name: TrainingCheckpointReader(str(module_tmp / name), {}) for name in names}


def _tensors(reader):
    return {(group, name): reader.read(group, name) for group in reader.tensors for name in reader.names(group)}


def test_a_bf16_dp4_checkpoint_resumes_at_tp2_pp2_with_its_fp32_main_weights(checkpoints):
    saved, again = _tensors(checkpoints["bf16"]), _tensors(checkpoints["bf16_again"])
    assert {group for group, _ in saved} == {"model", "main_param", "exp_avg", "exp_avg_sq"}
    assert saved.keys() == again.keys()
    for (group, name), before in saved.items():
        assert before.dtype == (torch.bfloat16 if group == "model" else torch.float32), (group, name)
        assert torch.equal(before, again[group, name]), (group, name)
    main = next(value for (group, _), value in saved.items() if group == "main_param" and value.dim() == 2)
    assert not torch.equal(main, main.bfloat16().float())  # the main weights hold more than bf16 does


def test_an_fp32_checkpoint_resumes_in_bf16_into_weights_and_main_weights(checkpoints):
    saved, resumed = _tensors(checkpoints["fp32"]), _tensors(checkpoints["from_fp32"])
    assert {group for group, _ in saved} == {"model", "exp_avg", "exp_avg_sq"}
    for (group, name), before in saved.items():
        if group == "model":
            assert torch.equal(resumed["main_param", name], before), name
            assert torch.equal(resumed["model", name], before.bfloat16()), name
        else:
            assert torch.equal(resumed[group, name], before), (group, name)
