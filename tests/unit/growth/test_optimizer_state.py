"""Adam moments across growth, through the grown checkpoint: old block kept, new entries and new
layers zero, step kept, loaded into a fresh optimizer over the grown model."""

import torch

from nemo_flm.checkpoint.weights import MOMENTS
from nemo_flm.growth.grown_checkpoint import load_grown_state, write_grown_checkpoint
from nemo_flm.growth.operators import default_fill, grown_entries
from nemo_flm.growth.optimizer_state import grown_moment_entries
from nemo_flm.growth.plan import make_plan
from nemo_flm.model.builder import build_model
from nemo_flm.model.sharding import partition_dims
from nemo_flm.training.optim import (
    build_optimizer,
    optimizer_groups,
    optimizer_param_names,
    state_by_index,
    state_by_name,
)
from tests.helpers import local_engine, tiny_cfg, trained_model

OLD = dict(num_layers=2, hidden_size=32, num_attention_heads=2, ffn_hidden_size=64)
NEW = dict(num_layers=3, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128)


def named_adam_state(model, optimizer):
    return {name: dict(optimizer.state[p]) for name, p in model.named_parameters() if p in optimizer.state}


def by_moment(state):
    return {m: {name: s[m] for name, s in state.items()} for m in MOMENTS}


def test_moments_copied_zero_elsewhere_step_kept(single_process, tmp_path):
    old_cfg, new_cfg = tiny_cfg(**OLD), tiny_cfg(**NEW)
    model, opt = trained_model(old_cfg)
    old_state = named_adam_state(model, opt)
    plan = make_plan(old_cfg, new_cfg)
    new_model = build_model(new_cfg)
    write_grown_checkpoint(
        str(tmp_path / "g"),
        grown_entries(model.state_dict(), plan, default_fill(0.02)),
        grown_moment_entries(by_moment(old_state), plan),
        plan,
        partition_dims(new_model),
        step=old_state["output_layer.weight"]["step"],
    )

    engine = local_engine(new_cfg, new_model)
    load_grown_state(engine, str(tmp_path / "g"))
    state = named_adam_state(new_model, engine.optimizer)
    assert set(state) == {n for n, _ in new_model.named_parameters()}

    fc1 = "decoder.layers.1.mlp.linear_fc1.weight"
    for moment in ("exp_avg", "exp_avg_sq"):
        old, new = old_state[fc1][moment], state[fc1][moment]
        assert new.shape == (128, 64)
        torch.testing.assert_close(new[:64, :32], old, rtol=0, atol=0)
        assert torch.count_nonzero(new[64:]) == 0 and torch.count_nonzero(new[:, 32:]) == 0
        assert old.abs().sum() > 0
    new_layer = [v for n, v in state.items() if n.startswith("decoder.layers.2.")]
    assert new_layer and all(torch.count_nonzero(s["exp_avg"]) == 0 for s in new_layer)
    assert all(s["step"].item() == 3 for s in state.values())
    engine.optimizer.step()  # the optimizer accepts the installed state


def test_mup_output_rescale_moves_output_moments(single_process, tmp_path):
    """W' = r W (r = m_new/m_old = 2) makes the output gradients g / r: moments become m / r, v / r^2."""
    mup = dict(use_mup=True, output_mult=2.0, mup_base_width=OLD["hidden_size"] // 2)  # m = 2, then 4
    old_cfg, new_cfg = tiny_cfg(**OLD, **mup), tiny_cfg(**NEW, **mup)
    model, opt = trained_model(old_cfg)
    old_state = named_adam_state(model, opt)
    plan = make_plan(old_cfg, new_cfg)
    assert plan.output_rescale == 2.0
    grown = {(m, n): make() for m, n, make in grown_moment_entries(by_moment(old_state), plan)}
    old_m, old_v = old_state["output_layer.weight"]["exp_avg"], old_state["output_layer.weight"]["exp_avg_sq"]
    torch.testing.assert_close(grown[("exp_avg", "output_layer.weight")][:, :32], old_m / 2, rtol=0, atol=0)
    torch.testing.assert_close(grown[("exp_avg_sq", "output_layer.weight")][:, :32], old_v / 4, rtol=0, atol=0)


def test_growth_under_mup_moves_the_hidden_lr_and_a_resume_keeps_the_new_one(single_process):
    """m = 2 -> 4: the grown model's hidden matrices train at lr / 4 (their group's multiplier
    comes from the build); an optimizer state saved before the growth, loaded into the grown
    model's optimizer, is re-based on the new multipliers instead of restoring lr / 2."""
    mup = dict(use_mup=True, mup_base_width=OLD["hidden_size"] // 2, optim=dict(lr=1e-3))
    old_cfg, new_cfg = tiny_cfg(**OLD, **mup), tiny_cfg(**NEW, **mup)
    old_model, new_model = build_model(old_cfg), build_model(new_cfg)
    old_opt, new_opt = build_optimizer(old_model, old_cfg.optim), build_optimizer(new_model, new_cfg.optim)
    lrs = {g["name"]: g["lr"] for g in old_opt.param_groups}
    assert lrs == {"decay": 1e-3, "no_decay": 1e-3, "hidden": 1e-3 / 2}
    saved = state_by_name(old_opt.state_dict(), optimizer_param_names(old_model))
    new_opt.load_state_dict(state_by_index(saved, optimizer_param_names(new_model), optimizer_groups(new_model)))
    lrs = {g["name"]: (g["lr"], g["lr_mult"]) for g in new_opt.param_groups}
    assert lrs == {"decay": (1e-3, 1.0), "no_decay": (1e-3, 1.0), "hidden": (1e-3 / 4, 0.25)}
