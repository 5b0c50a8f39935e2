"""AdamW groups, gradient clipping and the per-stage warmup + cosine schedule."""

import math

import pytest
import torch
from nemo.core.optim.lr_scheduler import CosineAnnealing

from nemo_flm.config import load_model_config
from nemo_flm.training.optim import build_optimizer, build_scheduler, clip_grad_norm, param_groups, schedule_steps


def test_no_weight_decay_on_biases_and_layernorms(build):
    model, cfg = build()
    decay, no_decay, hidden = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [g["name"] for g in (decay, no_decay, hidden)] == ["decay", "no_decay", "hidden"]
    assert decay["weight_decay"] == hidden["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in decay["params"]} == {"embedding.word_embeddings.weight", "output_layer.weight"}
    assert all(names[id(p)].endswith("weight") and p.ndim == 2 for p in hidden["params"])
    assert len(hidden["params"]) == 4 * cfg.num_layers
    assert all("bias" in names[id(p)] or "layernorm" in names[id(p)] for p in no_decay["params"])
    assert {g["lr_mult"] for g in (decay, no_decay, hidden)} == {1.0}  # standard parametrization


def test_clip_matches_torch(build):
    model, _ = build()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    expected = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    norm = clip_grad_norm(list(model.parameters()), 1.0)
    assert norm.item() == pytest.approx(expected.item(), rel=1e-5)
    clipped = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    assert clipped.item() == pytest.approx(1.0, rel=1e-4)


def test_a_rank_without_gradients_reduces_a_zero_on_the_parameters_device(single_process):
    """A rank whose parameters hold no gradient (a pipeline stage past the loss, a skipped update)
    still joins the norm's all-reduce: its zero must live where its parameters do (NCCL rejects
    CPU tensors on a GPU run). The meta device stands in for CUDA here."""
    params = [torch.nn.Parameter(torch.empty(3, 2, device="meta")), torch.nn.Parameter(torch.empty(4, device="meta"))]
    norm = clip_grad_norm(params, 1.0)
    assert norm.device.type == "meta"


def reference_lr(step, lr, min_lr, warmup_samples, decay_samples, gbs):
    """The LR the optimizer holds after `step` scheduler.step() calls, i.e. for update step+1.

    From the schedule's definition, with the counting NeMo's CosineAnnealing uses (measured by
    stepping it): sample counts become optimizer steps rounding up (a partial batch is a step),
    W = ceil(warmup/gbs), M = ceil(decay/gbs), and the decay horizon M counts from step 0
    (warmup inside it, as in Megatron). Warmup is linear and starts above zero: lr (step+1)/(W+1)
    for step <= W, so the first update uses lr/(W+1) and update W+1 the full lr. Then a cosine
    from lr at step W to min_lr at step M, and min_lr after M."""
    warmup, horizon = -(-warmup_samples // gbs), -(-decay_samples // gbs)
    if step <= warmup:
        return lr * (step + 1) / (warmup + 1)
    if step >= horizon:
        return min_lr
    progress = (step - warmup) / (horizon - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


# (lr, min_lr, warmup samples, decay samples, global batch). FLM's stages (docs/flm_facts.md §1, each
# stage's decay horizon = its own token budget / 2048) take 52k / 8.4k / 6k steps: ~2 s in all.
SCHEDULES = [
    (4e-4, 6e-6, 4_608_000, 119_809_570, 2304),  # 16B: W = 2000 exactly, M = 52001 (rounded up)
    (3.4e-4, 6e-6, 230_400, 19_355_469, 2304),  # 51B: W = 100, M = 8401
    (2e-4, 6e-6, 230_400, 12_958_984, 2160),  # 101B: W = 107 (106.7 rounded up), M = 6000
    (1e-3, 1e-4, 10, 50, 4),  # small: W = 3, M = 13, both rounded up
    (1e-3, 1e-4, 0, 40, 4),  # no warmup: the cosine starts at the full lr
]


@pytest.mark.parametrize("lr, min_lr, warmup, decay, gbs", SCHEDULES, ids=["16b", "51b", "101b", "small", "no-warmup"])
def test_schedule_matches_definition_at_every_step(lr, min_lr, warmup, decay, gbs):
    """Drive the real scheduler through its public API over the whole schedule and past its end:
    every LR of every parameter group equals the definition times the group's μP multiplier,
    including the rounding of samples and the floor (min_lr x multiplier)."""
    cfg = load_model_config(
        {
            "global_batch_size": gbs,
            "micro_batch_size": 1,
            "parallel": {},
            "optim": {"lr": lr, "min_lr": min_lr, "lr_warmup_samples": warmup, "lr_decay_samples": decay},
        }
    )
    layer = torch.nn.Linear(2, 2)
    layer.weight.lr_mult = 0.25  # as model/mup.py tags a hidden matrix at m = 4
    optimizer = build_optimizer(layer, cfg.optim)  # groups: decay (the weight), no decay (the bias), hidden (empty)
    scheduler = build_scheduler(optimizer, cfg.optim, gbs)
    steps = -(-decay // gbs) + 20
    actual = []
    for _ in range(steps):  # the training loop's order; no grads, so the update itself is skipped
        actual.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    expected = [[reference_lr(k, lr, min_lr, warmup, decay, gbs) * m for m in (0.25, 1.0, 1.0)] for k in range(steps)]
    torch.testing.assert_close(
        torch.tensor(actual, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0.0
    )
    assert scheduler.get_last_lr() == [min_lr * 0.25, min_lr, min_lr]


def test_a_scheduler_saved_over_other_groups_resumes_on_these():
    """A checkpoint from before role groups (two groups) or from the other engine (megatron's
    groups) holds a scheduler state over other groups: it resumes the same schedule here, each
    group at its multiple (the review's crash: zip() argument 2 is shorter than argument 1)."""
    optim = {"lr": 1e-3, "min_lr": 1e-4, "lr_warmup_samples": 10, "lr_decay_samples": 50}
    cfg = load_model_config({"global_batch_size": 4, "micro_batch_size": 1, "parallel": {}, "optim": optim})
    two = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(2))]} for _ in range(2)], lr=cfg.optim.lr)
    saved = CosineAnnealing(two, min_lr=cfg.optim.min_lr, **schedule_steps(cfg.optim, 4))
    for _ in range(5):
        two.step()
        saved.step()
    layer = torch.nn.Linear(2, 2)
    layer.weight.lr_mult = 0.25
    optimizer = build_optimizer(layer, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, 4)
    scheduler.load_state_dict(saved.state_dict())
    optimizer.step()
    scheduler.step()
    want = reference_lr(6, 1e-3, 1e-4, 10, 50, 4)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([want * 0.25, want, want], rel=1e-12)
