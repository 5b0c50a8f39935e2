"""A proxy through the real training entry point: stopped midway it is not counted, re-running the
sweep resumes it from its checkpoint to the end, and then it is read back without training."""

from pathlib import Path

import lightning.pytorch as pl

from nemo_flm.scaling.sweep import load_sweep, proxy_jobs, run_sweep

CONF = str(Path(__file__).parents[2] / "conf")
TINY = "overrides=[model.num_layers=2,model.seq_length=32,model.data.eval_samples=4,+trainer.enable_progress_bar=false]"


class StopAfter(pl.Callback):
    """Stops the run after `steps` steps; records the step each fit starts at."""

    def __init__(self, steps=None):
        self.steps, self.starts = steps, []

    def on_train_start(self, trainer, *args):
        self.starts.append(trainer.global_step)

    def on_train_batch_end(self, trainer, *args):
        trainer.should_stop = self.steps is not None and trainer.global_step >= self.steps


def test_interrupted_proxy_resumes_and_is_then_read_back(tmp_path):
    from nemo_flm.training.run import train

    sweep = load_sweep(str(Path(CONF) / "scaling" / "mup_proxies.yaml"), [TINY, "tokens=[1024]", f"exp_dir={tmp_path}"])
    job = proxy_jobs(sweep, CONF)[0]  # 4 steps of 8 x 32 tokens, validated and saved at steps 2 and 4
    lines, stop, watch = [], StopAfter(2), StopAfter()
    assert run_sweep([job], lambda j: train(j, callbacks=[stop]), lines.append) == []
    assert "not finished" in lines[-1]
    (proxy,) = run_sweep([job], lambda j: train(j, callbacks=[watch]), lines.append)
    assert watch.starts == [2] and 5 < proxy.val_loss < 12 and proxy.tokens == 1024  # resumed at step 2
    assert run_sweep([job], lambda j: watch.starts.append("trained again"), lines.append) == [proxy]
    assert watch.starts == [2] and "finished earlier" in lines[-1]
