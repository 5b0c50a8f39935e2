"""Test helpers: tiny configs, N gloo ranks on CPU, a briefly trained model, TP gathers, and the
old/grown model pairs of the growth tests."""

import os
import socket

import torch.multiprocessing as mp


def tiny_cfg(**overrides):
    """A tiny FLM config (vocab <= 1k, hidden <= 64), dropout off, validated."""
    from nemo_flm.config import load_model_config

    base = dict(
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        ffn_hidden_size=256,
        seq_length=32,
        vocab_size=1000,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        micro_batch_size=2,
        global_batch_size=4,
    )
    parallel = overrides.pop("parallel", {})
    base.update(overrides)
    base["parallel"] = parallel
    return load_model_config(base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, fn, args):
    import torch

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    fn(rank, *args)


def run_ranks(world: int, fn, *args) -> None:
    """Run fn(rank, *args) in `world` spawned processes (one thread each) joined by gloo."""
    mp.spawn(_entry, args=(world, free_port(), fn, args), nprocs=world, join=True)


def trained_model(cfg, steps: int = 3):
    """A model and AdamW (nemo_flm's groups) after `steps` updates on random tokens."""
    import torch

    from nemo_flm.model.builder import build_model
    from nemo_flm.training.optim import build_optimizer

    model = build_model(cfg)
    opt = build_optimizer(model, cfg.optim)
    for _ in range(steps):
        tokens = torch.randint(0, cfg.vocab_size, (2, 8))
        model(tokens, torch.arange(8)[None].expand(2, -1), None, labels=tokens).mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def local_engine(cfg, model, optimizer=None):
    """The local engine over `model`, with `optimizer` (e.g. trained_model's) as its AdamW."""
    from nemo_flm.training.local_engine import LocalEngine

    engine = LocalEngine(model, cfg.optim, cfg.micro_batch_size)
    if optimizer is not None:
        engine.optimizer = optimizer
    return engine


def write_checkpoint(path, cfg, engine, global_step: int, consumed_samples: int = 0, io=None) -> None:
    """A training checkpoint at `path` as FLMModel's Lightning runs write it: its hooks' attach,
    then FLMCheckpointIO (`io`, e.g. an asynchronous one) on every rank."""
    from omegaconf import OmegaConf

    from nemo_flm.checkpoint.lightning_io import FLMCheckpointIO
    from nemo_flm.training.checkpointing import attach

    network = engine.model if hasattr(engine, "model") else engine.network
    checkpoint = {
        "state_dict": {},
        "optimizer_states": [engine.optimizer.state_dict()],
        "hyper_parameters": {"cfg": OmegaConf.to_container(cfg)},
        "consumed_samples": consumed_samples,
        "global_step": global_step,
    }
    attach(checkpoint, network, engine)
    (io or FLMCheckpointIO()).save_checkpoint(checkpoint, str(path))


def read_checkpoint(path, engine) -> dict:
    """Resume `engine` (and its network) from the training checkpoint at `path` as Lightning does:
    FLMCheckpointIO's trainer state, FLMModel's restore, then the state dicts it hands over."""
    from nemo_flm.checkpoint.lightning_io import FLMCheckpointIO
    from nemo_flm.training.checkpointing import restore

    network = engine.model if hasattr(engine, "model") else engine.network
    checkpoint = FLMCheckpointIO().load_checkpoint(path)
    own = {f"model.{k}": v for k, v in network.state_dict().items()}
    restore(checkpoint, network, engine, own)
    network.load_state_dict({k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()})
    engine.optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    return checkpoint


def random_batch(size: int, seq: int, vocab: int, seed: int = 0) -> dict:
    """A training batch (forward_step's keys) of random tokens, every position a loss token."""
    import torch

    tokens = torch.randint(0, vocab, (size, seq + 1), generator=torch.Generator().manual_seed(seed))
    return {
        "tokens": tokens[:, :-1],
        "labels": tokens[:, 1:],
        "loss_mask": torch.ones(size, seq),
        "position_ids": torch.arange(seq)[None].expand(size, -1),
    }


def gather_vocab(logits):
    """Concatenate vocab-parallel logits [..., V/TP] over the TP group -> [..., V] (megatron's own
    gather allocates on CUDA)."""
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state

    group = parallel_state.get_tensor_model_parallel_group()
    parts = [torch.empty_like(logits) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, logits.contiguous(), group=group)
    return torch.cat(parts, dim=-1)


def end_ranks():
    """Tear down megatron's groups and the process group at the end of a spawned rank."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()


# ------------------------------------------------------------------ growth: old and grown models
GROWTH_OLD = dict(
    num_layers=2, hidden_size=32, num_attention_heads=2, ffn_hidden_size=64, init_method_std=0.2, params_dtype="fp64"
)
GROWTHS = {
    "width": dict(hidden_size=64, num_attention_heads=4),
    "ffn": dict(ffn_hidden_size=160),
    "depth": dict(num_layers=4),
    "all": dict(num_layers=5, hidden_size=64, num_attention_heads=4, ffn_hidden_size=160),
    # hidden and heads separately: the head dim (16) held by kv_channels
    "hidden-only": dict(hidden_size=64, kv_channels=16),
    "heads-only": dict(num_attention_heads=4, kv_channels=16),
}
MUP = dict(use_mup=True, output_mult=2.0, mup_base_width=16)  # m = 2 at GROWTH_OLD's width
GROWTHS["all-mup"] = GROWTHS["all"]  # m doubles with the width


def entries(state):
    """A grown state dict as write_grown_checkpoint's (name, make) entries."""
    return [(name, lambda value=value: value) for name, value in state.items()]


def random_fill(seed: int = 5):
    """Every new entry random, biases and LayerNorm entries included, as in a trained model:
    exactness must come from the masks, not from zeros that MSG's default fill happens to write."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def fill(name, shape, dtype):
        return (torch.randn(shape, generator=generator, dtype=torch.float64) * 0.5).to(dtype)

    return fill


def perturbed(model):
    """Non-trivial biases and LayerNorms (megatron initialises them to 0 and 1)."""
    import torch

    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
    return model


def logits_of(model, tokens):
    import torch

    with torch.no_grad():
        return model(tokens, torch.arange(tokens.shape[1])[None].expand_as(tokens), None)


def grow_pair(old_over, new_over, depth_mode="stack", c=0.0):
    """(old model, grown masked model at mask value c, new config, masks, grown state dict)."""
    from nemo_flm import parallel
    from nemo_flm.growth.masks import GrowthMasks, build_masked_model
    from nemo_flm.growth.operators import iter_grown
    from nemo_flm.growth.plan import make_plan
    from nemo_flm.model.builder import build_model

    old_cfg, new_cfg = tiny_cfg(**old_over), tiny_cfg(**new_over)
    parallel.seed_everything(0)
    old = perturbed(build_model(old_cfg)).eval()
    plan = make_plan(old_cfg, new_cfg, depth_mode)
    grown_state = dict(iter_grown(old.state_dict(), plan, random_fill()))
    masks = GrowthMasks(plan, c=c)
    grown = build_masked_model(new_cfg, masks).eval()
    grown.load_state_dict(grown_state)
    return old, grown, new_cfg, masks, grown_state
