"""The one way a job config is composed outside a Hydra main.

Scripts, benchmarks and tests compose conf/ jobs exactly as scripts/train.py's hydra_runner does
(the structured schema registered first, command-line overrides applied), so a job checked,
estimated, launched or grown is the job that trains. Hydra's own errors (an unknown config, a
bad override) come out as one-line ConfigErrors.
"""

from __future__ import annotations

import os
from typing import Sequence

from omegaconf import DictConfig

from nemo_flm.config import register_schema
from nemo_flm.errors import ConfigError

CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def compose_job(name: str, overrides: Sequence[str] = (), conf_dir: str = CONF_DIR) -> DictConfig:
    """The job `name` (e.g. flm_tiny, launcher/flm_101b) from `conf_dir` with Hydra overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    register_schema()
    try:
        with initialize_config_dir(config_dir=os.path.abspath(conf_dir), version_base=None):
            return compose(name, overrides=list(overrides))
    except HydraException as err:
        reason = " ".join(str(err).split())  # Hydra's fix ("To append ... use +key=") is on a later line
        raise ConfigError(f"job '{name}' with {list(overrides)}: {reason}") from None
