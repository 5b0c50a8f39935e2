"""Hugging Face export and import (nemo_flm/hf): the exported folder loads with transformers'
Auto classes and the project's remote code alone, computes the .nemo model's logits, decodes with
its KV cache as by full recompute (past the training length, through xPos re-centring), tokenizes
as nemo_flm does; and .nemo -> HF -> .nemo gives back every tensor bit for bit, from safetensors
or from pickled .bin shards, at TP 1 and 2."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below must work without a network

from nemo_flm.checkpoint.nemo_archive import open_nemo  # noqa: E402
from nemo_flm.checkpoint.weights import MODEL  # noqa: E402
from nemo_flm.config import ffn_size, head_dim, padded_vocab_size  # noqa: E402
from nemo_flm.hf.export import export_to_hf  # noqa: E402
from nemo_flm.hf.importer import import_from_hf  # noqa: E402
from nemo_flm.model.mup import width_mult  # noqa: E402
from tests.helpers import perturbed, tiny_cfg  # noqa: E402

SCRIPTS = Path(__file__).parents[2] / "scripts"
MUP = dict(use_mup=True, output_mult=2.0, mup_base_width=16, input_mult=1.5)  # m = 4: logits x 0.5, embeddings x 1.5
FLM_KEYS = (
    "model_type n_embd n_layer n_head n_inner n_positions activation_function relative_encoding rotary_theta "
    "rotary_use_xpos rotary_xpos_scale_base use_mup mup_base_width mup_scale_factor input_mult output_mult "
    "layer_norm_epsilon vocab_size bos_token_id eos_token_id tie_word_embeddings auto_map torch_dtype"
).split()


def save_nemo(path, **overrides):
    """A .nemo of a tiny FLMModel whose every entry matters: random biases and LayerNorms, and q/k/v x 8
    so that the attention is sharp and positions move the logits. Returns the in-memory model."""
    from nemo_flm.training.flm_model import FLMModel

    model = FLMModel(tiny_cfg(**overrides)).eval()
    perturbed(model.model)
    with torch.no_grad():
        for name, param in model.model.named_parameters():
            if name.endswith("linear_qkv.weight"):
                param.mul_(8.0)
    model.save_to(str(path))
    return model


def load_hf(folder, **kwargs):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True, **kwargs).eval()


def nemo_tensors(path, workdir):
    """{name: full tensor} of a .nemo, whatever TP wrote it, and its model config."""
    reader, cfg = open_nemo(str(path))
    return {name: reader.read(MODEL, name) for name in reader.names(MODEL)}, cfg


def shape_keys(cfg):
    """Every key that fixes the model's function and storage."""
    return dict(
        layers=cfg.num_layers,
        hidden=cfg.hidden_size,
        heads=cfg.num_attention_heads,
        head_dim=head_dim(cfg),
        ffn=ffn_size(cfg),
        seq=cfg.seq_length,
        vocab=padded_vocab_size(cfg),
        width_mult=width_mult(cfg),  # μP's m, derived (the export writes it as mup_scale_factor)
        **{
            k: cfg[k]
            for k in (
                "layernorm_epsilon tie_word_embeddings position_embedding rotary_base xpos_gamma xpos_scale_base "
                "use_mup input_mult output_mult mup_base_width params_dtype init_method_std"
            ).split()
        },
    )


@pytest.mark.parametrize(
    "overrides",
    [dict(MUP), dict(MUP, position_embedding="rope"), dict(MUP, num_layers=1, tie_word_embeddings=True)],
    ids=["xpos-mup", "rope-mup", "tied"],
)
def test_exported_model_gives_the_nemo_logits(single_process, tmp_path, overrides):
    model = save_nemo(tmp_path / "m.nemo", **overrides)
    export_to_hf(str(tmp_path / "m.nemo"), str(tmp_path / "hf"))
    hf = load_hf(tmp_path / "hf")
    tokens = torch.randint(0, 1000, (2, model.cfg.seq_length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(tokens)
        logits = hf(tokens, use_cache=False).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)


def test_cached_generation_equals_full_recompute_past_the_training_length(single_process, tmp_path):
    """Scale base 1: the xPos centre (16) moves at positions 33, 50 and 67, rescaling the cached keys."""
    save_nemo(tmp_path / "m.nemo", xpos_scale_base=1.0)
    export_to_hf(str(tmp_path / "m.nemo"), str(tmp_path / "hf"))
    hf = load_hf(tmp_path / "hf")
    prompt = torch.randint(0, 1000, (1, 6), generator=torch.Generator().manual_seed(1))
    new = 72 - prompt.shape[1]
    args = dict(
        max_new_tokens=new, min_new_tokens=new, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    with torch.no_grad():
        cached = hf.generate(prompt, use_cache=True, **args)
        recomputed = hf.generate(prompt, use_cache=False, **args)
    assert cached.sequences.shape[1] == 72 > 2 * hf.config.n_positions
    assert torch.equal(cached.sequences, recomputed.sequences)
    torch.testing.assert_close(torch.stack(cached.scores), torch.stack(recomputed.scores), rtol=0, atol=1e-4)
    assert cached.cache.flm_xpos_centre == 67.0  # re-centred three times, at the last decoding position


def test_one_long_forward_stays_in_float_range(single_process, tmp_path):
    """Scale base 1, 300 positions in one forward (no cache): one pass would need xPos factors of
    zeta_0^-150 ~ e^188, past fp32; the export runs it in chunks and its log-probabilities equal
    nemo_flm's Generator.score (the KV cache's own chunking and re-centring)."""
    from nemo_flm.data.tokenizer import FLMTokenizer
    from nemo_flm.inference.generator import Generator

    model = save_nemo(tmp_path / "m.nemo", xpos_scale_base=1.0)
    export_to_hf(str(tmp_path / "m.nemo"), str(tmp_path / "hf"))
    hf = load_hf(tmp_path / "hf")
    tokens = torch.randint(0, 1000, (1, 300), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logp = hf(tokens, use_cache=False).logits.float().log_softmax(-1)[0]
    got = logp[:-1].gather(-1, tokens[0, 1:, None])[:, 0]
    tokenizer = FLMTokenizer()
    tokenizer.pad = 0  # the tiny vocab has no row for FLM's pad id; score pads past each sequence only
    want = Generator(model.model, tokenizer, max_context=300).score([tokens[0].tolist()])[0].logprobs[1:]
    assert torch.isfinite(logp).all()
    torch.testing.assert_close(got, torch.tensor(want), rtol=0, atol=1e-4)


def test_left_padded_batch_generates_as_each_prompt_alone(single_process, tmp_path):
    """Positions are the cache length + 0..s-1 for every row: a left-padded row is only shifted, which
    relative positions do not see, and its padding is masked."""
    save_nemo(tmp_path / "m.nemo", **MUP)
    export_to_hf(str(tmp_path / "m.nemo"), str(tmp_path / "hf"))
    hf = load_hf(tmp_path / "hf")
    long, short = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(3))
    args = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    batch = torch.stack([long, torch.cat([torch.zeros(4, dtype=torch.long), short[:5]])])
    mask = torch.ones_like(batch)
    mask[1, :4] = 0
    with torch.no_grad():
        together = hf.generate(batch, attention_mask=mask, **args)[:, 9:]
        alone = [hf.generate(row[None], **args)[0, len(row) :] for row in (long, short[:5])]
    assert torch.equal(together[0], alone[0]) and torch.equal(together[1], alone[1])


def test_exported_tokenizer_gives_nemo_flm_ids(single_process, tmp_path):
    from transformers import AutoTokenizer

    from nemo_flm.data.tokenizer import FLMTokenizer

    shape = dict(num_layers=1, hidden_size=16, num_attention_heads=2, ffn_hidden_size=32, vocab_size=100256)
    save_nemo(tmp_path / "m.nemo", **shape)
    done = export_to_hf(str(tmp_path / "m.nemo"), str(tmp_path / "hf"))
    assert done.tokenizer
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True)
    ours = FLMTokenizer()
    texts = [
        "Hello world! The quick brown fox, 1234567 times.\n\n  def f(x):",
        "我们迈向充满希望的新世纪，人民日报 1998 年",
    ]
    for text in texts:
        ids = hf(text)["input_ids"]
        assert ids == ours.encode(text) and len(ids) > 5
        assert hf.decode(ids) == text
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (100256, 100256, 100258)
    specials = "a<|endoftext|>b[tsk]c[pad]d[cls]e[sep]"
    assert hf(specials)["input_ids"] == ours.encode(specials, allow_special=True)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_round_trip_is_bit_identical_at_tp1_and_tp2(single_process, tmp_path, dtype):
    from nemo_flm.training.flm_model import FLMModel

    save_nemo(tmp_path / "m.nemo", params_dtype=dtype, **MUP)
    export_to_hf(str(tmp_path / "m.nemo"), str(tmp_path / "hf"), max_shard_size="100KB")
    assert len(json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())["weight_map"]) == 28
    assert len(list((tmp_path / "hf").glob("model-*-of-*.safetensors"))) > 2
    import_from_hf(str(tmp_path / "hf"), str(tmp_path / "tp1.nemo"))
    import_from_hf(str(tmp_path / "hf"), str(tmp_path / "tp2.nemo"), tp=2)
    original, original_cfg = nemo_tensors(tmp_path / "m.nemo", tmp_path / "x0")
    for tp, path in ((1, "tp1.nemo"), (2, "tp2.nemo")):
        tensors, cfg = nemo_tensors(tmp_path / path, tmp_path / f"x{tp}")
        assert cfg.parallel.tensor_model_parallel_size == tp and shape_keys(cfg) == shape_keys(original_cfg)
        assert tensors.keys() == original.keys()
        for name, tensor in original.items():
            assert tensors[name].dtype == tensor.dtype and torch.equal(tensors[name], tensor), name
    restored = FLMModel.restore_from(str(tmp_path / "tp1.nemo"), map_location="cpu").eval()
    tokens = torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = load_hf(tmp_path / "hf")(tokens).logits
        torch.testing.assert_close(
            restored(tokens), expected, rtol=0, atol=1e-4 if dtype == "fp32" else 1e-2
        )  # bf16 eps 8e-3


def test_import_reads_pickled_bin_shards(single_process, tmp_path):
    """FLM-101B's own layout: pytorch_model-0000i-of-0000n.bin with pytorch_model.bin.index.json, and a
    config.json that, like FLM-101B's, does not say whether the embeddings are tied."""
    from safetensors.torch import load_file

    save_nemo(tmp_path / "m.nemo", **MUP)
    export_to_hf(str(tmp_path / "m.nemo"), str(tmp_path / "hf"))
    state = {k: v for f in sorted((tmp_path / "hf").glob("*.safetensors")) for k, v in load_file(f).items()}
    bins = tmp_path / "bins"
    bins.mkdir()
    names, weight_map = sorted(state), {}
    for i, part in enumerate((names[:10], names[10:20], names[20:])):
        file = f"pytorch_model-{i + 1:05d}-of-00003.bin"
        torch.save({n: state[n].clone() for n in part}, bins / file)
        weight_map.update(dict.fromkeys(part, file))
    (bins / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    del config["tie_word_embeddings"]
    (bins / "config.json").write_text(json.dumps(config))
    cfg = import_from_hf(str(bins), str(tmp_path / "from_bin.nemo"))
    assert not cfg.tie_word_embeddings  # lm_head.weight is in the index
    original, _ = nemo_tensors(tmp_path / "m.nemo", tmp_path / "x0")
    imported, _ = nemo_tensors(tmp_path / "from_bin.nemo", tmp_path / "x1")
    assert imported.keys() == original.keys()
    assert all(torch.equal(imported[name], original[name]) for name in original)


def test_config_json_has_flm_schema_keys(single_process, tmp_path):
    save_nemo(tmp_path / "m.nemo", xpos_gamma=0.5, **MUP)
    export_to_hf(str(tmp_path / "m.nemo"), str(tmp_path / "hf"), dtype="bf16")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert not set(FLM_KEYS) - set(config)
    assert config["tie_word_embeddings"] is False and config["vocab_size"] == 1024 and config["n_inner"] == 256
    assert config["auto_map"] == {
        "AutoConfig": "configuration_flm.FLMConfig",
        "AutoModel": "modeling_flm.FLM",
        "AutoModelForCausalLM": "modeling_flm.FLM",
        "AutoTokenizer": ["tokenization_flm.FLMTokenizer", None],
    }
    assert (config["model_type"], config["activation_function"], config["relative_encoding"]) == (
        "flm",
        "gelu_fast",
        "rotary",
    )
    assert config["torch_dtype"] == config["dtype"] == "bfloat16" and config["rotary_xpos_gamma"] == 0.5
    assert config["bos_token_id"] == config["eos_token_id"] == 100256 and config["output_mult"] == 2.0
    assert load_hf(tmp_path / "hf").dtype == torch.bfloat16


def run_script(name, args, monkeypatch):
    """A script's main() in this process; returns its exit message (None when it succeeded)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        module = __import__(name)
    finally:
        sys.path.remove(str(SCRIPTS))
    monkeypatch.setattr(sys, "argv", [name, *args])
    try:
        module.main()
    except SystemExit as done:
        return done.code
    return None


def test_bad_inputs_are_refused_in_one_line(single_process, tmp_path, monkeypatch):
    save_nemo(tmp_path / "m.nemo")
    (tmp_path / "not.nemo").write_text("hello")
    (tmp_path / "exists").mkdir()
    export_to_hf(str(tmp_path / "m.nemo"), str(tmp_path / "hf"))
    gpt2 = tmp_path / "gpt2"
    shutil.copytree(tmp_path / "hf", gpt2)
    (gpt2 / "config.json").write_text(
        json.dumps({**json.loads((gpt2 / "config.json").read_text()), "model_type": "gpt2"})
    )
    save_nemo(tmp_path / "kv.nemo", kv_channels=8)
    stringly = tmp_path / "stringly"
    shutil.copytree(tmp_path / "hf", stringly)
    (stringly / "config.json").write_text(
        json.dumps({**json.loads((stringly / "config.json").read_text()), "n_layer": "2"})
    )
    gone = tmp_path / "gone"
    shutil.copytree(tmp_path / "hf", gone)
    index = json.loads((gone / "model.safetensors.index.json").read_text())
    index["weight_map"]["lm_head.weight"] = "model-00009-of-00009.safetensors"
    (gone / "model.safetensors.index.json").write_text(json.dumps(index))
    cases = [
        (
            "convert_nemo_to_hf",
            ["--nemo", str(tmp_path / "not.nemo"), "--output", str(tmp_path / "o1")],
            "not a readable .nemo",
        ),
        ("convert_nemo_to_hf", ["--nemo", str(tmp_path / "m.nemo"), "--output", str(tmp_path / "exists")], "exists"),
        ("convert_nemo_to_hf", ["--nemo", str(tmp_path / "kv.nemo"), "--output", str(tmp_path / "o2")], "head dim 8"),
        ("convert_hf_to_nemo", ["--hf", str(gpt2), "--output", str(tmp_path / "o3.nemo")], "not 'flm'"),
        ("convert_hf_to_nemo", ["--hf", str(tmp_path / "hf"), "--output", str(tmp_path / "m.nemo")], "exists"),
        ("convert_hf_to_nemo", ["--hf", str(stringly), "--output", str(tmp_path / "o4.nemo")], "positive integer"),
        ("convert_hf_to_nemo", ["--hf", str(gone), "--output", str(tmp_path / "o5.nemo")], "lacks model-00009"),
    ]
    for script, args, expected in cases:
        message = run_script(script, args, monkeypatch)
        assert message and message.startswith("error: ") and expected in message and "\n" not in message, message
    made = ["exists", "gone", "gpt2", "hf", "kv.nemo", "m.nemo", "not.nemo", "stringly"]
    assert sorted(p.name for p in tmp_path.iterdir()) == made
