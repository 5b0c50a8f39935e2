"""The planner stays within its FLOPs budget (counted by flops.py), proposes growable
stage shapes, beats the final shape trained alone when growth is worth something and not when it
is worth nothing, and refuses impossible requests in one line."""

import pytest
from omegaconf import OmegaConf

from nemo_flm.compose import compose_job
from nemo_flm.config import head_dim, load_shape_config
from nemo_flm.errors import ConfigError
from nemo_flm.flops import train_flops_per_token
from nemo_flm.growth.plan import make_plan
from nemo_flm.scaling.compute_law import ComputeLaw
from nemo_flm.scaling.plan_output import plan_body
from nemo_flm.scaling.planner import Schedule, budget_flops, plan_growth

WIDTHS = [i / 10 for i in range(1, 10)]
BIG_LAW = ComputeLaw(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)  # synthetic (Chinchilla's values)
TINY_LAW = ComputeLaw(E=2.0, A=300.0, alpha=0.3, B=55.0, beta=0.3)  # synthetic
FLM_BUDGET = 5.5e22


@pytest.fixture(scope="module")
def flm_101b():
    job = compose_job("flm_101b")
    return load_shape_config(job.model), Schedule.of_job(job, load_shape_config(job.model), 5000)


@pytest.fixture(scope="module")
def tiny():
    every = ["exp_manager.checkpoint_callback_params.every_n_train_steps=2", "trainer.val_check_interval=2"]
    job = compose_job("flm_tiny", ["model.seq_length=32", *every])
    model = load_shape_config(job.model)
    return model, Schedule.of_job(job, model, grow_steps=2)


def test_plan_stays_within_budget(tiny):
    """Recount each stage's FLOPs from the YAML the plan becomes: its shape, steps and batch."""
    final, sched = tiny
    budget = 40 * sched.tokens_per_step * train_flops_per_token(final)  # 40 steps of the final shape
    plan = plan_growth(TINY_LAW, 0.8, final, budget, 3, sched, WIDTHS, [0.5, 1.0])
    spent = 0.0
    for stage in plan_body(plan, "p", [], 2)["stages"]:
        model = load_shape_config(OmegaConf.merge(final, stage["model"]))
        spent += train_flops_per_token(model) * stage["max_steps"] * model.global_batch_size * model.seq_length
        assert stage["max_steps"] % sched.quantum == 0
    assert len(plan.stages) == 3 and 0.85 * budget < spent <= budget


def test_stage_shapes_are_growable(flm_101b):
    final, sched = flm_101b
    plan = plan_growth(BIG_LAW, 0.8, final, FLM_BUDGET, 3, sched, WIDTHS)
    models = [s.model for s in plan.stages]
    for small, large in zip(models, models[1:]):
        make_plan(small, large)  # growth accepts every link
        assert large.hidden_size > small.hidden_size
    for model in models:
        assert head_dim(model) == 128 and model.ffn_hidden_size == 4 * model.hidden_size and model.num_layers == 80
        assert model.num_attention_heads % model.parallel.tensor_model_parallel_size == 0
        assert model.mup_scale_factor == model.hidden_size / 256  # muP width multiplier follows the width
    assert models[-1] == final


def test_growth_beats_training_the_final_shape_alone_only_when_it_is_worth_something(flm_101b):
    final, sched = flm_101b
    worth = plan_growth(BIG_LAW, 0.8, final, FLM_BUDGET, 3, sched, WIDTHS)
    assert worth.stages[-1].predicted_loss < worth.scratch_loss - 0.01
    assert worth.flops < 0.8 * worth.scratch_flops
    worthless = plan_growth(BIG_LAW, 0.0, final, FLM_BUDGET, 3, sched, WIDTHS)
    assert worthless.stages[-1].predicted_loss >= worthless.scratch_loss
    assert worthless.stages[0].steps == sched.min_steps(grown=False)  # as little as allowed before the final shape


def test_budget_in_gpu_hours():
    assert budget_flops(gpu_hours=1000.0, mfu=0.5, peak_tflops=312.0) == pytest.approx(1000 * 3600 * 312e12 * 0.5)


def one_line_error(match, fn, *args):
    with pytest.raises(ConfigError, match=match) as err:
        fn(*args)
    assert "\n" not in str(err.value)


def test_impossible_plans_are_refused(tiny):
    final, sched = tiny
    step = sched.tokens_per_step * train_flops_per_token(final)
    one_line_error("below the .* the final shape needs", plan_growth, TINY_LAW, 0.8, final, 3 * step, 3, sched, WIDTHS)
    one_line_error("no 5-stage chain", plan_growth, TINY_LAW, 0.8, final, 1e6 * step, 5, sched, WIDTHS)
    one_line_error("eta must be in", plan_growth, TINY_LAW, 1.2, final, 100 * step, 2, sched, WIDTHS)
    one_line_error(
        "need an MSG mask ramp", plan_growth, TINY_LAW, 0.8, final, 100 * step, 2, Schedule(256, 2, 0), WIDTHS
    )
    one_line_error("--mfu", budget_flops, None, 100.0)
    one_line_error("--budget-flops, or as --gpu-hours", budget_flops, 1e20, 100.0)
    one_line_error("positive number of FLOPs", budget_flops, float("nan"))
