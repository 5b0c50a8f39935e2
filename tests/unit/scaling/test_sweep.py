"""The proxy sweep: its config is checked before anything trains, its proxies differ only in width,
finished runs are read back (not retrained), and proxies.json round-trips."""

import dataclasses
import json
import math
from pathlib import Path

import pytest

from nemo_flm.errors import ConfigError
from nemo_flm.scaling.proxies import read_proxies, write_proxies
from nemo_flm.scaling.sweep import load_sweep, log_dir, proxy_jobs, run_sweep, target_sizes

CONF = str(Path(__file__).parents[3] / "conf")
SWEEP = str(Path(CONF) / "scaling" / "mup_proxies.yaml")
SMALL = ["widths=[32,48,64,96,128]", "tokens=[4096,8192]"]


def test_default_sweep_proxies_differ_only_in_width(tmp_path):
    """Same depth, head dim, batch, seed, steps and schedule per budget; heads and FFN follow the
    width; μP on with the smallest width as base; each proxy in its own directory."""
    sweep = load_sweep(SWEEP, [f"exp_dir={tmp_path}"])
    jobs, first = proxy_jobs(sweep, CONF), sweep.widths[0]
    assert len(jobs) == len(sweep.widths) and len({job.name for job in jobs}) == len(jobs)
    same = {
        (m.num_layers, m.seq_length, m.global_batch_size, m.seed, m.data.seed, m.optim.lr, m.optim.lr_decay_samples)
        for m in (job.model for job in jobs)
    }
    assert len(same) == 1 and {job.trainer.max_steps for job in jobs} == {800}
    for job in jobs:
        m = job.model
        assert m.hidden_size // m.num_attention_heads == sweep.head_dim and m.ffn_hidden_size == 4 * m.hidden_size
        assert m.use_mup and m.mup_base_width == first and m.mup_scale_factor == m.hidden_size / first
        assert job.trainer.max_steps % job.trainer.val_check_interval == 0  # it validates at its last step
        assert log_dir(job) == str(tmp_path / job.name)


def test_every_token_budget_gets_its_own_schedule():
    jobs = proxy_jobs(load_sweep(SWEEP, SMALL), CONF)
    assert [job.trainer.max_steps for job in jobs] == [4] * 5 + [8] * 5
    assert [job.model.optim.lr_decay_samples for job in jobs] == [32] * 5 + [64] * 5


def test_targets_are_flm_stages_non_embedding_parameters():
    """The counts a built model gives (tests/unit/config/test_stage_configs.py builds them on meta)."""
    sizes = target_sizes(load_sweep(SWEEP), CONF)
    assert sizes == {"flm_16b": 16_110_395_392, "flm_51b": 49_332_484_096, "flm_101b": 100_673_966_080}


BAD_SWEEPS = [
    ("widths not increasing", ["widths=[32,64,48,96,128,160]"], "strictly increasing"),
    ("head dim not dividing", ["widths=[32,48,64,96,128,136]", "head_dim=16"], r"widths \[136\] are not multiples"),
    ("4 widths, 1 held out", ["widths=[32,64,96,128]"], "leave 3 to fit"),
    ("5 widths, 2 held out", ["widths=[32,64,96,128,160]", "held_out=2"], "leave 3 to fit"),
    ("nothing held out", ["held_out=0"], "held_out must be >= 1"),
    ("no token budget", ["tokens=[]"], "tokens must be a non-empty list"),
    ("odd head dim", ["head_dim=3", "widths=[3,6,9,12,15]"], "head_dim must be even"),
    ("unknown key", ["width=[32]"], "sweep key 'width'"),
    ("wrong type", ["held_out=one"], "sweep key 'held_out'"),
]


@pytest.mark.parametrize("overrides, problem", [b[1:] for b in BAD_SWEEPS], ids=[b[0] for b in BAD_SWEEPS])
def test_bad_sweep_configs_fail_in_one_line(overrides, problem):
    with pytest.raises(ConfigError, match=problem) as err:
        load_sweep(SWEEP, overrides)
    assert "\n" not in str(err.value)


def test_a_bad_base_job_override_fails_before_training():
    with pytest.raises(ConfigError, match="model.no_such_key") as err:
        proxy_jobs(load_sweep(SWEEP, SMALL + ["overrides=[model.no_such_key=1]"]), CONF)
    assert "\n" not in str(err.value)


def _finish(job, loss):
    """What a finished run leaves: its validation loss logged at its last step."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(Path(log_dir(job)) / "version_0")) as writer:
        writer.add_scalar("val_loss", loss + 1.0, job.trainer.max_steps // 2 - 1)
        writer.add_scalar("val_loss", loss, job.trainer.max_steps - 1)


def test_finished_proxies_are_read_not_retrained(tmp_path):
    jobs = proxy_jobs(load_sweep(SWEEP, SMALL[:1] + ["tokens=[4096]", f"exp_dir={tmp_path}"]), CONF)
    trained, lines = [], []

    def train(job):
        trained.append(job.name)
        if job.name != jobs[2].name:  # one run stops early: it is not fitted, and re-runs retry it
            _finish(job, 8.0 - math.log(job.model.hidden_size))

    first = run_sweep(jobs, train, lines.append)
    assert trained == [job.name for job in jobs] and len(first) == 4
    assert "not finished" in lines[2] and "trained in" in lines[0] and "N 25,472, 4,096 tokens" in lines[0]
    trained.clear()
    again = run_sweep(jobs, None, lines.append)  # --read-only
    assert trained == [] and again == first and "finished earlier" in lines[-1]
    run_sweep(jobs, train, lines.append)
    assert trained == [jobs[2].name]
    assert first[0].val_loss == pytest.approx(8.0 - math.log(32)) and first[0].num_layers == 2


def test_a_run_trained_under_another_config_is_refused_before_training(tmp_path):
    """Editing the sweep (here the head dim) keeps the proxies' names: their old runs must not be
    resumed or read as the new proxies."""
    from omegaconf import OmegaConf

    from nemo_flm.config import load_model_config

    old = proxy_jobs(load_sweep(SWEEP, SMALL + ["head_dim=16", f"exp_dir={tmp_path}"]), CONF)
    saved = Path(log_dir(old[-1])) / "version_0" / "hparams.yaml"
    saved.parent.mkdir(parents=True)
    OmegaConf.save({"cfg": load_model_config(old[-1].model)}, saved)
    assert run_sweep(old[-1:], None, print) == []  # its own config is accepted (and not finished)
    jobs = proxy_jobs(load_sweep(SWEEP, SMALL + ["head_dim=8", f"exp_dir={tmp_path}"]), CONF)
    trained = []
    with pytest.raises(ConfigError, match="num_attention_heads: 8 -> 16") as err:
        run_sweep(jobs, trained.append, print)
    assert trained == [] and "\n" not in str(err.value)


def test_proxies_json_round_trips_and_refuses_broken_records(tmp_path):
    from nemo_flm.scaling.proxies import Proxy

    proxies = [Proxy("w32", 32, 2, 2, 25_472, 204_800, 1.6e13, 7.1, "/runs/w32")]
    path = write_proxies(str(tmp_path / "proxies.json"), proxies)
    assert read_proxies(path) == proxies
    for broken in ({"val_loss": None}, {"tokens": 2.5}, {"val_loss": math.nan}, {"name": 3}):
        record = {**dataclasses.asdict(proxies[0]), **broken}
        (tmp_path / "bad.json").write_text(json.dumps({"proxies": [record]}))
        key = next(iter(broken))
        with pytest.raises(ConfigError, match=f"proxy 0 '{key}'") as err:
            read_proxies(str(tmp_path / "bad.json"))
        assert "\n" not in str(err.value)
    (tmp_path / "bad.json").write_text(json.dumps({"proxies": [{"name": "w32"}]}))
    with pytest.raises(ConfigError, match="lacks"):
        read_proxies(str(tmp_path / "bad.json"))
