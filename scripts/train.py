"""Train an FLM model: `python scripts/train.py [--config-name flm_tiny] [key=value ...]`.

With no arguments it trains the tiny CPU model on the built-in bilingual corpus and writes a
.nemo and TensorBoard logs under nemo_experiments/flm_tiny/. Re-running resumes. A config with
`stages` (e.g. --config-name flm_tiny_growth) runs a staged growth run, one stage after another.
Expected third-party noise is filtered before the heavy imports (NEMO_FLM_VERBOSE=1 keeps it).
"""

import os

from nemo_flm.console import quiet_startup

quiet_startup()

from hydra.core.hydra_config import HydraConfig  # noqa: E402
from nemo.core.config import hydra_runner  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from nemo_flm import parallel  # noqa: E402
from nemo_flm.checkpoint.lightning_io import checkpoint_dir  # noqa: E402
from nemo_flm.config import register_schema  # noqa: E402
from nemo_flm.errors import ConfigError  # noqa: E402
from nemo_flm.growth.staged import run_stages  # noqa: E402
from nemo_flm.training.nonfinite import NonFiniteError  # noqa: E402
from nemo_flm.training.run import train  # noqa: E402
from nemo_flm.training.summary import next_commands  # noqa: E402

register_schema()


@hydra_runner(config_path="../conf", config_name="flm_tiny")
def main(cfg: DictConfig) -> None:
    try:
        if cfg.stages:
            nemos = run_stages(cfg, train)
            if parallel.launch_rank() == 0:
                print(
                    "done: " + ", ".join(nemos) if nemos else "stopped before the end: run the same command to resume"
                )
            return
        model, _, _ = train(cfg)
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    except NonFiniteError as err:
        raise SystemExit(f"error: {err}") from None
    if parallel.is_rank_zero():
        hydra = HydraConfig.get()
        callback = model.trainer.checkpoint_callback
        last = callback.last_model_path if callback else None
        checkpoint = os.path.relpath(checkpoint_dir(last)) if last else None
        print("\n".join(next_commands(hydra.job.config_name, list(hydra.overrides.task), cfg, checkpoint)))


if __name__ == "__main__":
    main()
