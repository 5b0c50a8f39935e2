"""Generate text with a trained FLM model: `python scripts/flm_eval.py [key=value ...]`.

NeMo 1.x's megatron_gpt_eval.py with its config keys (conf/flm_inference.yaml): `gpt_model_file`
(default: the main job's .nemo) or `checkpoint_dir` + `checkpoint_name`, `prompts` or
`prompts_jsonl`, the `inference:` sampling keys, `tensor_model_parallel_size: -1` (as saved).
`server=true` serves the model over HTTP instead (nemo_flm/inference/server.py). Tensor
parallelism: launch one process per rank with torchrun; rank 0 prints.
"""

import json
import sys

from nemo_flm.console import quiet_startup

quiet_startup()

from nemo.core.config import hydra_runner  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from tqdm import tqdm  # noqa: E402

from nemo_flm import parallel  # noqa: E402
from nemo_flm.atomic import atomic_output  # noqa: E402
from nemo_flm.data.tokenizer import FLMTokenizer  # noqa: E402
from nemo_flm.errors import ConfigError  # noqa: E402
from nemo_flm.inference.generator import Completion, Generator  # noqa: E402
from nemo_flm.inference.job import check_single_process, load_generator, sampling_defaults, server_limits  # noqa: E402
from nemo_flm.inference.sampling import SamplingParams  # noqa: E402


def _jsonl_prompts(path: str) -> list:
    prompts = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                prompts += [json.loads(line)["prompt"]] if line.strip() else []
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(f'{path} line {number}: expected {{"prompt": "..."}}') from None
    return prompts


def read_prompts(cfg: DictConfig, params: SamplingParams) -> list:
    """(text, token ids) of each prompt, from `prompts_jsonl` (one {"prompt": ...} per line) or the
    `prompts` list, checked against max_context before the model loads."""
    prompts = _jsonl_prompts(cfg.prompts_jsonl) if cfg.prompts_jsonl else list(cfg.prompts or [])
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ConfigError("prompts must be a non-empty list of non-empty strings (or prompts_jsonl lines)")
    tokenizer = FLMTokenizer()
    encoded = [(p, ([tokenizer.bos] if params.add_BOS else []) + tokenizer.encode(p)) for p in prompts]
    longest = max(len(ids) for _, ids in encoded)
    if longest + params.tokens_to_generate > cfg.max_context:
        raise ConfigError(
            f"a prompt of {longest} tokens + tokens_to_generate {params.tokens_to_generate} exceeds max_context "
            f"{cfg.max_context}: shorten it, generate fewer tokens or raise max_context"
        )
    return encoded


def show(prompt: str, completion: Completion, params: SamplingParams) -> str:
    lines = [f"=== {prompt}{completion.text}"]
    if params.compute_logprob:
        lines.append(f"    logprobs: {[round(x, 4) for x in completion.logprobs]}")
    return "\n".join(lines)


def generate_all(generator: Generator, prompts: list, params: SamplingParams, cfg: DictConfig) -> list:
    """Results in prompt order, `batch_size` prompts per batch, with a progress bar (or streaming)."""
    results = []
    stream = cfg.stream and parallel.is_rank_zero()
    batch_size = 1 if cfg.stream else cfg.batch_size
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc="batches", disable=stream or not parallel.is_rank_zero() or len(batches) < 2):
        batch = prompts[start : start + batch_size]
        if stream:
            print(f"=== {batch[0][0]}", end="", flush=True)
        on_token = (lambda row, text: print(text, end="", flush=True)) if stream else None
        completions = generator.generate([ids for _, ids in batch], params, on_token)
        if stream:
            print()
        results.extend(zip([text for text, _ in batch], completions))
    return results


@hydra_runner(config_path="../conf", config_name="flm_inference")
def main(cfg: DictConfig) -> None:
    try:
        params = sampling_defaults(cfg)
        prompts = None if cfg.server else read_prompts(cfg, params)
        limits = server_limits(cfg)
        generator = load_generator(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None
    if cfg.server:
        from nemo_flm.inference.server import make_server, serve

        check_single_process()
        serve(make_server(generator, params, cfg.host, cfg.port, limits))
        return
    results = generate_all(generator, prompts, params, cfg)
    if not parallel.is_rank_zero():
        return
    if not cfg.stream:
        print("\n".join(show(prompt, completion, params) for prompt, completion in results))
    if cfg.output_jsonl:
        with atomic_output(cfg.output_jsonl) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            for prompt, c in results:
                record = {"prompt": prompt, "text": c.text, "token_ids": c.token_ids, "logprobs": c.logprobs}
                handle.write(json.dumps({**record, "finish_reason": c.finish_reason}, ensure_ascii=False) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
