"""Greedy decoding speed, measured against baselines in one run on the same threads:

    python scripts/bench_generate.py [--threads 2] [--new-tokens 128] [--context 4096] [--hf-export DIR]

(a) nemo_flm's Generator (what flm_eval.py runs) on the tiny model vs Hugging Face GPT-NeoX with
    identical dimensions under `generate()` (rotary over the full head, 100,352-row untied vocab);
(b) decode steps at a long context with our cache (keys placed once) vs the same network whose
    cache holds raw keys and re-rotates all of them at every step with a new centre ceil(L/2), as
    FLM's own Hugging Face code does; same weights, same megatron-core layers;
(c) with --hf-export (scripts/convert_nemo_to_hf.py output of the tiny model), that export under
    transformers' generate() vs GPT-NeoX.
Prints tokens/s and the ratios. fp32, batch 1, random weights (speed does not depend on them).
"""

import argparse
import math
import time
from dataclasses import replace

import torch

from nemo_flm.console import quiet_startup

quiet_startup()

from bench_train import neox_model  # noqa: E402  (this folder: the same GPT-NeoX baseline)
from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear  # noqa: E402
from megatron.core.transformer.attention import SelfAttention  # noqa: E402

from nemo_flm import parallel  # noqa: E402
from nemo_flm.config import load_model_config  # noqa: E402
from nemo_flm.data.tokenizer import FLMTokenizer  # noqa: E402
from nemo_flm.inference.generator import Generator  # noqa: E402
from nemo_flm.inference.sampling import SamplingParams  # noqa: E402
from nemo_flm.model.attention import FLMSelfAttention  # noqa: E402
from nemo_flm.model.builder import build_model  # noqa: E402
from nemo_flm.model.core_attention import SDPAttention  # noqa: E402
from nemo_flm.model.kv_cache import FLMInferenceContext  # noqa: E402
from nemo_flm.model.layernorm import FLMLayerNorm  # noqa: E402
from nemo_flm.model.spec import flm_block_spec, flm_layer  # noqa: E402
from nemo_flm.model.xpos import apply_positions  # noqa: E402


class ReRotatingAttention(FLMSelfAttention):
    """The baseline of (b): megatron's cache holds raw keys; every step re-applies xPos to all of
    them with the centre ceil(L/2) (FLM's Hugging Face code), an O(L) transform per token."""

    def _adjust_key_value_for_inference(self, inference_context, query, key, value, *args, **kwargs):
        first = inference_context.sequence_len_offset
        query, key, value, *rest = SelfAttention._adjust_key_value_for_inference(
            self, inference_context, query, key, value, *args, **kwargs
        )
        total = key.shape[0]
        place = replace(self.positions, center=float(math.ceil(total / 2)))
        query, _ = apply_positions(query, query, torch.arange(first, total), place)
        _, key = apply_positions(key, key, torch.arange(total), place)
        return (query, key, value, *rest)


def flm_config(args):
    return load_model_config(
        {
            "num_layers": args.layers,
            "hidden_size": args.hidden,
            "num_attention_heads": args.heads,
            "seq_length": 128,
            "hidden_dropout": 0.0,
            "attention_dropout": 0.0,
            "parallel": {},
        }
    )


def rerotating_block(cfg, positions):
    layer = flm_layer(
        positions,
        FLMLayerNorm,
        ColumnParallelLinear,
        SDPAttention,
        RowParallelLinear,
        ColumnParallelLinear,
        RowParallelLinear,
        self_attention=ReRotatingAttention,
    )
    return flm_block_spec([layer] * cfg.num_layers)


def timed(fn, repeats: int = 3) -> float:
    """The best of `repeats` wall times (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def flm_generate_rate(network, prompt, args) -> float:
    generator = Generator(network, FLMTokenizer(), max_context=len(prompt) + args.new_tokens)
    n = args.new_tokens
    params = SamplingParams(greedy=True, tokens_to_generate=n, min_tokens_to_generate=n, end_strings=[])
    return n / timed(lambda: generator.generate([prompt], params))


def hf_generate_rate(model, prompt, args) -> float:
    ids = torch.tensor([prompt])
    n = args.new_tokens
    kwargs = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True, pad_token_id=0)
    with torch.no_grad():
        return n / timed(lambda: model.generate(ids, **kwargs))


@torch.no_grad()
def decode_rate(network, context: int, steps: int) -> float:
    """Single-token steps per second after a `context`-token prefill (prefill not timed)."""
    tokens = torch.randint(0, 100256, (1, context + steps))

    def run():
        ctx = FLMInferenceContext(1, context + steps)
        for chunk in tokens[:, :context].split(4096, dim=1):
            network(chunk, None, None, inference_context=ctx)
            ctx.increment_sequence_len_offset(chunk.shape[1])
        start = time.perf_counter()
        for t in range(context, context + steps):
            network(tokens[:, t : t + 1], None, None, inference_context=ctx)
            ctx.increment_sequence_len_offset(1)
        return time.perf_counter() - start

    run()
    return steps / min(run() for _ in range(3))


def row(label: str, ours: float, name: str, theirs: float) -> str:
    return f"    {label:<20}{ours:8.1f} tokens/s   {name:<22}{theirs:8.1f} tokens/s   ratio {ours / theirs:.2f}x"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--prompt", type=int, default=32, help="prompt tokens of (a) and (c)")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--context", type=int, default=4096, help="context of (b)")
    p.add_argument("--hf-export", help="an HF export of a model with these dimensions, for (c)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = flm_config(args)
    parallel.initialize(cfg.parallel, cfg.seed)
    network = build_model(cfg).eval()
    prompt = torch.randint(0, 100256, (args.prompt,)).tolist()
    baseline = neox_model(args.layers, args.hidden, args.heads, args.context + args.new_tokens).eval()
    ours, theirs = flm_generate_rate(network, prompt, args), hf_generate_rate(baseline, prompt, args)
    print(f"(a) greedy, {args.prompt}-token prompt, {args.new_tokens} new tokens, batch 1, {args.threads} threads")
    print(row("nemo_flm Generator:", ours, "GPT-NeoX generate():", theirs))
    rerotating = build_model(cfg, block=rerotating_block(cfg, network.decoder.layers[0].self_attention.positions))
    rerotating.load_state_dict(network.state_dict())
    steps = 32
    placed, again = decode_rate(network, args.context, steps), decode_rate(rerotating.eval(), args.context, steps)
    print(f"(b) decode steps after a {args.context}-token context ({steps} steps)")
    print(row("keys placed once:", placed, "re-rotated every step:", again))
    if args.hf_export:
        from transformers import AutoModelForCausalLM

        export = AutoModelForCausalLM.from_pretrained(args.hf_export, trust_remote_code=True).eval()
        rate = hf_generate_rate(export, prompt, args)
        print("(c) the HF export under transformers generate()")
        print(row("FLM export:", rate, "GPT-NeoX generate():", theirs))


if __name__ == "__main__":
    main()
