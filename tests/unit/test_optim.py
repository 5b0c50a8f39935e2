"""AdamW groups, gradient clipping and the per-stage warmup + cosine schedule."""
import math

import pytest
import torch

from nemo_flm.config import load_model_config
from nemo_flm.training.optim import build_scheduler, clip_grad_norm, param_groups


def test_no_weight_decay_on_biases_and_layernorms(build):
    model, cfg = build()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") and p.ndim == 2 for p in decay["params"])
    assert all("bias" in names[id(p)] or "layernorm" in names[id(p)] for p in no_decay["params"])


def test_clip_matches_torch(build):
    model, _ = build()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    expected = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    norm = clip_grad_norm(list(model.parameters()), 1.0)
    assert norm.item() == pytest.approx(expected.item(), rel=1e-5)
    clipped = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    assert clipped.item() == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("lr, warmup, decay, gbs", [(4e-4, 4_608_000, 119_809_570, 2304), (2e-4, 230_400, 12_958_984, 2160)])
def test_stage_schedule(lr, warmup, decay, gbs):
    cfg = load_model_config({"global_batch_size": gbs, "micro_batch_size": 1, "parallel": {},
                             "optim": {"lr": lr, "min_lr": 6e-6, "lr_warmup_samples": warmup, "lr_decay_samples": decay}})
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=cfg.optim.lr)
    sched = build_scheduler(opt, cfg.optim, gbs)
    warm_steps, decay_steps = math.ceil(warmup / gbs), math.ceil(decay / gbs)

    def lr_at(step):
        sched.last_epoch = step
        return (sched._get_lr(step) if step > warm_steps else sched._get_warmup_lr(step))[0]

    assert lr_at(warm_steps // 2) == pytest.approx(lr * (warm_steps // 2 + 1) / (warm_steps + 1), rel=1e-3)
    assert lr_at(warm_steps + 1) == pytest.approx(lr, rel=1e-3)
    mid = (warm_steps + decay_steps) // 2
    assert lr_at(mid) == pytest.approx(6e-6 + (lr - 6e-6) * 0.5, rel=1e-2)
    assert lr_at(decay_steps) == pytest.approx(6e-6, rel=1e-3)
