"""Checkpoint save and resume measured per rank on CPU processes, and projected to FLM-101B.

    python scripts/bench_checkpoint.py                      # 4 and 8 processes, a ~1.3 GB checkpoint
    python scripts/bench_checkpoint.py --nproc 4 --hidden 256 --out bench_checkpoint.json

Each run starts N gloo processes on this machine with megatron's engine (DDP, the distributed
optimizer; on CPU inside tests/cuda_on_cpu.py, the tests' CUDA-on-CPU harness, since megatron's
buffers ask for CUDA), trains one step, and saves through the production path (FLMModel's attach,
then FLMCheckpointIO on every rank): synchronously, then asynchronously, then the 'last' copy NeMo
saves beside a top-k checkpoint. Then N new processes, as a restarted job, resume the synchronous
checkpoint. Per rank: bytes written (the kernel's write_bytes) and bytes read (the checkpoint
reader's count, checked against rchar), peak anonymous memory during each (over the rank's
memory before it), the seconds the training loop is blocked by a save (async: the call, plus the
next step's wait for the copy before its update), and whether the resumed
weights and Adam state equal the saved ones. Then FLM-101B's layout (conf/flm_101b.yaml, TP4 x
PP4 x DP12 on 24 nodes of 8 GPUs) projected from nemo_flm/estimate.py's parameter count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # tests/cuda_on_cpu.py

GB = 1e9
NODE_GBPS = 2.0  # the projection's storage bandwidth per node, GB/s


def _io() -> dict:
    with open("/proc/self/io") as handle:
        return {k: int(v) for k, v in (line.split(": ") for line in handle.read().splitlines())}


def _config(args, tp: int):
    from nemo_flm.config import load_model_config

    return load_model_config(
        dict(
            num_layers=args.layers,
            hidden_size=args.hidden,
            num_attention_heads=8,
            seq_length=128,
            micro_batch_size=1,
            global_batch_size=8,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            optim=dict(lr=1e-4),
            parallel=dict(tensor_model_parallel_size=tp, engine="megatron", overlap_grad_reduce=False),
        )
    )


def _engine(cfg):
    from nemo_flm import parallel
    from nemo_flm.model.builder import as_network, build_chunks, model_chunks
    from nemo_flm.training.megatron_engine import MegatronEngine

    parallel.initialize(cfg.parallel, cfg.seed)
    network = as_network(build_chunks(cfg))
    return network, MegatronEngine(model_chunks(network), cfg)


def _checksum(engine) -> float:
    """A sum over what this rank holds of the weights and Adam state."""
    return float(sum(p.tensor.double().sum() for p in engine.checkpoint_pieces(save=False, moments=True)))


def _trainer_state(cfg, engine) -> dict:
    from omegaconf import OmegaConf

    return {
        "optimizer_states": [engine.optimizer.state_dict()],
        "state_dict": {},
        "global_step": 1,
        "consumed_samples": cfg.global_batch_size,
        "hyper_parameters": {"cfg": OmegaConf.to_container(cfg)},
    }


def _batch(cfg, size: int) -> dict:
    tokens = torch.randint(0, cfg.vocab_size, (size, cfg.seq_length + 1))
    positions = torch.arange(cfg.seq_length).expand(size, -1)
    loss_mask = torch.ones(size, cfg.seq_length)
    return {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": loss_mask, "position_ids": positions}


def _save(io, cfg, engine, path: str) -> None:
    """What Lightning does on every rank at a checkpoint event: FLMModel's hook, then the strategy's save."""
    from nemo_flm.training.checkpointing import attach

    checkpoint = _trainer_state(cfg, engine)
    attach(checkpoint, engine.network, engine)
    io.save_checkpoint(checkpoint, path)


def _measured(action):
    """(seconds, bytes written, peak anonymous memory over the start) of action()."""
    from nemo_flm.host_memory import PeakAnon, anon_rss

    start, io = anon_rss(), _io()
    with PeakAnon() as peak:
        began = time.perf_counter()
        action()
        seconds = time.perf_counter() - began
    return seconds, _io()["write_bytes"] - io["write_bytes"], peak.peak - start


def _save_rank(rank: int, args, folder: str, tp: int) -> None:
    from nemo_flm import parallel
    from nemo_flm.checkpoint.lightning_io import FLMCheckpointIO
    from tests.cuda_on_cpu import cuda_on_cpu

    torch.set_num_threads(1)
    with cuda_on_cpu():
        cfg = _config(args, tp)
        network, engine = _engine(cfg)
        batch = _batch(cfg, cfg.global_batch_size // parallel.dp_size())
        engine.train_step(batch)
        sync_io, async_io = FLMCheckpointIO(), FLMCheckpointIO(async_save=True)
        parallel.barrier()
        sync = _measured(lambda: _save(sync_io, cfg, engine, f"{folder}/sync.ckpt"))
        checksum = _checksum(engine)  # what the resume must find
        parallel.barrier()
        called = _measured(lambda: _save(async_io, cfg, engine, f"{folder}/async.ckpt"))
        waited = []  # the next step waits for the copy before its update
        engine.train_step(batch, before_update=lambda: waited.append(_measured(async_io.wait_for_copy)))
        copy_bytes = sum(buffer.nbytes for buffer in async_io._stager._buffers.values())  # the host copy
        blocked = (called[0] + waited[0][0], called[1], copy_bytes)
        finished = _measured(async_io.wait)
        parallel.barrier()
        last = _measured(lambda: (_save(async_io, cfg, engine, f"{folder}/async-last.ckpt"), async_io.wait()))
        result = {"sync": sync, "async_blocked": blocked, "async_rest": finished, "last": last}
        result["checksum"] = checksum
        result["file_bytes"] = os.path.getsize(f"{folder}/sync/__{rank}_0.distcp")
    with open(f"{folder}/save.{rank}.json", "w") as handle:
        json.dump(result, handle)


def _resume_rank(rank: int, args, folder: str, tp: int) -> None:
    from nemo_flm.checkpoint.lightning_io import FLMCheckpointIO
    from nemo_flm.host_memory import PeakAnon, anon_rss
    from nemo_flm.training.checkpointing import restore
    from tests.cuda_on_cpu import cuda_on_cpu

    torch.set_num_threads(1)
    with cuda_on_cpu():
        network, engine = _engine(_config(args, tp))
        start, io = anon_rss(), _io()
        with PeakAnon() as peak:
            began = time.perf_counter()
            checkpoint = FLMCheckpointIO().load_checkpoint(f"{folder}/sync.ckpt")
            read = restore(checkpoint, network, engine, network.state_dict())
            engine.optimizer.load_state_dict(checkpoint["optimizer_states"][0])
            seconds = time.perf_counter() - began
        result = {"read": read, "rchar": _io()["rchar"] - io["rchar"], "peak": peak.peak - start, "seconds": seconds}
        own = sum(p.tensor.nbytes for p in engine.checkpoint_pieces(save=False, moments=True))
        result.update(own=own, checksum=_checksum(engine))
    with open(f"{folder}/resume.{rank}.json", "w") as handle:
        json.dump(result, handle)


def _launch(fn, nproc: int, *args) -> None:
    from tests.helpers import run_ranks

    run_ranks(nproc, fn, *args)


def _folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path))


def run(args, nproc: int, tp: int) -> dict:
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        _launch(_save_rank, nproc, args, folder, tp)
        _launch(_resume_rank, nproc, args, folder, tp)
        saves = [json.load(open(f"{folder}/save.{r}.json")) for r in range(nproc)]
        resumes = [json.load(open(f"{folder}/resume.{r}.json")) for r in range(nproc)]
        size = _folder_bytes(f"{folder}/sync")
    return {"nproc": nproc, "tp": tp, "checkpoint_bytes": size, "saves": saves, "resumes": resumes}


def _gb(value: float) -> str:
    return f"{value / GB:.3f}"


def report(result: dict) -> None:
    n, tp, size = result["nproc"], result["tp"], result["checkpoint_bytes"]
    saves, resumes = result["saves"], result["resumes"]
    print(f"\n{n} processes (TP{tp} x PP1 x DP{n // tp}), checkpoint {size / GB:.2f} GB on disk")
    print("rank  written GB  read GB  save peak +GB  resume peak +GB  own GB  sync save s  async blocked s  equal")
    for rank, (s, r) in enumerate(zip(saves, resumes)):
        cells = [_gb(s["sync"][1]), _gb(r["read"]), _gb(s["sync"][2]), _gb(r["peak"]), _gb(r["own"])]
        equal = "yes" if r["checksum"] == s["checksum"] else "NO"
        cells += [f"{s['sync'][0]:.2f}", f"{s['async_blocked'][0]:.3f}", equal]
        print(f"{rank:4d}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, (10, 7, 13, 15, 6, 11, 15, 5))))
    written, read = sum(s["sync"][1] for s in saves), sum(r["read"] for r in resumes)
    writers = sum(1 for s in saves if s["sync"][1] > 0)
    print(f"written: {written / GB:.2f} GB ({written / size:.2f}x the checkpoint) by {writers} of {n} ranks")
    rchar = sum(r["rchar"] for r in resumes) / GB
    print(f"read on resume: {read / GB:.2f} GB ({read / size:.2f}x the checkpoint; the kernel's rchar {rchar:.2f} GB)")
    peak, own = max(r["peak"] for r in resumes), max(r["own"] for r in resumes)
    print(f"resume peak over a rank's memory before it: {peak / GB:.3f} GB (its own shard: {own / GB:.3f} GB)")
    sync_s, blocked = max(s["sync"][0] for s in saves), max(s["async_blocked"][0] for s in saves)
    rest, copy = max(s["async_rest"][0] for s in saves), max(s["async_blocked"][2] for s in saves)
    print(f"loop blocked by a save: sync {sync_s:.2f} s; async {blocked:.3f} s ({blocked / sync_s:.1%} of sync)")
    print(f"  then {rest:.2f} s of writing in the background; the async copy's host buffers {copy / GB:.3f} GB")
    last, seconds = sum(s["last"][1] for s in saves), max(s["last"][0] for s in saves)
    print(f"'last' beside it (same step): {last / GB:.4f} GB written in {seconds:.3f} s (hard links)")


def projection() -> None:
    """FLM-101B at TP4 x PP4 x DP12, 8 GPUs per node: this design's bytes and memory per rank and node."""
    from nemo_flm.compose import compose_job
    from nemo_flm.config import load_shape_config
    from nemo_flm.estimate import params_per_gpu

    cfg = load_shape_config(compose_job("flm_101b").model)
    tp, pp, gpus, per_node = 4, 4, 192, 8
    dp = gpus // (tp * pp)
    total, stage = params_per_gpu(cfg, 1, 1), params_per_gpu(cfg, tp, pp)
    per_param = 2 + 4 + 8  # bf16 weights, fp32 main weights, Adam's two fp32 moments
    rank_bytes = stage * per_param / dp  # this rank's ranges of its TP x PP shard
    node_bytes = per_node * rank_bytes
    largest = cfg.ffn_hidden_size * cfg.hidden_size // tp * 4 / dp  # an fp32 range of fc1's shard
    print(f"\nFLM-101B projection (conf/flm_101b.yaml): TP{tp} x PP{pp} x DP{dp} = {gpus} GPUs, {per_node} per node")
    print(f"  {total / 1e9:.1f} B parameters; checkpoint {total * per_param / 1e12:.2f} TB ({per_param} bytes/param)")
    print(f"  per rank (most loaded stage, {stage / 1e9:.2f} B parameters): writes and reads {rank_bytes / GB:.1f} GB")
    print(f"  per node: {node_bytes / GB:.1f} GB, {node_bytes / GB / NODE_GBPS:.0f} s at {NODE_GBPS:.0f} GB/s per node")
    in_flight = per_node * largest / GB
    print(f"  host RAM per node: sync save and resume ~{in_flight:.1f} GB (one tensor range per rank in flight),")
    print(f"  async save {node_bytes / GB:.1f} GB (each rank's copy); no process holds more than its own shard")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="where the checkpoints are written (a temp folder)")
    parser.add_argument("--out", default=None, help="also write the measurements here as JSON")
    args = parser.parse_args()
    results = [run(args, n, tp=1 if n <= 4 else 2) for n in args.nproc]
    for result in results:
        report(result)
    projection()
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
