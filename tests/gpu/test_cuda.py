"""Checks that need a CUDA GPU (run by scripts/gpu_check.sh; skipped with a reason elsewhere):
the model built on the GPU (megatron initialises it there) computes what the same weights compute
on the CPU, trains, and the masked LayerNorm keeps fp32 statistics in bf16 there too."""

import pytest
import torch

from nemo_flm import parallel
from nemo_flm.model.builder import build_model
from nemo_flm.training.optim import build_optimizer
from nemo_flm.training.step import train_step
from tests.helpers import logits_of, tiny_cfg

pytestmark = pytest.mark.gpu


def test_model_is_built_on_the_gpu_and_matches_cpu_logits(single_process):
    cfg = tiny_cfg()
    parallel.seed_everything(cfg.seed)
    model = build_model(cfg).eval()
    assert all(p.is_cuda for p in model.parameters())
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_length))
    on_gpu = logits_of(model, tokens.cuda()).cpu()
    on_cpu = logits_of(model.cpu(), tokens)
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-4, atol=1e-4)


def test_train_step_on_the_gpu_lowers_the_loss(single_process):
    cfg = tiny_cfg()
    parallel.seed_everything(cfg.seed)
    model = build_model(cfg)
    optimizer = build_optimizer(model, cfg.optim)
    tokens = torch.randint(0, cfg.vocab_size, (4, cfg.seq_length + 1), device="cuda")
    batch = {
        "tokens": tokens[:, :-1],
        "labels": tokens[:, 1:],
        "loss_mask": torch.ones_like(tokens[:, 1:]),
        "position_ids": torch.arange(cfg.seq_length, device="cuda")[None].expand(4, -1),
    }
    losses = [train_step(model, batch, cfg.micro_batch_size, optimizer, cfg.optim.clip_grad).loss for _ in range(5)]
    assert losses[-1] < losses[0] - 0.5, losses


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
