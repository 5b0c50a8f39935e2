"""Train an FLM model: `python scripts/train.py [--config-name flm_tiny] [key=value ...]`.

With no arguments it trains the tiny CPU model on the built-in bilingual corpus and writes a
.nemo and TensorBoard logs under nemo_experiments/flm_tiny/.
"""
import lightning.pytorch as pl
from nemo.core.config import hydra_runner
from nemo.utils.exp_manager import exp_manager
from omegaconf import DictConfig, OmegaConf

from nemo_flm.config import ConfigError, load_model_config, register_schema
from nemo_flm.training.flm_model import FLMModel

register_schema()


@hydra_runner(config_path="../conf", config_name="flm_tiny")
def main(cfg: DictConfig) -> None:
    try:
        model_cfg = load_model_config(cfg.model)
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    trainer = pl.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True))
    log_dir = exp_manager(trainer, cfg.get("exp_manager"))
    model = FLMModel(model_cfg, trainer=trainer)
    trainer.fit(model)
    print(f"done: logs and checkpoints in {log_dir}")


if __name__ == "__main__":
    main()
