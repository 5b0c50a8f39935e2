"""Train an FLM model: `python scripts/train.py [--config-name flm_tiny] [key=value ...]`.

With no arguments it trains the tiny CPU model on the built-in bilingual corpus and writes a
.nemo and TensorBoard logs under nemo_experiments/flm_tiny/. Re-running resumes.
"""
from nemo.core.config import hydra_runner
from omegaconf import DictConfig

from nemo_flm.config import ConfigError, register_schema
from nemo_flm.training.run import train

register_schema()


@hydra_runner(config_path="../conf", config_name="flm_tiny")
def main(cfg: DictConfig) -> None:
    try:
        _, _, log_dir = train(cfg)
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    print(f"done: logs and checkpoints in {log_dir}")


if __name__ == "__main__":
    main()
