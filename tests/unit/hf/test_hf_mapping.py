"""The HF name table and tensor transforms (nemo_flm/hf/mapping.py), and the config.json mapping."""

import pytest
import torch

from nemo_flm.errors import ConfigError
from nemo_flm.hf.hf_config import from_hf_config, to_hf_config
from nemo_flm.hf.mapping import HF_NAMES, from_hf, name_pairs, sizes_of, to_hf
from nemo_flm.model.layout import AXES, Sizes, tensor_shape
from tests.helpers import tiny_cfg

SIZES = Sizes(hidden=12, ffn=20, heads=3, head_dim=4, vocab=16)


def test_hf_names_cover_the_layout_table():
    assert HF_NAMES.keys() == AXES.keys()
    assert len(set(HF_NAMES.values())) == len(HF_NAMES)


def test_names_of_a_two_layer_model():
    untied = list(name_pairs(2, tied=False))
    assert len(untied) == 4 + 2 * 12 and len({hf for _, hf, _ in untied}) == len(untied)
    assert ("model.decoder.layers.1.self_attention.linear_qkv.weight", "transformer.h.1.attn.c_attn.weight") in {
        (nemo, hf) for nemo, hf, _ in untied
    }
    assert "lm_head.weight" not in {hf for _, hf, _ in name_pairs(2, tied=True)}


@pytest.mark.parametrize("key", list(AXES))
def test_to_hf_and_back_is_the_identity(key):
    tensor = torch.randn(tensor_shape(AXES[key], SIZES))
    assert torch.equal(from_hf(key, to_hf(key, tensor, SIZES), SIZES), tensor)


def test_qkv_becomes_three_blocks_in_conv1d_layout():
    """megatron rows [head, part, dim] (part 0/1/2 = q/k/v) -> HF columns [part, head, dim], [in, out]."""
    h, d = SIZES.heads, SIZES.head_dim
    label = torch.arange(h)[:, None, None] * 100 + torch.arange(3)[None, :, None] * 10 + torch.arange(d)[None, None]
    weight = label.reshape(-1, 1).expand(-1, SIZES.hidden).float()  # row r holds its label
    hf = to_hf("self_attention.linear_qkv.weight", weight, SIZES)
    assert hf.shape == (SIZES.hidden, 3 * h * d)
    expected = (torch.arange(3)[:, None, None] * 10 + torch.arange(h)[None, :, None] * 100 + torch.arange(d)).flatten()
    assert torch.equal(hf[0], expected.float())  # q of every head, then k, then v
    bias = to_hf("self_attention.linear_qkv.bias", label.flatten().float(), SIZES)
    assert torch.equal(bias, expected.float())


def test_linear_weights_are_transposed_and_embeddings_are_not():
    fc1 = torch.randn(SIZES.ffn, SIZES.hidden)
    assert torch.equal(to_hf("mlp.linear_fc1.weight", fc1, SIZES), fc1.t())
    emb = torch.randn(SIZES.vocab, SIZES.hidden)
    assert torch.equal(to_hf("output_layer.weight", emb, SIZES), emb)


def test_wrong_shapes_are_refused_by_name():
    with pytest.raises(ValueError, match="transformer.h.0.mlp.c_fc.weight' has shape"):
        from_hf("mlp.linear_fc1.weight", torch.zeros(20, 12), SIZES, "transformer.h.0.mlp.c_fc.weight")


def test_config_round_trip_keeps_the_model_shape():
    cfg = tiny_cfg(position_embedding="rope", use_mup=True, output_mult=2.0, mup_base_width=16, xpos_gamma=0.5)
    model = from_hf_config(to_hf_config(cfg, 1024, "fp32"), tp=2, tied=None)
    for key in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "seq_length", "rotary_base"):
        assert model[key] == cfg[key], key
    for key in ("position_embedding", "xpos_gamma", "use_mup", "output_mult", "mup_base_width", "input_mult"):
        assert model[key] == cfg[key], key
    assert model["mup_scale_factor"] == 4.0  # written as FLM's schema has it: width / base width
    assert (model["vocab_size"], model["make_vocab_size_divisible_by"], model["params_dtype"]) == (1024, 128, "fp32")
    assert sizes_of(64, 256, 4, 1024).head_dim == 16


def test_fp16_imports_as_fp32_and_flm_vocab_splits_at_tp4():
    hf = dict(
        model_type="flm", vocab_size=100352, n_embd=64, n_layer=1, n_head=4, n_positions=32, torch_dtype="float16"
    )
    model = from_hf_config(hf, tp=4, tied=False)
    assert model["params_dtype"] == "fp32" and model["make_vocab_size_divisible_by"] == 128
    with pytest.raises(ConfigError, match="does not split over tensor-parallel size 3"):
        from_hf_config(hf, tp=3, tied=False)
