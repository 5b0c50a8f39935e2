"""Train an FLM model: `python scripts/train.py [--config-name flm_tiny] [key=value ...]`.

With no arguments it trains the tiny CPU model on the built-in bilingual corpus and writes a
.nemo and TensorBoard logs under nemo_experiments/flm_tiny/. Re-running resumes. A config with
`stages` (e.g. --config-name flm_tiny_growth) runs a staged growth run, one stage after another.
"""

from nemo.core.config import hydra_runner
from omegaconf import DictConfig

from nemo_flm.config import ConfigError, register_schema
from nemo_flm.growth.staged import run_stages
from nemo_flm.training.run import train

register_schema()


@hydra_runner(config_path="../conf", config_name="flm_tiny")
def main(cfg: DictConfig) -> None:
    try:
        if cfg.stages:
            nemos = run_stages(cfg, train)
            print("done: " + ", ".join(nemos) if nemos else "stopped before the end: run the same command to resume")
        else:
            _, _, log_dir = train(cfg)
            print(f"done: logs and checkpoints in {log_dir}")
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None


if __name__ == "__main__":
    main()
