"""Serve a trained FLM model over HTTP: `python scripts/flm_server.py [key=value ...]`.

The config is flm_eval.py's (conf/flm_inference.yaml): the model keys, `inference:` (the defaults
of NeMo's PUT /generate), `host` (127.0.0.1), `port` (5555) and `server_limits:`. The API (NeMo's
/generate, OpenAI's /v1/completions, the tokenizer endpoints lm-evaluation-harness uses) is in
docs/server.md. One process: tensor_model_parallel_size must come to 1.
"""

from nemo_flm.console import quiet_startup

quiet_startup()

from nemo.core.config import hydra_runner  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from nemo_flm.errors import ConfigError  # noqa: E402
from nemo_flm.inference.job import check_single_process, load_generator, sampling_defaults, server_limits  # noqa: E402
from nemo_flm.inference.server import make_server, serve  # noqa: E402


@hydra_runner(config_path="../conf", config_name="flm_inference")
def main(cfg: DictConfig) -> None:
    try:
        params, limits = sampling_defaults(cfg), server_limits(cfg)
        generator = load_generator(cfg)
        check_single_process()
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None
    serve(make_server(generator, params, cfg.host, cfg.port, limits))


if __name__ == "__main__":
    main()
