"""The megatron engine (DDP + distributed optimizer + pipeline schedules) against the local engine
in one process: each layout gives the single-process losses and, after two optimizer steps, the
single-process weights. The TP2 x PP2 run then writes its checkpoint, which one process reads at
TP1, resumes on the single-process trajectory and grows. megatron's GPU machinery runs on CPU
through tests/cuda_on_cpu.py; all layouts share one world of 4 gloo processes (DP fills what
TP x PP leaves)."""

import pytest
import torch

from nemo_flm.checkpoint.weights import MOMENTS
from tests.helpers import end_ranks, local_engine, read_checkpoint, run_ranks, tiny_cfg, write_checkpoint

STEPS = 2
# Adam's first updates are nearly lr x sign(grad): at eps 1e-8 a gradient that cancels to ~1e-10
# flips with the summation order (measured: 8e-6 apart between the engines in one process);
# eps 1e-5 keeps that rounding below 1e-7, so 1e-6 on the weights tests the reductions, not Adam
# μP on (m = 4: hidden matrices at LR / 4, model/mup.py): every layout keeps the per-role groups
SHAPE = dict(
    num_layers=4, global_batch_size=8, micro_batch_size=2, optim=dict(eps=1e-5), use_mup=True, mup_base_width=16
)
LAYOUTS = {
    "tp2": dict(tensor_model_parallel_size=2),
    "tp2-sp": dict(tensor_model_parallel_size=2, sequence_parallel=True),
    "pp2-1f1b": dict(pipeline_model_parallel_size=2),
    "pp2-vp2": dict(pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=2),
    "dp4-sharded-adam": dict(),
    "dp4-overlap-param-gather": dict(overlap_param_gather=True),
    "tp2-pp2": dict(tensor_model_parallel_size=2, pipeline_model_parallel_size=2),
}
CHECKPOINTED = "tp2-pp2"  # its checkpoint is read at TP1 by the local engine
SHARDED = "dp4-sharded-adam"  # its checkpoint is resumed at TP2 x PP2 by the megatron engine
SAVED_LR = 3e-4


def _batch(cfg):
    """Random tokens; loss masks that give the data-parallel ranks unequal token counts, so a
    mean of per-rank means would differ from the global token mean."""
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, cfg.vocab_size, (cfg.global_batch_size, cfg.seq_length + 1), generator=g)
    mask = torch.ones(cfg.global_batch_size, cfg.seq_length)
    mask[0, 5:] = 0
    mask[5, :20] = 0
    return {
        "tokens": tokens[:, :-1],
        "labels": tokens[:, 1:],
        "loss_mask": mask,
        "position_ids": torch.arange(cfg.seq_length).expand(cfg.global_batch_size, -1),
    }


def _train(engine, batch, dp_rank, dp_size):
    size = batch["tokens"].shape[0] // dp_size
    mine = {k: v[dp_rank * size : (dp_rank + 1) * size] for k, v in batch.items()}
    return [engine.train_step(mine)[0] for _ in range(STEPS)]


def _save(engine, network, cfg, path):
    """The checkpoint Lightning would write at this step (FLMModel's hook, FLMCheckpointIO on every
    rank), and the .nemo weights FLMModel.save_to would write."""
    from nemo_flm import parallel
    from nemo_flm.checkpoint.nemo_file import write_weights

    write_checkpoint(path, cfg, engine, STEPS)
    if parallel.dp_rank() == 0:
        holder = torch.nn.Module()  # what FLMModel is to write_weights: the network under `.model`
        holder.model = network
        write_weights(holder, f"{path}.nemo_weights")


def _resume(path, batch):
    """The megatron engine at TP2 x PP2 resumes the DP4 run's checkpoint (Adam sharded 4 ways,
    each rank reading only the ranges it owns now): (the LR it restored, the loss of its next
    step)."""
    from nemo_flm import parallel
    from nemo_flm.model.builder import as_network, build_chunks, model_chunks
    from nemo_flm.training.megatron_engine import MegatronEngine
    from nemo_flm.training.optim import schedule_lr

    cfg = tiny_cfg(**SHAPE, parallel=LAYOUTS[CHECKPOINTED])
    parallel.initialize(cfg.parallel, cfg.seed)
    network = as_network(build_chunks(cfg))
    engine = MegatronEngine(model_chunks(network), cfg)
    read_checkpoint(path, engine)
    restored = schedule_lr(engine.inner)
    for group in engine.inner.param_groups:
        group["lr"] = cfg.optim.lr * group["lr_mult"]
    return restored, _train(engine, batch, parallel.dp_rank(), parallel.dp_size())[0]


def _nemo_round_trip(path, weights):
    """An FLMModel at TP2 x PP2 holding `weights` saves a .nemo (each rank its layers' shards) and
    restores it at the same layout: whether every local tensor came back exactly."""
    from nemo_flm import parallel
    from nemo_flm.model.sharding import global_names, partition_dims
    from nemo_flm.training.flm_model import FLMModel

    model = FLMModel(tiny_cfg(**SHAPE, parallel=LAYOUTS[CHECKPOINTED]))
    names, dims = global_names(model.model), partition_dims(model.model)
    with torch.no_grad():
        for key, param in model.model.named_parameters():
            full, dim = weights[names[key]], dims[key]
            param.copy_(full if dim is None else full.chunk(parallel.tp_size(), dim)[parallel.tp_rank()])
    model.save_to(path)
    restored = FLMModel.restore_from(path, map_location="cpu")
    mine = dict(restored.model.named_parameters())
    return all(torch.equal(param, mine[key]) for key, param in model.model.named_parameters())


def _rank(rank, path):
    from nemo_flm import parallel
    from nemo_flm.model.builder import as_network, build_chunks, model_chunks
    from nemo_flm.model.sharding import global_names, partition_dims
    from nemo_flm.training.engine import eval_sums
    from nemo_flm.training.megatron_engine import MegatronEngine
    from tests.cuda_on_cpu import cuda_on_cpu

    ref = torch.load(path)
    results = {}
    with cuda_on_cpu():
        for name, layout in LAYOUTS.items():
            cfg = tiny_cfg(**SHAPE, parallel=layout)
            parallel.initialize(cfg.parallel, cfg.seed)
            network = as_network(build_chunks(cfg))
            names, dims = global_names(network), partition_dims(network)
            with torch.no_grad():
                for key, param in network.named_parameters():
                    full = ref["initial"][names[key]]
                    dim = dims[key]
                    param.copy_(full if dim is None else full.chunk(parallel.tp_size(), dim)[parallel.tp_rank()])
            engine = MegatronEngine(model_chunks(network), cfg)
            losses = _train(engine, ref["batch"], parallel.dp_rank(), parallel.dp_size())
            engine.sync_weights()  # overlap_param_gather: the last update's all-gather is still to come
            worst = 0.0
            for key, param in network.named_parameters():
                full, dim = ref["final"][names[key]], dims[key]
                want = full if dim is None else full.chunk(parallel.tp_size(), dim)[parallel.tp_rank()]
                worst = max(worst, (param.detach() - want).abs().max().item())
            short = {k: v[:3] for k, v in ref["batch"].items()}  # a short last validation batch
            results[name] = (losses, worst, eval_sums(model_chunks(network), short, cfg).tolist())
            if name == SHARDED:
                for group in engine.inner.param_groups:  # a scheduled LR, which a resume must restore
                    group["lr"] = SAVED_LR * group["lr_mult"]
            if name in (CHECKPOINTED, SHARDED):
                _save(engine, network, cfg, f"{path}.{name}.ckpt")
        results["resumed"] = _resume(f"{path}.{SHARDED}.ckpt", ref["batch"])
        results["nemo_round_trip"] = _nemo_round_trip(f"{path}.nemo", ref["initial"])
    torch.save(results, f"{path}.rank{rank}")
    end_ranks()


@pytest.fixture(scope="module")
def reference(module_tmp, single_process):
    """The local engine in one process: initial weights, the batch, losses and final weights."""
    from nemo_flm import parallel
    from nemo_flm.model.builder import build_model
    from nemo_flm.training.engine import eval_sums
    from nemo_flm.training.local_engine import LocalEngine

    cfg = tiny_cfg(**SHAPE)
    parallel.seed_everything(cfg.seed)
    model = build_model(cfg)
    initial = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    batch = _batch(cfg)
    engine = LocalEngine(model, cfg.optim, cfg.micro_batch_size)
    losses = _train(engine, batch, 0, 1)
    final = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    evaluated = eval_sums([model], {k: v[:3] for k, v in batch.items()}, cfg).tolist()
    moments = {n: {m: engine.optimizer.state[p][m].clone() for m in MOMENTS} for n, p in model.named_parameters()}
    third = _train(engine, batch, 0, 1)[0]  # the step after the checkpoint
    path = module_tmp / "reference.pt"
    torch.save({"initial": initial, "batch": batch, "final": final}, path)
    return path, losses, moments, third, evaluated


@pytest.fixture(scope="module")
def layouts(reference):
    path = reference[0]
    run_ranks(4, _rank, str(path))
    return path


def test_every_layout_gives_the_single_process_losses_and_weights(reference, layouts):
    """...and validates a short batch (3 samples, micro-batch 2) to the same loss sum and tokens."""
    losses, evaluated = reference[1], reference[4]
    for rank in range(4):
        results = torch.load(f"{layouts}.rank{rank}")
        results.pop("resumed"), results.pop("nemo_round_trip")
        assert set(results) == set(LAYOUTS)
        for name, (got, worst, sums) in results.items():
            assert got == pytest.approx(losses, rel=1e-5), (name, rank, got, losses)
            assert worst < 1e-6, (name, rank, worst)
            assert sums == pytest.approx(evaluated, rel=1e-5), (name, rank, sums, evaluated)


def test_a_dp4_checkpoint_resumes_at_tp2_pp2_on_the_megatron_engine(reference, layouts):
    """Adam state sharded over 4 DP ranks, each writing its own ranges, read by TP x PP x DP ranks
    at other ranges: the next step's loss is the single-process run's; the LR in force when saving
    is restored."""
    third = reference[3]
    for rank in range(4):
        restored, loss = torch.load(f"{layouts}.rank{rank}")["resumed"]
        assert restored == SAVED_LR
        assert loss == pytest.approx(third, rel=1e-5), (rank, loss, third)


def test_a_tp2_pp2_nemo_restores_at_tp2_pp2_and_at_tp1(reference, layouts):
    """FLMModel.save_to / restore_from under pipeline parallelism: the 4 ranks get their own
    tensors back, and one process restoring at TP1 gets the whole model."""
    from nemo_flm.training.flm_model import FLMModel

    assert all(torch.load(f"{layouts}.rank{rank}")["nemo_round_trip"] for rank in range(4))
    path = f"{layouts}.nemo"
    cfg = FLMModel.restore_from(path, return_config=True)
    cfg.parallel.tensor_model_parallel_size = cfg.parallel.pipeline_model_parallel_size = 1
    restored = FLMModel.restore_from(path, override_config_path=cfg, map_location="cpu")
    initial = torch.load(layouts)["initial"]
    for name, param in restored.model.named_parameters():
        torch.testing.assert_close(param.detach(), initial[name], rtol=0, atol=0)


def test_a_tp2_pp2_checkpoint_resumes_at_tp1_and_grows(reference, layouts, tmp_path):
    """Written by 4 ranks of the megatron engine (each stage its own layers, each DP rank its own
    ranges of the weights and Adam state), read in one process by the local engine: the same
    weights and Adam moments, and the next step's loss is the single-process run's; the .nemo
    weights the same ranks wrote hold the same tensors; offline growth reads the checkpoint too."""
    from nemo_flm.checkpoint.shards import ShardReader
    from nemo_flm.growth.offline import grow_checkpoint
    from nemo_flm.growth.operators import default_fill, iter_grown
    from nemo_flm.growth.plan import make_plan
    from nemo_flm.model.builder import build_model

    _, _, moments, third, _ = reference
    ref = torch.load(layouts)
    ckpt_path = f"{layouts}.{CHECKPOINTED}.ckpt"
    cfg = tiny_cfg(**SHAPE)
    model = build_model(cfg)
    engine = local_engine(cfg, model)
    read_checkpoint(ckpt_path, engine)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), ref["final"][name], rtol=0, atol=1e-6)
        for m in MOMENTS:
            got, want = engine.optimizer.state[param][m], moments[name][m]  # rounding: relative to the tensor's scale
            assert (got - want).abs().max() <= 1e-4 * want.abs().max(), (name, m)
    weights = ShardReader(f"{ckpt_path}.nemo_weights")  # the .nemo's weights, written by the same 4 ranks
    assert set(weights.names("model")) == {f"model.{n}" for n, _ in model.named_parameters()}
    for name, param in model.named_parameters():
        torch.testing.assert_close(weights.read("model", f"model.{name}"), param.detach(), rtol=0, atol=0)
    assert _train(engine, ref["batch"], 0, 1)[0] == pytest.approx(third, rel=1e-5)

    grown_cfg = tiny_cfg(**{**SHAPE, "hidden_size": 128, "num_attention_heads": 8, "num_layers": 5})  # μP m = 8
    grow_checkpoint(ckpt_path, grown_cfg, str(tmp_path / "grown"))
    plan = make_plan(cfg, grown_cfg)
    expected = dict(iter_grown(ref["final"], plan, default_fill(grown_cfg.init_method_std, 0, 8.0)))
    grown = ShardReader(str(tmp_path / "grown"))
    assert set(grown.names("model")) == set(expected) and grown.names("exp_avg")
    for name, tensor in expected.items():
        torch.testing.assert_close(grown.read("model", name), tensor, rtol=0, atol=1e-6)
