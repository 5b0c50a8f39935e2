"""Checks that need a CUDA GPU (run by scripts/gpu_check.sh; skipped with a reason elsewhere):
the model built on the GPU (megatron initialises it there, fused bias-GeLU and bias-dropout-add on)
computes what the same weights compute on the CPU; the megatron engine (DDP, distributed
optimizer, schedule) follows the local engine on the GPU and lowers the loss; the masked
LayerNorm keeps fp32 statistics in bf16 there too."""

import pytest
import torch

from nemo_flm import parallel
from nemo_flm.model.builder import build_model
from tests.helpers import logits_of, tiny_cfg

pytestmark = pytest.mark.gpu


def _cuda_batch(cfg, size: int = 4) -> dict:
    """Random tokens on the GPU, every position a loss token."""
    tokens = torch.randint(0, cfg.vocab_size, (size, cfg.seq_length + 1), device="cuda")
    return {
        "tokens": tokens[:, :-1],
        "labels": tokens[:, 1:],
        "loss_mask": torch.ones_like(tokens[:, 1:]),
        "position_ids": torch.arange(cfg.seq_length, device="cuda")[None].expand(size, -1),
    }


def test_model_is_built_on_the_gpu_and_matches_cpu_logits(single_process):
    cfg = tiny_cfg()
    parallel.seed_everything(cfg.seed)
    model = build_model(cfg).eval()
    assert all(p.is_cuda for p in model.parameters())
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_length))
    on_gpu = logits_of(model, tokens.cuda()).cpu()
    on_cpu = logits_of(model.cpu(), tokens)
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mup", [{}, dict(use_mup=True, mup_base_width=16)], ids=["standard", "mup"])
def test_megatron_engine_on_the_gpu_follows_the_local_engine_and_lowers_the_loss(single_process, mup):
    """With μP the distributed optimizer's groups carry the hidden matrices' LR / m (m = 4)."""
    from nemo_flm.training.local_engine import LocalEngine
    from nemo_flm.training.megatron_engine import MegatronEngine

    cfg = tiny_cfg(optim=dict(eps=1e-5), **mup)
    batch = _cuda_batch(cfg)
    runs = []
    for engine_class in (LocalEngine, MegatronEngine):
        parallel.seed_everything(cfg.seed)
        model = build_model(cfg)
        engine = (
            LocalEngine(model, cfg.optim, cfg.micro_batch_size)
            if engine_class is LocalEngine
            else (MegatronEngine([model], cfg))
        )
        runs.append([engine.train_step(batch)[0] for _ in range(5)])
    local, megatron = runs
    assert megatron == pytest.approx(local, rel=1e-4), (local, megatron)
    assert all(b < a for a, b in zip(megatron, megatron[1:])), megatron
    if not mup:  # measured on an H200: 6.94 -> 6.44 over these 5 steps
        assert megatron[-1] < megatron[0] - 0.3, megatron


def test_masked_layernorm_statistics_are_fp32_on_the_gpu(single_process):
    from nemo_flm.growth.masks import GrowthMasks, MaskedLayerNorm
    from nemo_flm.growth.plan import make_plan
    from nemo_flm.model.builder import transformer_config
    from nemo_flm.model.layernorm import FLMLayerNorm

    hidden = 7168
    cfg = tiny_cfg(hidden_size=hidden, num_attention_heads=56, params_dtype="bf16")
    plan = make_plan(tiny_cfg(hidden_size=hidden // 2, num_attention_heads=28), cfg)
    tcfg = transformer_config(cfg)
    norms = [MaskedLayerNorm(tcfg, hidden, masks=GrowthMasks(plan, c=1.0)).cuda(), FLMLayerNorm(tcfg, hidden).cuda()]
    x = torch.randn(64, hidden, dtype=torch.float64, device="cuda") * 3 + 1.5
    reference = torch.nn.functional.layer_norm(x, (hidden,), eps=1e-5)
    with torch.no_grad():
        masked, plain = [(n(x.to(torch.bfloat16)).double() - reference).abs().max().item() for n in norms]
    assert masked <= 1.25 * plain, (masked, plain)


def test_cached_generation_on_the_gpu_matches_cpu(single_process):
    """The xPos KV cache and the Generator on CUDA (cache buffers on the model's device, logits
    gathered there): greedy tokens and scores equal the CPU's."""
    from nemo_flm.data.tokenizer import FLMTokenizer
    from nemo_flm.inference.generator import Generator
    from nemo_flm.inference.sampling import SamplingParams

    cfg = tiny_cfg(vocab_size=100256, make_vocab_size_divisible_by=128, xpos_scale_base=4.0)
    parallel.seed_everything(cfg.seed)
    model = build_model(cfg).eval()
    prompts = [FLMTokenizer().encode(t) for t in ("The interpreter reads", "人民日报")]
    params = SamplingParams(greedy=True, tokens_to_generate=150, min_tokens_to_generate=150, end_strings=[])
    results = []
    for device in ("cuda", "cpu"):
        generator = Generator(model.to(device), FLMTokenizer(), max_context=200)
        out = generator.generate(prompts, params)
        results.append(([c.token_ids for c in out], generator.score([prompts[0] + out[0].token_ids])[0].logprobs[1:]))
    assert results[0][0] == results[1][0]
    torch.testing.assert_close(torch.tensor(results[0][1]), torch.tensor(results[1][1]), atol=1e-4, rtol=0)


def test_an_async_checkpoint_of_the_megatron_engine_on_the_gpu_resumes_exactly(single_process, tmp_path):
    """The production save on CUDA, in the background (pinned host copy, non-blocking transfers),
    overlapped with the next step, and a fresh engine's resume: every rank's pieces (weights, fp32
    main weights, Adam moments) equal the ones saved."""
    from nemo_flm.checkpoint.lightning_io import FLMCheckpointIO
    from nemo_flm.model.builder import build_chunks
    from nemo_flm.training.megatron_engine import MegatronEngine
    from tests.helpers import read_checkpoint, write_checkpoint

    cfg = tiny_cfg(params_dtype="bf16")
    batch = _cuda_batch(cfg)
    engine = MegatronEngine(build_chunks(cfg), cfg)
    engine.train_step(batch)
    saved = [p.tensor.detach().cpu().clone() for p in engine.checkpoint_pieces(save=False, moments=True)]
    io = FLMCheckpointIO(async_save=True)
    write_checkpoint(tmp_path / "a.ckpt", cfg, engine, 1, io=io)
    engine.train_step(batch, before_update=io.wait_for_copy)  # the update after the copy
    io.wait()
    fresh = MegatronEngine(build_chunks(cfg), cfg)
    read_checkpoint(tmp_path / "a.ckpt", fresh)
    for want, piece in zip(saved, fresh.checkpoint_pieces(save=False, moments=True)):
        assert torch.equal(piece.tensor.cpu(), want), piece.key
