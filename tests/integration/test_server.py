"""The HTTP server (nemo_flm/inference/server.py) on a tiny FLM-vocab model, against the Generator's
own numbers: NeMo's PUT /generate, OpenAI's /v1/completions as lm-evaluation-harness reads it, the
tokenizer endpoints, every class of bad request, and a real lm_eval run over a local task."""

import glob
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass

import pytest
import requests
import torch

from nemo_flm.data.tokenizer import FLMTokenizer
from nemo_flm.inference.api import ServerLimits
from nemo_flm.inference.generator import Generator
from nemo_flm.inference.sampling import SamplingParams
from nemo_flm.inference.server import make_server
from tests.helpers import tiny_cfg

FLM_VOCAB = dict(vocab_size=100256, make_vocab_size_divisible_by=128)
LIMITS = ServerLimits(max_prompts=4, max_tokens_to_generate=32, max_full_logprob_rows=4, max_body_bytes=65536)
DEFAULTS = SamplingParams(greedy=True, tokens_to_generate=5, repetition_penalty=1.0, end_strings=[])
GREEDY = SamplingParams(greedy=True, top_p=1.0, end_strings=[])  # what temperature 0 asks for
TEXTS = ["The interpreter reads", "饕餮是一种神兽"]  # 饕餮: characters split over several byte tokens


@dataclass
class Served:
    url: str
    generator: Generator
    serving: object

    def call(self, method: str, path: str, body=None, **kwargs) -> requests.Response:
        return requests.request(method, self.url + path, json=body, timeout=60, **kwargs)

    def ok(self, method: str, path: str, body=None) -> dict:
        answer = self.call(method, path, body)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture(scope="module")
def served(single_process):
    """The server on a free port, in a thread, over a random model whose output weights are scaled
    up so that its distributions are peaked (log-probabilities far from uniform)."""
    from nemo_flm import parallel
    from nemo_flm.model.builder import build_model

    cfg = tiny_cfg(**FLM_VOCAB)
    parallel.seed_everything(cfg.seed)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.output_layer.weight.mul_(20)
    generator = Generator(model, FLMTokenizer(), max_context=128)
    server = make_server(generator, DEFAULTS, port=0, limits=LIMITS)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Served(f"http://127.0.0.1:{server.server_address[1]}", generator, server.serving)
    server.shutdown()
    server.server_close()


def encode(served, text):
    return served.generator.tokenizer.encode(text, allow_special=True)


def char_starts(tokenizer, ids):
    """Reference offsets: the characters fully written before each token (bytes decoded whole)."""
    return [len(b"".join(tokenizer.token_bytes(t) for t in ids[:i]).decode("utf-8", "ignore")) for i in range(len(ids))]


def assert_offsets(tokenizer, text, ids, tokens, offsets):
    assert offsets == char_starts(tokenizer, ids)
    for token, offset in zip(tokens, offsets):
        if not token.startswith("bytes:"):
            assert text[offset:].startswith(token)


def test_generate_is_the_generators_greedy_result_with_its_logprobs(served):
    body = {"sentences": TEXTS, "tokens_to_generate": 6, "compute_logprob": True}
    answer = served.ok("PUT", "/generate", body)
    tokenizer = served.generator.tokenizer
    prompts = [tokenizer.encode(t) for t in TEXTS]
    params = SamplingParams(**{**DEFAULTS.__dict__, "tokens_to_generate": 6})
    direct = served.generator.generate(prompts, params)
    scores = served.generator.score(prompts)
    for i, (prompt, completion) in enumerate(zip(prompts, direct)):
        ids = prompt + completion.token_ids
        assert answer["token_ids"][i] == ids and len(completion.token_ids) == 6
        assert answer["sentences"][i] == TEXTS[i] + completion.text
        assert answer["logprob"][i] == pytest.approx(scores[i].logprobs[1:] + completion.logprobs, abs=1e-6)
        assert_offsets(tokenizer, answer["sentences"][i], ids, answer["tokens"][i], answer["offsets"][i])
    assert any(t.startswith("bytes:") for t in answer["tokens"][1])
    assert answer["full_logprob"] == [None, None]


def test_generate_defaults_and_all_probs(served):
    """Unset keys take the server's configured SamplingParams; all_probs rows are the model's."""
    answer = served.ok("PUT", "/generate", {"sentences": [TEXTS[0]], "all_probs": True, "tokens_to_generate": 2})
    rows = torch.tensor(answer["full_logprob"][0])
    generated = answer["token_ids"][0][-2:]
    assert rows.shape == (2, 100352)
    assert rows.logsumexp(-1).tolist() == pytest.approx([0.0, 0.0], abs=1e-4)
    assert rows.argmax(-1).tolist() == generated  # greedy, as the configured defaults say
    plain = served.ok("PUT", "/generate", {"sentences": [TEXTS[0]]})
    assert len(plain["token_ids"][0]) == len(encode(served, TEXTS[0])) + DEFAULTS.tokens_to_generate
    assert plain["logprob"] == [None]


def complete(served, **body):
    return served.ok("POST", "/v1/completions", {"model": "flm", **body})


def test_completions_prompt_shapes_and_temperature_zero_is_greedy(served):
    ids = [encode(served, t) for t in TEXTS]
    direct = served.generator.generate(ids, SamplingParams(**{**GREEDY.__dict__, "tokens_to_generate": 5}))
    want = [c.text for c in direct]
    for prompt in (TEXTS, ids):
        answer = complete(served, prompt=prompt, max_tokens=5, temperature=0)
        assert [c["text"] for c in sorted(answer["choices"], key=lambda c: c["index"])] == want
        assert answer["usage"] == {
            "prompt_tokens": sum(map(len, ids)),
            "completion_tokens": 10,
            "total_tokens": 10 + sum(map(len, ids)),
        }
    for prompt in (TEXTS[1], ids[1]):
        assert complete(served, prompt=prompt, max_tokens=5, temperature=0)["choices"][0]["text"] == want[1]
    assert complete(served, prompt=TEXTS[0])["choices"][0]["finish_reason"] == "length"  # 16 sampled tokens


def test_stop_is_trimmed_from_the_text(served):
    free = complete(served, prompt=TEXTS[0], max_tokens=8, temperature=0)["choices"][0]
    tokens = served.generator.tokenizer.encode(free["text"])
    stop = served.generator.tokenizer.decode(tokens[2:4])
    stopped = complete(served, prompt=TEXTS[0], max_tokens=8, temperature=0, stop=[stop, "never there"])
    choice = stopped["choices"][0]
    assert choice["text"] == free["text"][: free["text"].index(stop)]
    assert choice["finish_reason"] == "stop" and free["finish_reason"] == "length"


def test_echo_logprobs_are_the_prompt_scores_then_the_generated_tokens(served):
    tokenizer = served.generator.tokenizer
    ids = [encode(served, t) for t in TEXTS]
    answer = complete(served, prompt=ids, max_tokens=2, temperature=0, echo=True, logprobs=3)
    scores = served.generator.score(ids, top_k=3)
    direct = served.generator.generate(
        ids, SamplingParams(**{**GREEDY.__dict__, "tokens_to_generate": 2, "top_logprobs": 3})
    )
    for choice, prompt, score, completion in zip(answer["choices"], ids, scores, direct):
        lp, n = choice["logprobs"], len(prompt)
        assert choice["text"] == TEXTS[choice["index"]] + completion.text
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == n + 2
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        assert lp["token_logprobs"][1:n] == pytest.approx(score.logprobs[1:], abs=1e-6)
        assert lp["token_logprobs"][n:] == pytest.approx(completion.logprobs, abs=1e-6)
        for got, want in zip(lp["top_logprobs"][1:], score.top_logprobs[1:] + completion.top_logprobs):
            assert len(got) == 3 and sorted(got.values()) == pytest.approx(sorted(want.values()), abs=1e-6)
        assert_offsets(tokenizer, choice["text"], prompt + completion.token_ids, lp["tokens"], lp["text_offset"])


def test_logprobs_without_echo_cover_the_generated_tokens(served):
    """Without echo: one entry per generated token; offsets count from the prompt's start (OpenAI's)."""
    ids = [encode(served, t) for t in TEXTS]
    answer = complete(served, prompt=ids, max_tokens=3, temperature=0, logprobs=2)
    direct = served.generator.generate(ids, SamplingParams(**{**GREEDY.__dict__, "tokens_to_generate": 3}))
    for choice in answer["choices"]:
        completion, lp = direct[choice["index"]], choice["logprobs"]
        assert choice["text"] == completion.text
        assert lp["token_logprobs"] == pytest.approx(completion.logprobs, abs=1e-6)
        starts = char_starts(served.generator.tokenizer, completion.token_ids)
        assert lp["text_offset"] == [len(TEXTS[choice["index"]]) + start for start in starts]


def test_a_tiny_temperature_samples_the_greedy_token(served):
    """logits / 1e-300 would overflow to inf (a NaN distribution): it is the greedy limit instead."""
    greedy = complete(served, prompt=TEXTS[0], max_tokens=4, temperature=0)["choices"][0]["text"]
    assert complete(served, prompt=TEXTS[0], max_tokens=4, temperature=1e-300, seed=1)["choices"][0]["text"] == greedy


def test_max_tokens_zero_with_echo_returns_the_prompt_only(served):
    ids = encode(served, TEXTS[1])
    choice = complete(served, prompt=TEXTS[1], max_tokens=0, echo=True, logprobs=1)["choices"][0]
    assert choice["text"] == TEXTS[1] and len(choice["logprobs"]["token_logprobs"]) == len(ids)
    assert choice["logprobs"]["token_logprobs"][1:] == pytest.approx(
        served.generator.score([ids])[0].logprobs[1:], abs=1e-6
    )


def test_tokenizer_endpoints_as_lm_eval_reads_them(served):
    from lm_eval.utils import RemoteTokenizer

    remote = RemoteTokenizer(served.url + "/v1/completions")
    assert remote.eos_token_id == remote.bos_token_id == 100256
    text = "<|endoftext|>饕餮 reads"
    tokens = remote.encode(text)
    assert tokens == encode(served, text) and tokens[0] == 100256
    assert remote.decode(tokens) == text
    assert served.ok("GET", "/tokenizer_info")["pad_token"] == "[pad]"


ALIVE = ("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 1})
BAD = [  # (method, path, body, status, words the message must contain)
    ("POST", "/v1/completions", b'{"prompt": ', 400, "malformed JSON"),
    ("POST", "/v1/completions", b"[1, 2]", 400, "JSON object"),
    ("POST", "/v1/completions", {"prompt": "Hi", "best_of": 2}, 400, "unknown field 'best_of'"),
    ("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": True}, 400, "'max_tokens' must be an integer"),
    ("PUT", "/generate", {"sentences": ["Hi"], "temperature": "hot"}, 400, "'temperature' must be a number"),
    ("PUT", "/generate", {"sentences": "Hi"}, 400, "'sentences' must be a list of strings"),
    ("PUT", "/generate", {"sentences": ["Hi"], "greedy": 1}, 400, "'greedy' must be true or false"),
    ("PUT", "/generate", {"sentences": ["Hi"], "top_p": 1.5}, 400, "top_p must be in [0, 1], got 1.5"),
    ("PUT", "/generate", {"sentences": ["Hi"], "repetition_penalty": 0.5}, 400, "repetition_penalty must be >= 1"),
    ("PUT", "/generate", {"sentences": ["Hi"], "min_tokens_to_generate": 9}, 400, "min_tokens_to_generate must be"),
    ("PUT", "/generate", {"tokens_to_generate": 3}, 400, "'sentences' is required"),
    ("PUT", "/generate", {"sentences": [""]}, 400, "empty prompt"),
    (
        "PUT",
        "/generate",
        {"sentences": ["Hi"], "tokens_to_generate": 33},
        400,
        "33 tokens to generate exceed the limit 32",
    ),
    ("PUT", "/generate", {"sentences": ["Hi"] * 5}, 400, "5 prompts exceed the limit of 4"),
    (
        "PUT",
        "/generate",
        {"sentences": ["Hi"] * 2, "all_probs": True, "tokens_to_generate": 3},
        400,
        "all_probs would return 6",
    ),
    ("POST", "/v1/completions", {"prompt": "Hi", "temperature": -1}, 400, "'temperature' must be in [0, 100]"),
    ("POST", "/v1/completions", {"prompt": "Hi", "logprobs": 6}, 400, "'logprobs' must be in [0, 5]"),
    ("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 33}, 400, "'max_tokens' must be in [0, 32]"),
    ("POST", "/v1/completions", {"prompt": "Hi", "n": 2}, 400, "'n' must be 1"),
    ("POST", "/v1/completions", {"prompt": "Hi", "seed": -1}, 400, "'seed' must be in"),
    ("POST", "/v1/completions", {"prompt": "Hi", "stop": [""]}, 400, "'stop' must be a non-empty string"),
    ("POST", "/v1/completions", {"prompt": "Hi", "stream": True}, 400, "'stream' is not supported"),
    ("POST", "/v1/completions", {"prompt": 7}, 400, "'prompt' must be a string"),
    ("POST", "/v1/completions", {"prompt": ""}, 400, "empty prompt"),
    ("POST", "/v1/completions", {"prompt": []}, 400, "no prompt given"),
    ("POST", "/v1/completions", {"max_tokens": 3}, 400, "'prompt' is required"),
    ("POST", "/v1/completions", {"prompt": [[100300]]}, 400, "token id 100300 in 'prompt'"),
    ("POST", "/v1/completions", {"prompt": [1] * 120, "max_tokens": 16}, 400, "exceeds the context limit 128"),
    ("POST", "/v1/completions", {"prompt": "Hi" * 40000}, 413, "over the limit of 65536"),
    ("POST", "/tokenize", {"prompt": 5}, 400, "'prompt' must be a string"),
    ("POST", "/detokenize", {"tokens": [-1]}, 400, "token id -1 in 'tokens'"),
    ("POST", "/v1/completions", b'{"prompt": "Hi", "\\ud800": 1}', 400, "unknown field"),  # a lone surrogate
    ("POST", "/v1/completions", b"[" * 20000 + b"]" * 20000, 400, "nested too deeply"),
    ("POST", "/v1/completions", b'{"prompt": "Hi", "stop": ["\\ud800"]}', 400, "end_strings must be non-empty"),
    ("PUT", "/generate", b'{"sentences": ["Hi"], "repetition_penalty": Infinity}', 400, "must be >= 1 and finite"),
    ("GET", "/v1/models", None, 404, "no endpoint /v1/models"),
    ("GET", "/v1/completions", None, 405, "/v1/completions takes POST, not GET"),
    ("POST", "/generate", {"sentences": ["Hi"]}, 405, "/generate takes PUT, not POST"),
]


@pytest.mark.parametrize("method,path,body,status,words", BAD, ids=[f"{c[3]}-{c[4][:30]}" for c in BAD])
def test_bad_request_gets_its_status_and_reason_and_the_server_lives(served, method, path, body, status, words):
    raw = body if isinstance(body, bytes) else None
    answer = served.call(method, path, None if raw else body, data=raw)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert words in error["message"] and error["code"] == status and error["type"]
    served.ok(*ALIVE)


def _raw_request(served, head: bytes, body: bytes = b"") -> bytes:
    """Send bytes as they are (requests would fix the headers) and read the answer."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(served.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
        conn.sendall(head + body)
        conn.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: conn.recv(65536), b""))


def test_malformed_content_lengths_are_4xx(served):
    """A body shorter than its Content-Length (the client closed early) and a length past Python's
    int-parsing limit are refused, not run or answered 500."""
    short = _raw_request(served, b"POST /tokenize HTTP/1.0\r\nContent-Length: 100\r\n\r\n", b'{"prompt": "Hi"}')
    assert short.startswith(b"HTTP/1.0 400") and b"ended after 16 of its 100 bytes" in short
    huge = _raw_request(served, b"POST /tokenize HTTP/1.0\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
    assert huge.startswith(b"HTTP/1.0 413")
    served.ok(*ALIVE)


def test_a_failure_inside_the_model_is_a_500_and_serving_goes_on(served, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(served.generator, "generate", broken)
    answer = served.call(*ALIVE)
    assert answer.status_code == 500 and "out of memory (simulated)" in answer.json()["error"]["message"]
    monkeypatch.undo()
    served.ok(*ALIVE)


QUESTIONS = [
    ("Question: What colour is the clear sky?\nAnswer:", ["blue", "green", "red"], 0),
    ("Question: How many legs does a cat have?\nAnswer:", ["two", "four"], 1),
    ("Question: Which is a fruit?\nAnswer:", ["apple", "chair", "cloud", "river"], 0),
    ("Question: What do bees make?\nAnswer:", ["honey", "steel"], 0),
    ("问题：中国的首都是哪里？\n答案：", ["北京", "上海", "广州"], 0),
    ("问题：一年有几个季节？\n答案：", ["四个", "七个"], 0),
    ("问题：饕餮是什么？\n答案：", ["神兽", "城市", "河流"], 0),
    ("问题：水在零度会怎样？\n答案：", ["结冰", "燃烧"], 0),
]
TASK = """task: flm_server_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: question
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


LM_EVAL_ARGS = "tokenizer_backend=remote,tokenized_requests=True,model=flm,num_concurrent=1,max_retries=1"


def lm_eval_pair(tokenizer, context, continuation):
    """lm-eval's split of a (context, continuation) pair into tokens (TemplateLM._encode_pair)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation, allow_special=True)
    context_ids = tokenizer.encode(context, allow_special=True)
    return context_ids, whole[len(context_ids) :]


def test_lm_eval_local_completions_scores_a_local_task_with_the_models_loglikelihoods(served, tmp_path):
    data = tmp_path / "mc.jsonl"
    data.write_text(
        "".join(json.dumps(dict(question=q, choices=c, answer=a), ensure_ascii=False) + "\n" for q, c, a in QUESTIONS),
        encoding="utf-8",
    )
    (tmp_path / "flm_server_mc.yaml").write_text(TASK.format(data=data))
    model_args = f"base_url={served.url}/v1/completions,{LM_EVAL_ARGS}"
    command = [
        sys.executable,
        "-m",
        "lm_eval",
        "run",
        "--model",
        "local-completions",
        "--model_args",
        model_args,
        "--tasks",
        "flm_server_mc",
        "--include_path",
        str(tmp_path),
        "--output_path",
        str(tmp_path / "out"),
        "--log_samples",
    ]
    env = dict(
        os.environ,
        HF_DATASETS_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_CACHE=str(tmp_path / "hf"),
        TOKENIZERS_PARALLELISM="false",
    )
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    samples = [
        json.loads(line)
        for path in glob.glob(str(tmp_path / "out/*/samples_flm_server_mc_*.jsonl"))
        for line in open(path, encoding="utf-8")
    ]
    assert len(samples) == len(QUESTIONS)
    tokenizer = served.generator.tokenizer
    for sample in samples:
        pairs = [lm_eval_pair(tokenizer, a["arg_0"], a["arg_1"]) for a in sample["arguments"].values()]
        scores = served.generator.score([c + x for c, x in pairs])
        want = [sum(s.logprobs[len(c) :]) for s, (c, _) in zip(scores, pairs)]
        got = [float(r[0]) for r in sample["filtered_resps"]]
        assert got == pytest.approx(want, abs=1e-4)
        assert sample["acc"] == float(max(range(len(want)), key=want.__getitem__) == int(sample["target"]))
    results = json.load(open(glob.glob(str(tmp_path / "out/*/results_*.json"))[0]))
    assert results["results"]["flm_server_mc"]["acc,none"] == pytest.approx(
        sum(s["acc"] for s in samples) / len(samples)
    )
