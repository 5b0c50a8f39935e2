"""Each config validation error is one line naming the problem, raised before anything is built."""

import pytest
import torch

from nemo_flm.compose import compose_job
from nemo_flm.config import load_model_config, padded_vocab_size
from nemo_flm.data.tokenizer import check_vocab_covers_tokenizer
from nemo_flm.errors import ConfigError


def _load(**overrides):
    parallel = overrides.pop("parallel", {})
    return load_model_config({**overrides, "parallel": parallel})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_size": 100, "num_attention_heads": 3}, "not divisible by num_attention_heads"),
        ({"hidden_size": 60, "num_attention_heads": 4, "ffn_hidden_size": 240}, "head dim 15 must be even"),
        ({"parallel": {"tensor_model_parallel_size": 3}}, "not divisible by tensor_model_parallel_size 3"),
        ({"num_layers": 3, "parallel": {"pipeline_model_parallel_size": 2}}, "num_layers 3 is not divisible"),
        ({"seq_length": 1}, "seq_length must be >= 2"),
        ({"make_vocab_size_divisible_by": 0}, "make_vocab_size_divisible_by must be >= 1"),
        ({"position_embedding": "alibi"}, "position_embedding must be"),
        ({"attention_backend": "te"}, "attention_backend 'te' goes with transformer_impl"),
        ({"parallel": {"sequence_parallel": True}}, "sequence_parallel needs tensor_model_parallel_size > 1"),
        ({"global_batch_size": 6, "micro_batch_size": 4}, "not a multiple of micro_batch_size"),
        (
            {"data": {"blend": [1.0, "data/en", 2.0]}},
            "neither weight/prefix pairs",
        ),
        ({"data": {"split": "98,2"}}, "data.split must be three numbers"),
        ({"optim": {"lr": 1e-6, "min_lr": 1e-5}}, "optim.lr"),
        ({"growth": {"init_from": "/nonexistent/grown"}}, "growth.grow_steps is 0 on a stage that starts from a grown"),
        ({"growth": {"no_ramp": True, "grow_steps": 5}}, "growth.no_ramp is set but growth.grow_steps is 5"),
        ({"growth": {"grow_steps": -1}}, "growth.grow_steps must be >= 0"),
        ({"no_such_key": 1}, "no_such_key"),
        ({"num_layers": "many"}, "num_layers"),
    ],
)
def test_bad_config_is_a_one_line_error(overrides, message):
    with pytest.raises(ConfigError) as err:
        _load(**overrides)
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_vocab_is_padded_to_128_times_tp():
    assert padded_vocab_size(_load()) == 100352
    assert padded_vocab_size(_load(parallel={"tensor_model_parallel_size": 2})) == 100352
    assert (
        padded_vocab_size(_load(hidden_size=96, num_attention_heads=6, parallel={"tensor_model_parallel_size": 3}))
        == 100608
    )


@pytest.mark.parametrize("overrides", [{"make_vocab_size_divisible_by": 1}, {"vocab_size": 50000}])
def test_vocab_smaller_than_the_tokenizer_is_refused(overrides):
    """EOD is id 100256: 100256 rows (or 50048) would fail with an IndexError at the first forward."""
    with pytest.raises(ConfigError, match="FLM tokenizer writes ids up to 100260") as err:
        check_vocab_covers_tokenizer(_load(**overrides))
    assert "\n" not in str(err.value)
    check_vocab_covers_tokenizer(_load(vocab_size=100261, make_vocab_size_divisible_by=1))  # just enough rows


def test_ramp_less_growth_is_an_explicit_opt_in(tmp_path):
    cfg = _load(growth={"init_from": str(tmp_path), "no_ramp": True})
    assert cfg.growth.no_ramp and cfg.growth.grow_steps == 0


def test_staged_run_without_a_ramp_fails_before_training(tmp_path):
    from nemo_flm.growth.staged import validate_stages

    cfg = _compose("flm_tiny_growth", "model.growth.grow_steps=0", f"exp_manager.exp_dir={tmp_path}")
    with pytest.raises(ConfigError, match="growth.grow_steps is 0 on a stage that starts from a grown checkpoint"):
        validate_stages(cfg)


def test_staged_run_with_no_growth_workers_fails_before_training(tmp_path):
    from nemo_flm.growth.staged import validate_stages

    cfg = _compose("flm_tiny_growth", "growth.workers=0", f"exp_manager.exp_dir={tmp_path}")
    with pytest.raises(ConfigError, match="growth.workers must be at least 1"):
        validate_stages(cfg)


def _compose(name, *overrides):
    return compose_job(name, overrides)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.make_vocab_size_divisible_by=1", "the model's vocab has 100256 rows"),
        ("model.growth.init_from={tmp}", "is not a grown checkpoint"),
    ],
)
def test_training_refuses_bad_input_before_making_anything(tmp_path, override, message):
    """The training entry checks what the schema cannot (the tokenizer's ids, the grown checkpoint)
    before the trainer or exp_manager make any directory."""
    from nemo_flm.training.run import train

    overrides = [override.format(tmp=tmp_path), "model.growth.grow_steps=2", f"exp_manager.exp_dir={tmp_path / 'exp'}"]
    with pytest.raises(ConfigError, match=message):
        train(_compose("flm_tiny", *overrides))
    assert not (tmp_path / "exp").exists()


def test_staged_run_whose_grown_stage_cannot_ramp_fails_before_training(tmp_path):
    from nemo_flm.growth.staged import validate_stages

    te = ["+stages.1.model.transformer_impl=transformer_engine", "+stages.1.model.attention_backend=te"]
    cfg = _compose("flm_tiny_growth", *te, f"exp_manager.exp_dir={tmp_path}")
    with pytest.raises(ConfigError, match="an MSG ramp runs on transformer_impl=local"):
        validate_stages(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the errors are for machines without CUDA")
def test_missing_backends_are_one_line_errors(build):
    with pytest.raises(RuntimeError, match="needs Transformer Engine and a CUDA GPU"):
        build(transformer_impl="transformer_engine", attention_backend="te")
    with pytest.raises(RuntimeError, match="needs flash-attn and a CUDA GPU"):
        build(attention_backend="flash_attn")


@pytest.mark.skipif(torch.cuda.is_available(), reason="pipeline and sequence parallelism are allowed on GPUs")
def test_engines_this_machine_cannot_run_are_clear_errors():
    """On CPU: the megatron engine, and PP or sequence parallel (which need it), are refused in one line."""
    from nemo_flm.training.engine import resolve_engine

    assert resolve_engine(_load()) == "local"
    cases = {
        "parallel.engine megatron needs CUDA": {"engine": "megatron"},
        "pipeline_model_parallel_size > 1 needs the megatron engine": {"pipeline_model_parallel_size": 2},
        "sequence_parallel needs the megatron engine": {"tensor_model_parallel_size": 2, "sequence_parallel": True},
        "overlap_param_gather needs the megatron engine": {"overlap_param_gather": True},
    }
    for message, par in cases.items():
        with pytest.raises(ConfigError, match=message):
            resolve_engine(_load(num_layers=4, parallel=par))
    with pytest.raises(ConfigError, match="recompute needs the megatron engine"):
        resolve_engine(_load(recompute="full"))


@pytest.mark.parametrize(
    "par, message",
    [
        ({"pipeline_model_parallel_size": 2, "virtual_pipeline_model_parallel_size": 2}, "not divisible by"),
        ({"virtual_pipeline_model_parallel_size": 2}, "needs pipeline_model_parallel_size >= 2"),
        ({"engine": "fast"}, "parallel.engine must be"),
    ],
)
def test_pipeline_layouts_that_cannot_be_built_are_refused(par, message):
    with pytest.raises(ConfigError, match=message):
        _load(num_layers=2, parallel=par)


def test_tied_embeddings_under_pipeline_parallelism_are_refused():
    with pytest.raises(ConfigError, match="tie_word_embeddings with pipeline_model_parallel_size > 1"):
        _load(tie_word_embeddings=True, parallel={"pipeline_model_parallel_size": 2})
