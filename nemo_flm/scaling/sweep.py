"""A μP proxy sweep: models that differ only in width, trained on the same tokens.

The sweep config (conf/scaling/mup_proxies.yaml) names a base job (conf/<base>.yaml) with
Hydra overrides shared by every proxy, the widths (the head dim stays fixed, the heads follow;
FFN 4 x width; the smallest width is μP's base width), the token budgets (one proxy per width and
budget, each with its own warmup and cosine length) and how many of the largest widths the fit
holds out. Each proxy is a plain job of the normal training entry point in its own exp_manager
directory `<exp_dir>/<name>`, with the same data order and seed as the others: a re-run skips
proxies that validated at their last step and resumes an interrupted one from its checkpoint
(exp_manager's resume_if_exists). Its loss is the validation loss logged at its last step, read
back from its TensorBoard scalars, so finished runs are read without re-training.

Everything is checked, in one line per problem, before the first proxy trains.
"""

from __future__ import annotations

import glob
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nemo_flm.compose import compose_job
from nemo_flm.config import load_model_config, schema_merge, steps_for_tokens
from nemo_flm.curves import read_scalars
from nemo_flm.errors import ConfigError
from nemo_flm.estimate import non_embedding_params
from nemo_flm.flops import train_flops_per_token
from nemo_flm.scaling.proxies import Proxy
from nemo_flm.scaling.size_law import MIN_POINTS
from nemo_flm.training.summary import duration


@dataclass
class SweepConfig:
    """The schema a sweep YAML merges into: unknown keys and wrong types fail at load."""

    base: str = "flm_tiny"  # the job every proxy is: conf/<base>.yaml
    overrides: List[str] = field(default_factory=list)  # Hydra overrides of that job, for every proxy
    widths: List[int] = field(default_factory=list)  # hidden sizes, increasing; the first is μP's base width
    head_dim: int = 16  # fixed across widths: num_attention_heads = width / head_dim
    tokens: List[float] = field(default_factory=list)  # token budgets: one proxy per (width, budget)
    warmup_fraction: float = 0.1  # of each proxy's steps
    validations: int = 2  # per proxy, each with a checkpoint to resume from; the last at its final step
    held_out: int = 1  # the largest widths, kept out of the fit to measure its prediction error
    targets: List[str] = field(default_factory=lambda: ["flm_16b", "flm_51b", "flm_101b"])  # conf/ jobs to predict
    exp_dir: str = "nemo_experiments/mup_proxies"


def load_sweep(path: str, overrides: List[str] = ()) -> DictConfig:
    """The sweep YAML with `key=value` overrides, merged into SweepConfig and checked."""
    try:
        raw = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides)))
    except FileNotFoundError:
        raise ConfigError(f"sweep config {path} not found: give a YAML like conf/scaling/mup_proxies.yaml") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"sweep config {path}: {str(err).splitlines()[0]}: fix its YAML or the override") from None
    sweep = schema_merge(SweepConfig, raw, "sweep")
    check_sweep(sweep)
    return sweep


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_sweep(sweep: DictConfig) -> None:
    """The relations the schema cannot see: enough increasing widths to fit after the hold-out,
    widths the head dim divides, budgets and fractions in range."""
    widths = list(sweep.widths)
    _require(sweep.held_out >= 1, f"held_out must be >= 1, got {sweep.held_out}: hold out the largest proxy at least")
    _require(
        len(widths) - sweep.held_out >= MIN_POINTS,
        f"{len(widths)} widths with {sweep.held_out} held out leave {len(widths) - sweep.held_out} to fit: "
        f"the size law needs {MIN_POINTS}; add widths or hold out fewer",
    )
    _require(
        all(b > a for a, b in zip(widths, widths[1:])),
        f"widths must be strictly increasing, got {widths}: sort them and drop repeats",
    )
    _require(
        sweep.head_dim >= 2 and sweep.head_dim % 2 == 0,
        f"head_dim must be even and >= 2 (rotary/xPos pairs), got {sweep.head_dim}",
    )
    bad = [w for w in widths if w % sweep.head_dim]
    _require(not bad, f"widths {bad} are not multiples of head_dim {sweep.head_dim}: the heads must divide the width")
    _require(
        len(sweep.tokens) >= 1 and all(t > 0 for t in sweep.tokens),
        f"tokens must be a non-empty list of budgets > 0, got {list(sweep.tokens)}",
    )
    _require(0 <= sweep.warmup_fraction < 1, f"warmup_fraction must be in [0, 1), got {sweep.warmup_fraction}")
    _require(sweep.validations >= 1, f"validations must be >= 1, got {sweep.validations}")


def _interval(steps: int, count: int) -> int:
    """The smallest divisor of `steps` giving at most `count` validations: the last is at the final step."""
    return next(d for d in range(math.ceil(steps / count), steps + 1) if steps % d == 0)


def proxy_job(sweep: DictConfig, conf_dir: str, width: int, budget: float) -> DictConfig:
    """The job of one proxy: the base job at this width (μP base = the smallest width), trained
    for the budget in whole steps, with its own LR schedule, in `<exp_dir>/<name>`."""
    base = sweep.widths[0]
    shape = [
        f"model.hidden_size={width}",
        f"model.num_attention_heads={width // sweep.head_dim}",
        f"model.ffn_hidden_size={4 * width}",
        "model.use_mup=true",
        f"model.mup_base_width={base}",
        f"model.mup_scale_factor={width / base}",
    ]
    job = compose_job(sweep.base, list(sweep.overrides) + shape, conf_dir)
    model = job.model
    steps = steps_for_tokens(budget, model.seq_length, model.global_batch_size)
    every = _interval(steps, sweep.validations)
    job.name = f"w{width}_{steps * model.global_batch_size * model.seq_length}tok"
    job.exp_manager.exp_dir = sweep.exp_dir
    job.exp_manager.name = job.name
    job.exp_manager.checkpoint_callback_params.every_n_train_steps = every
    job.trainer.max_steps = steps
    job.trainer.val_check_interval = every
    model.optim.lr_warmup_samples = round(sweep.warmup_fraction * steps) * model.global_batch_size
    model.optim.lr_decay_samples = steps * model.global_batch_size
    load_model_config(model)  # a bad shape fails here, before anything trains
    return job


def proxy_jobs(sweep: DictConfig, conf_dir: str) -> List[DictConfig]:
    """Every proxy's job, budgets outer and widths inner (each budget's fit set is contiguous)."""
    jobs = [proxy_job(sweep, conf_dir, w, t) for t in sweep.tokens for w in sweep.widths]
    names = [job.name for job in jobs]
    _require(len(set(names)) == len(names), f"token budgets {list(sweep.tokens)} round to the same steps: space them")
    return jobs


def target_sizes(sweep: DictConfig, conf_dir: str) -> dict:
    """Non-embedding parameters of each target job (e.g. FLM's 16B / 51B / 101B stages)."""
    return {
        name: non_embedding_params(load_model_config(compose_job(name, conf_dir=conf_dir).model))
        for name in sweep.targets
    }


def log_dir(job: DictConfig) -> str:
    return os.path.join(job.exp_manager.exp_dir, job.exp_manager.name)


def final_val_loss(job: DictConfig) -> Optional[float]:
    """The validation loss logged after the job's last step, or None when it has not got there.
    Lightning logs the metrics of step k (counted from 1) at TensorBoard step k - 1."""
    points = read_scalars(log_dir(job), ["val_loss"])["val_loss"] if os.path.isdir(log_dir(job)) else []
    last = dict(points).get(job.trainer.max_steps - 1)
    return None if last is None or not math.isfinite(last) else float(last)


def proxy_record(job: DictConfig, val_loss: float) -> Proxy:
    model = load_model_config(job.model)
    tokens = job.trainer.max_steps * model.global_batch_size * model.seq_length
    return Proxy(
        name=job.name,
        hidden_size=model.hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_layers=model.num_layers,
        non_embedding_params=non_embedding_params(model),
        tokens=tokens,
        train_flops=float(tokens * train_flops_per_token(model)),
        val_loss=val_loss,
        log_dir=os.path.abspath(log_dir(job)),
    )


def _differences(old: dict, new: dict, prefix: str = "") -> List[str]:
    """`key: old -> new` for every dotted key whose value differs between two nested dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def check_runs_match(jobs: List[DictConfig]) -> None:
    """A proxy directory trained under another model config (the sweep was edited: a new head dim,
    LR, depth, ...) must be neither resumed nor read as this proxy: its name says only the width and
    tokens. Compared with the config each run saved (exp_manager's hparams.yaml), before any training."""
    for job in jobs:
        new = OmegaConf.to_container(load_model_config(job.model))
        for saved in glob.glob(os.path.join(log_dir(job), "version_*", "hparams.yaml")):
            changed = _differences(OmegaConf.to_container(OmegaConf.load(saved).cfg), new)
            _require(
                not changed,
                f"{log_dir(job)} was trained with another model config ({'; '.join(changed[:3])}): give the sweep "
                "another exp_dir, or move that run away to retrain it",
            )


def run_sweep(jobs: List[DictConfig], train_fn: Optional[Callable], say: Callable[[str], None] = print) -> List[Proxy]:
    """Train each proxy not yet finished (train_fn None: read finished ones only) and return the
    finished proxies' records, saying one line per proxy."""
    check_runs_match(jobs)
    started, proxies = time.perf_counter(), []
    for index, job in enumerate(jobs, 1):
        head = f"[{index}/{len(jobs)}] {job.name}"
        loss, took = final_val_loss(job), None
        if loss is None and train_fn is not None:
            began = time.perf_counter()
            train_fn(job)
            loss, took = final_val_loss(job), time.perf_counter() - began
        if loss is None:
            say(f"{head}: not finished ({log_dir(job)}): {'stopped early' if train_fn else 'run without --read-only'}")
            continue
        proxies.append(proxy_record(job, loss))
        how = f"trained in {duration(took)}" if took is not None else "finished earlier"
        say(
            f"{head}: N {proxies[-1].non_embedding_params:,}, {proxies[-1].tokens:,} tokens, val loss {loss:.4f}; "
            f"{how} (sweep {duration(time.perf_counter() - started)})"
        )
    return proxies
