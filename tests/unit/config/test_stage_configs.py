"""The real FLM stage configs compose, validate and have the expected sizes (built on meta)."""

import pytest
import torch

from nemo_flm.compose import compose_job
from nemo_flm.config import load_model_config
from nemo_flm.model.builder import build_model

# (config, global batch, TP, PP, start LR, (layers, hidden, heads)): docs/flm_facts.md §1. The 101B shape
# is published; the 16B and 51B shapes are the reconstruction the configs label as such.
STAGES = [
    ("flm_16b", 2304, 2, 1, 4e-4, (80, 4096, 32)),
    ("flm_51b", 2304, 4, 2, 3.4e-4, (80, 7168, 56)),
    ("flm_101b", 2160, 4, 4, 2e-4, (80, 10240, 80)),
]
VOCAB_ROWS = 100352  # 100256 tokens padded to a multiple of 128


def non_embedding_parameters(layers, h):
    """FLM's blocks counted from the schema (GPT-3 style, biases on every block linear, f = 4h,
    attention width = h): 16_110_395_392 / 49_332_484_096 / 100_673_966_080 for the three stages."""
    f = 4 * h
    qkv, proj = 3 * h * h + 3 * h, h * h + h
    fc1, fc2 = h * f + f, f * h + h
    layernorms = 2 * (2 * h)  # input and pre-MLP LayerNorm, weight and bias each
    return layers * (qkv + proj + fc1 + fc2 + layernorms) + 2 * h  # + final LayerNorm


@pytest.mark.parametrize("name, gbs, tp, pp, lr, shape", STAGES, ids=[s[0] for s in STAGES])
def test_stage_config_and_parameter_count(single_process, name, gbs, tp, pp, lr, shape):
    """The built model (on meta, TP=PP=1 to see it whole) has exactly the schema's parameters:
    a dropped bias, a wrong FFN or a stray parameter changes the integer."""
    cfg = load_model_config(compose_job(name).model)
    assert (
        cfg.global_batch_size,
        cfg.parallel.tensor_model_parallel_size,
        cfg.parallel.pipeline_model_parallel_size,
    ) == (gbs, tp, pp)
    assert cfg.optim.lr == lr and cfg.optim.min_lr == 6e-6 and cfg.seq_length == 2048
    layers, hidden, heads = shape
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads) == shape and hidden // heads == 128
    cfg.parallel.tensor_model_parallel_size = cfg.parallel.pipeline_model_parallel_size = 1
    cfg.parallel.sequence_parallel = False
    with torch.device("meta"):
        model = build_model(cfg)
    assert model.embedding.word_embeddings.weight.shape == model.output_layer.weight.shape == (VOCAB_ROWS, hidden)
    total = sum(p.numel() for p in model.parameters())
    embeddings = 2 * VOCAB_ROWS * hidden  # untied input and output embeddings
    assert total - embeddings == non_embedding_parameters(layers, hidden)


def test_101b_matches_the_published_shape(single_process):
    cfg = load_model_config(compose_job("flm_101b").model)
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.ffn_hidden_size) == (10240, 80, 40960)
    assert cfg.use_mup and cfg.output_mult == 2.0 and cfg.mup_scale_factor == 40.0 and cfg.mup_base_width == 256


def test_default_config_composes():
    cfg = load_model_config(compose_job("flm_tiny").model)
    assert cfg.num_layers == 4 and cfg.position_embedding == "xpos"


@pytest.mark.parametrize("name", ["flm_101b_growth", "flm_tiny_growth"])
def test_growth_plans_validate(name):
    from nemo_flm.growth.staged import stage_job, validate_stages

    cfg = compose_job(name)
    validate_stages(cfg)
    last = stage_job(cfg, len(cfg.stages) - 1).model
    base = compose_job(name.replace("_growth", "")).model
    assert (last.hidden_size, last.num_attention_heads, last.num_layers) == (
        base.hidden_size,
        base.num_attention_heads,
        base.num_layers,
    )


def test_a_stage_without_a_last_checkpoint_is_refused_at_load():
    """The next stage grows from the "last" checkpoint (FLM's 16B stage: at step 52,001, which NeMo
    saves on train end although no interval divides it): save_last false is refused up front."""
    from nemo_flm.errors import ConfigError
    from nemo_flm.growth.staged import validate_stages

    off = "exp_manager.checkpoint_callback_params.save_last=false"
    with pytest.raises(ConfigError, match="stage 'flm_16b' has checkpoint_callback_params.save_last false"):
        validate_stages(compose_job("flm_101b_growth", [off]))
    with pytest.raises(ConfigError, match="stage 'stage1' has"):
        validate_stages(compose_job("flm_tiny_growth", [off]))


def test_101b_growth_plan_published_values():
    from nemo_flm.growth.staged import stage_job

    cfg = compose_job("flm_101b_growth")
    jobs = [stage_job(cfg, i) for i in range(3)]
    assert [j.model.optim.lr for j in jobs] == [4e-4, 3.4e-4, 2e-4]
    assert [j.model.optim.lr_warmup_samples for j in jobs] == [4_608_000, 230_400, 230_400]
    assert [j.model.global_batch_size for j in jobs] == [2304, 2304, 2160]
    assert [
        (j.model.parallel.tensor_model_parallel_size, j.model.parallel.pipeline_model_parallel_size) for j in jobs
    ] == [(2, 1), (4, 2), (4, 4)]


def test_step_counts_follow_from_the_token_budgets():
    """ceil(tokens / 2048 / batch): 245.37B, 39.64B and 26.54B tokens give 52,001, 8,401 and 6,000 steps."""
    from nemo_flm.config import load_model_config

    expected = {"flm_16b": (52001, 119809571), "flm_51b": (8401, 19355469), "flm_101b": (6000, 12958985)}
    for name, (steps, samples) in expected.items():
        cfg = compose_job(name)
        assert (cfg.trainer.max_steps, load_model_config(cfg.model).optim.lr_decay_samples) == (steps, samples)


def test_growth_plan_stages_are_the_stage_jobs():
    """The plan's stages and the stand-alone stage configs come from the same files: no drift."""
    from omegaconf import OmegaConf

    from nemo_flm.growth.staged import stage_job

    plan = compose_job("flm_101b_growth")
    for index, name in enumerate(["flm_16b", "flm_51b", "flm_101b"]):
        job, alone = stage_job(plan, index), compose_job(name)
        job.model.growth = alone.model.growth
        assert job.trainer.max_steps == alone.trainer.max_steps
        assert OmegaConf.to_container(job.model, resolve=True) == OmegaConf.to_container(alone.model, resolve=True)
