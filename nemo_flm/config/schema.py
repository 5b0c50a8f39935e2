"""The config schema: one dataclass tree that every YAML in conf/ merges into.

Field names follow megatron-core (`num_layers`, `hidden_size`, ...) and the FLM/muP papers
(`xpos_scale_base`, `mup_base_width`, `output_mult`, ...). Merging a YAML into this schema makes
unknown keys and wrong types fail at load (config/validate.py then checks the relations between
fields), with one line naming the problem and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nemo_flm.errors import ConfigError

JOB_SCHEMA = "flm_job_schema"


@dataclass
class ParallelConfig:
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    # model chunks per pipeline stage (megatron's interleaved 1F1B schedule); null: one chunk
    virtual_pipeline_model_parallel_size: Optional[int] = None
    sequence_parallel: bool = False
    # auto: megatron on GPUs, local on CPU. megatron: megatron-core's DDP, distributed optimizer and
    # pipeline schedules; local: a plain loop with torch AdamW, PP=1 (training/engine.py)
    engine: str = "auto"
    overlap_grad_reduce: bool = True  # megatron engine: DP gradient reduce overlapped with backward
    # megatron engine: the updated weights' all-gather over DP overlapped with the next forward
    overlap_param_gather: bool = False
    backend: str = "auto"  # auto (nccl on GPU, gloo on CPU) | gloo | nccl
    # how long any collective (barrier, all-reduce, checkpoint planning) waits for the other ranks
    # before the job fails; torch.distributed's NCCL default is 10. 30 is Lightning's and megatron's
    # default: long enough for a slow rank to finish a checkpoint write at FLM's scale, and work
    # longer than that (growth between stages, packing a .nemo) runs outside the GPU job
    distributed_timeout_minutes: int = 30


@dataclass
class CorpusConfig:
    """The built-in bilingual corpus made from text inside installed packages (data/corpus.py)."""

    english_docstrings: bool = True  # stdlib docstrings besides pydoc_data topics
    max_english_chars: int = 20_000_000
    max_chinese_chars: int = 3_000_000
    # blend weights of its two languages (FLM's English:Chinese ratio is about 53.5:46.5)
    weights: Dict[str, float] = field(default_factory=lambda: {"en": 53.5, "zh": 46.5})


@dataclass
class DataConfig:
    # the training blend (config/blend.py): Megatron's [w1, prefix1, w2, prefix2, ...], prefixes alone
    # [prefix1, ...] (equal weights), or {name: prefix}; null = the built-in corpus. A prefix is a
    # megatron indexed dataset's path without .bin/.idx. Null by default, so that a blend given on
    # the command line replaces the whole blend instead of merging into a default.
    blend: Optional[Any] = None
    weights: Optional[Any] = None  # with a dict blend: {name: weight} (unset: equal weights); Any, as blend
    split: str = "98,2,0"
    seed: int = 1234
    cache_dir: str = "~/.cache/nemo_flm"  # where the built-in corpus is built
    # megatron's sample indices (built by global rank 0, read by every rank): null = beside the data
    # (megatron's default, on the storage every node reads the data from); set a shared folder when
    # the data's is read-only
    index_cache_dir: Optional[str] = None
    num_workers: int = 0  # DataLoader workers
    eval_samples: int = 64  # validation samples per language at each validation
    preprocess_workers: int = 2
    corpus: CorpusConfig = field(default_factory=CorpusConfig)


@dataclass
class OptimConfig:
    """AdamW + warmup + cosine decay to min_lr (docs/flm_facts.md §1)."""

    lr: float = 4e-4
    min_lr: float = 6e-6
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_grad: float = 1.0
    # a step whose loss or gradients hold NaN/Inf: stop (an error; the last checkpoint is kept) or skip its update
    on_nonfinite: str = "stop"
    lr_warmup_samples: int = 0
    # cosine decay length of this stage, in samples; FLM's per-stage horizon is not published
    lr_decay_samples: int = 100_000


@dataclass
class GrowthInitConfig:
    """Start this model from a grown checkpoint (growth/offline.py writes it) and ramp the MSG masks."""

    init_from: Optional[str] = None  # grown checkpoint directory: weights, Adam state, growth plan
    # the MSG mask ramp: c rises linearly 0 -> 1 over these steps of a stage that starts from growth
    # (the MSG code's default is 5000; FLM's is unpublished)
    grow_steps: int = 0
    # start from a grown checkpoint without masks: the new entries act at once and the model no
    # longer computes the previous stage's function. An explicit opt-in, since it loses growth's point
    no_ramp: bool = False


@dataclass
class ModelConfig:
    # architecture (docs/flm_facts.md §1)
    num_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    # head dim (megatron's kv_channels); None -> hidden_size / num_attention_heads, FLM's schema.
    # Set it to grow hidden size and heads separately; the FLM/HF export needs the schema value.
    kv_channels: Optional[int] = None
    ffn_hidden_size: Optional[int] = None  # None -> 4 x hidden_size
    seq_length: int = 128
    vocab_size: int = 100256  # tokenizer vocabulary before padding
    make_vocab_size_divisible_by: int = 128  # padded to a multiple of this x TP
    layernorm_epsilon: float = 1e-5
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    init_method_std: float = 0.02
    tie_word_embeddings: bool = False
    # positions (docs/flm_facts.md §4)
    position_embedding: str = "xpos"  # xpos | rope
    rotary_base: float = 10000.0
    xpos_gamma: float = 0.4
    xpos_scale_base: float = 512.0
    # blockwise causal attention (the xPos paper's length extrapolation): past seq_length, each half
    # window of seq_length/2 queries attends to itself and the previous half window (SDPA backend)
    blockwise_attention: bool = False
    # μP (model/mup.py; FLM's HF names): with m = hidden_size / mup_base_width, hidden matrices get
    # init variance / m and Adam LR / m; embeddings x input_mult; logits x output_mult / m
    use_mup: bool = False
    input_mult: float = 1.0
    output_mult: float = 1.0
    mup_base_width: int = 256
    mup_scale_factor: Optional[float] = None  # m: derived from the width; a given value must equal it
    # attention scores x sqrt(mup_base_head_dim) / d_head (μP's 1/d, equal to 1/sqrt(d) at the base
    # head size); null keeps 1/sqrt(d_head). FLM's head dim stays 128 at every stage.
    mup_base_head_dim: Optional[int] = None
    # what optim.lr / min_lr are under μP (FLM does not say): `base` = the base-width model's LRs
    # (hidden matrices get them / m), `hidden` = the hidden matrices' LRs at this width (the rest x m)
    mup_lr: str = "base"
    # backends
    transformer_impl: str = "local"  # local | transformer_engine
    attention_backend: str = "sdpa"  # sdpa | flash_attn | te
    # activation recompute: null, or full (each layer's input kept, the layer recomputed in backward;
    # megatron's uniform method, one layer per checkpoint). Megatron engine only.
    recompute: Optional[str] = None
    params_dtype: str = "fp32"  # fp32 | bf16 | fp64 (fp64: CPU exactness checks)
    # batch
    micro_batch_size: int = 2
    global_batch_size: int = 8
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    growth: GrowthInitConfig = field(default_factory=GrowthInitConfig)
    seed: int = 1234
    target: str = "nemo_flm.training.flm_model.FLMModel"
    nemo_version: Optional[str] = None  # written by NeMo's save_to


@dataclass
class StageConfig:
    """One stage of a staged growth run: its own shape, schedule, batch, layout and length."""

    name: str = "stage"
    max_steps: Optional[int] = None  # null: the job's trainer.max_steps (e.g. from train_tokens)
    train_tokens: Optional[float] = None  # this stage's token budget (the job's train_tokens)
    model: Dict[str, Any] = field(default_factory=dict)  # overrides of the job's model section
    # the loss a growth plan predicted for the end of this stage (scripts/plan_growth.py); the growth
    # report shows it beside the realised loss
    predicted_loss: Optional[float] = None


@dataclass
class GrowthRunConfig:
    """How a staged run grows each stage's checkpoint (the ramp is model.growth.grow_steps)."""

    depth_mode: str = "stack"  # stack | interleave | random
    init_std: Optional[float] = None  # std of new weight entries; None = the model's init_method_std
    seed: int = 4321
    stop_after: Optional[str] = None  # a stage name: end the run once it is done (one launcher job per stage)
    # grow a stage's checkpoint inside the training job when its grow job has not (global rank 0
    # grows, the other ranks wait for the folder to appear); false: a missing grown checkpoint is an
    # error (the launcher's chain runs growth as a CPU job of its own between the GPU jobs)
    grow_in_job: bool = True
    # tensors grown at once (threads of the grow step): memory ~ workers x (a tensor + its grown copy)
    workers: int = 4


@dataclass
class CheckpointConfig:
    """How training checkpoints are written (checkpoint/lightning_io.py): every rank writes its own
    part in parallel, rank 0 renames the folder when all parts are on disk."""

    # copy this rank's part to host memory and write it from a thread while training goes on
    # (the loop waits for the copy, and for the previous save if it is still writing)
    async_save: bool = False


@dataclass
class JobConfig:
    """A whole job YAML: Lightning trainer and exp_manager kwargs pass through; model is typed."""

    name: str = "flm"
    trainer: Dict[str, Any] = field(default_factory=dict)
    exp_manager: Dict[str, Any] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    # a token budget that step counts follow from: ${flm_steps:...} and ${flm_samples:...} in the YAML
    train_tokens: Optional[float] = None
    stages: List[StageConfig] = field(default_factory=list)  # non-empty: a staged growth run
    # named stage definitions (conf/stage/*.yaml) that `stages` entries interpolate
    stage_defs: Dict[str, Any] = field(default_factory=dict)
    # launcher jobs (conf/launcher/, scripts/launch.py): the SLURM job and the cluster; training ignores them
    run: Dict[str, Any] = field(default_factory=dict)
    cluster: Dict[str, Any] = field(default_factory=dict)
    growth: GrowthRunConfig = field(default_factory=GrowthRunConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


def register_schema() -> None:
    """Register JobConfig in Hydra's ConfigStore; job YAMLs list it first in `defaults`, so
    unknown or mistyped keys fail when Hydra composes the config."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=JOB_SCHEMA, node=JobConfig)


def schema_merge(schema: Any, cfg: Any, what: str) -> DictConfig:
    """`cfg` merged into the dataclass `schema`; an unknown key or a wrong type in one line."""
    try:
        if isinstance(cfg, DictConfig):  # resolved in its job, where `${train_tokens}` lives
            cfg = OmegaConf.to_container(cfg, resolve=True)
        return OmegaConf.merge(OmegaConf.structured(schema), cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        msg = str(err).splitlines()[0]
        where = schema.__module__.replace(".", "/") + ".py"
        raise ConfigError(f"{what} key '{key}': {msg} (see {where} for the schema)") from None
