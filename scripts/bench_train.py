"""Training throughput: the tiny FLM (megatron-core local spec + SDPA) vs Hugging Face GPT-NeoX.

Both models get identical dimensions (layers, hidden, heads, FFN, 100,352-row untied vocab,
rotary positions over the full head), the same batch, sequence, threads, fp32, AdamW and
gradient clipping, measured in one run on the same CPU:

    python scripts/bench_train.py [--steps 20] [--threads 2]

Prints tokens/s of each and the ratio FLM / GPT-NeoX.
"""

import argparse
import time

import torch


def _flm(args):
    from nemo_flm import parallel
    from nemo_flm.config import load_model_config
    from nemo_flm.model.builder import build_model
    from nemo_flm.training.local_engine import LocalEngine

    cfg = load_model_config(
        {
            "num_layers": args.layers,
            "hidden_size": args.hidden,
            "num_attention_heads": args.heads,
            "ffn_hidden_size": 4 * args.hidden,
            "seq_length": args.seq,
            "hidden_dropout": 0.0,
            "attention_dropout": 0.0,
            "micro_batch_size": args.batch,
            "global_batch_size": args.batch,
            "parallel": {},
        }
    )
    parallel.initialize(cfg.parallel, cfg.seed)
    engine = LocalEngine(build_model(cfg).train(), cfg.optim, args.batch)  # what training runs on CPU

    def step(tokens, labels):
        batch = {
            "tokens": tokens,
            "labels": labels,
            "loss_mask": torch.ones_like(tokens, dtype=torch.float),
            "position_ids": torch.arange(args.seq)[None].expand_as(tokens),
        }
        return engine.train_step(batch)[0]

    return step


def neox_model(layers: int, hidden: int, heads: int, positions: int):
    """Hugging Face GPT-NeoX with FLM's dimensions: sequential residual, GeLU (tanh), rotary over
    the full head, 100,352-row untied vocab, no dropout, SDPA attention (bench_generate.py too)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(
        vocab_size=100352,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        hidden_act="gelu_fast",
        rotary_pct=1.0,
        max_position_embeddings=positions,
        use_parallel_residual=False,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
    )
    return GPTNeoXForCausalLM._from_config(cfg, attn_implementation="sdpa")


def _neox(args):
    model = neox_model(args.layers, args.hidden, args.heads, args.seq).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def step(tokens, labels):
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=tokens).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    return step


def _tokens_per_s(step, args) -> float:
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, 100256, (args.batch, args.seq + 1), generator=g) for _ in range(args.steps + args.warmup)]
    for batch in data[: args.warmup]:
        step(batch[:, :-1], batch[:, 1:])
    start = time.perf_counter()
    for batch in data[args.warmup :]:
        step(batch[:, :-1], batch[:, 1:])
    return args.steps * args.batch * args.seq / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    for name, make in (("FLM (megatron-core local spec + SDPA)", _flm), ("HF GPT-NeoX (sdpa)", _neox)):
        results[name] = _tokens_per_s(make(args), args)
        print(f"{name:40s} {results[name]:10.1f} tokens/s", flush=True)
    flm, neox = results.values()
    print(
        f"shape: layers={args.layers} hidden={args.hidden} heads={args.heads} seq={args.seq} batch={args.batch} "
        f"vocab=100352 fp32 threads={args.threads}"
    )
    print(f"ratio FLM / GPT-NeoX: {flm / neox:.2f}x")


if __name__ == "__main__":
    main()
