"""The model and job configs: schema (dataclasses every YAML merges into), derived sizes, the data
blend as configured, and validation section by section. The base layer of nemo_flm: it imports
no other nemo_flm package."""

from nemo_flm.config.load import load_model_config, load_shape_config
from nemo_flm.config.schema import (
    JOB_SCHEMA,
    CheckpointConfig,
    CorpusConfig,
    DataConfig,
    GrowthInitConfig,
    GrowthRunConfig,
    JobConfig,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    StageConfig,
    register_schema,
    schema_merge,
)
from nemo_flm.config.shapes import ffn_size, head_dim, padded_vocab_size, samples_for_tokens, steps_for_tokens
from nemo_flm.config.validate import check_ramp_fits, validate, validate_ramp

__all__ = [
    "JOB_SCHEMA",
    "CheckpointConfig",
    "CorpusConfig",
    "DataConfig",
    "GrowthInitConfig",
    "GrowthRunConfig",
    "JobConfig",
    "ModelConfig",
    "OptimConfig",
    "ParallelConfig",
    "StageConfig",
    "check_ramp_fits",
    "ffn_size",
    "head_dim",
    "load_model_config",
    "load_shape_config",
    "padded_vocab_size",
    "register_schema",
    "samples_for_tokens",
    "schema_merge",
    "steps_for_tokens",
    "validate",
    "validate_ramp",
]
