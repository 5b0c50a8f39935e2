"""Growth plans: what grows, where new layers go, and one-line refusals."""

import dataclasses
from collections.abc import Mapping

import pytest
import torch

from nemo_flm.errors import ConfigError
from nemo_flm.growth.plan import _layer_sources, make_plan
from tests.helpers import tiny_cfg

OLD = dict(num_layers=2, hidden_size=32, num_attention_heads=2, ffn_hidden_size=64)


def test_plan_of_a_stage_change():
    plan = make_plan(
        tiny_cfg(**OLD), tiny_cfg(num_layers=3, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128)
    )
    assert (plan.old_hidden, plan.new_hidden, plan.old_heads, plan.new_heads, plan.head_dim) == (32, 64, 2, 4, 16)
    assert (plan.old_ffn, plan.new_ffn, plan.source, plan.new_layers) == (64, 128, [0, 1, 1], [2])


@pytest.mark.parametrize(
    "mode, source, added",
    [
        ("stack", [0, 1, 2, 3, 2, 3], [4, 5]),
        ("interleave", [0, 1, 2, 2, 3, 3], [3, 5]),
        ("random", [0, 1, 2, 3, None, None], [4, 5]),
    ],
)
def test_depth_modes(mode, source, added):
    assert _layer_sources(4, 6, mode) == (source, added)


@pytest.mark.parametrize(
    "new, message",
    [
        (dict(OLD, num_layers=1), "num_layers shrinks 2 -> 1"),
        (dict(OLD, hidden_size=16, num_attention_heads=1), "hidden_size shrinks"),
        (dict(OLD, ffn_hidden_size=32), "ffn_hidden_size shrinks"),
        (dict(OLD, hidden_size=64), "head dim changes 16 -> 32"),
        (dict(OLD, num_attention_heads=1, kv_channels=16), "num_attention_heads shrinks 2 -> 1"),
        (dict(OLD, hidden_size=64, kv_channels=32), "head dim changes 16 -> 32"),
        (dict(OLD, vocab_size=2000), "vocab_size differs"),
        (dict(OLD, position_embedding="rope"), "position_embedding differs"),
        (dict(OLD, use_mup=True), "use_mup differs"),
        (dict(OLD, input_mult=2.0), "input_mult differs"),
        (dict(OLD, use_mup=True, mup_base_width=8, mup_base_head_dim=8), "mup_base_head_dim changes the attention"),
    ],
)
def test_refusals_are_one_line(new, message):
    old = dict(OLD, use_mup=True, mup_base_width=8) if "mup_base_head_dim" in new else OLD
    with pytest.raises(ConfigError) as err:
        make_plan(tiny_cfg(**old), tiny_cfg(**new))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_depth_mode():
    with pytest.raises(ConfigError, match="depth_mode must be one of"):
        make_plan(tiny_cfg(**OLD), tiny_cfg(**OLD), "sideways")


def test_new_entries_of_hidden_matrices_start_at_the_grown_widths_mup_std():
    """default_fill at m = 4: hidden matrices N(0, (0.02 / 2)^2), embeddings N(0, 0.02^2), as a
    model built at that width would start (model/mup.py); standard parametrization: 0.02 for all."""
    from nemo_flm.growth.operators import default_fill

    shape = torch.Size([512, 512])
    for width_mult, hidden_std in ((4.0, 0.01), (1.0, 0.02)):
        fill = default_fill(0.02, 0, width_mult)
        for name, want in (
            ("decoder.layers.3.mlp.linear_fc1.weight", hidden_std),
            ("decoder.layers.0.self_attention.linear_proj.weight", hidden_std),
            ("embedding.word_embeddings.weight", 0.02),
            ("output_layer.weight", 0.02),
        ):
            assert fill(name, shape, torch.float32).std().item() == pytest.approx(want, rel=0.02), name


def test_mup_output_rescale_leaves_new_output_columns_at_the_base_init():
    """m = 2 -> 4 halves the logit multiplier: the old block of the output layer doubles (logits
    kept) while its new columns are drawn at the base std, not at twice it."""
    from nemo_flm.growth.operators import OUTPUT, default_fill, iter_grown

    mup = dict(use_mup=True, mup_base_width=16)
    old_cfg, new_cfg = tiny_cfg(**OLD, **mup), tiny_cfg(**dict(OLD, hidden_size=64, num_attention_heads=4), **mup)
    plan = make_plan(old_cfg, new_cfg)
    assert plan.output_rescale == 2.0
    old = torch.randn(1024, 32)
    fill = default_fill(0.05, 0, width_mult=4.0)
    no_layers = dataclasses.replace(plan, source=[], new_layers=[])  # only the output layer here
    grown = dict(iter_grown({OUTPUT: old}, no_layers, fill))[OUTPUT]
    assert torch.equal(grown[:, :32], old * 2.0)
    assert grown[:, 32:].std().item() == pytest.approx(0.05, rel=0.03)


class _RecordingState(Mapping):
    """A state dict that records each read, as a checkpoint read tensor by tensor would load."""

    def __init__(self, state):
        self.state, self.reads = state, []

    def __getitem__(self, name):
        self.reads.append(name)
        return self.state[name]

    def __iter__(self):
        return iter(self.state)

    def __len__(self):
        return len(self.state)


@pytest.mark.parametrize("mode", ["stack", "random"])
def test_grown_entries_read_each_input_only_when_made(single_process, mode):
    """Offline growth must not hold a checkpoint whole: listing the grown entries reads nothing,
    and making one reads one input tensor (its source, or layer 0's for its dtype)."""
    from nemo_flm.growth.operators import default_fill, grown_entries
    from nemo_flm.model.builder import build_model

    old_cfg = tiny_cfg(**OLD)
    plan = make_plan(old_cfg, tiny_cfg(**dict(OLD, num_layers=4)), mode)
    state = _RecordingState(build_model(old_cfg).state_dict())
    entries = list(grown_entries(state, plan, default_fill(0.02)))
    assert state.reads == []
    for name, make in entries:
        make()
        assert len(state.reads) == 1, (name, state.reads)
        state.reads.clear()


def test_new_entries_draw_from_a_generator_per_tensor_for_any_seed():
    """The same (seed, name) draws the same entries, another name or seed others; seeds past 2**32
    (a timestamp) work."""
    from nemo_flm.growth.operators import default_fill

    shape = torch.Size([8, 8])
    for seed in (0, 4321, 2**32, 20240101123456):
        fill = default_fill(0.02, seed)
        first = fill("decoder.layers.0.mlp.linear_fc1.weight", shape, torch.float32)
        assert torch.equal(
            first, default_fill(0.02, seed)("decoder.layers.0.mlp.linear_fc1.weight", shape, torch.float32)
        )
        assert not torch.equal(first, fill("decoder.layers.1.mlp.linear_fc1.weight", shape, torch.float32))
        assert not torch.equal(
            first, default_fill(0.02, seed + 1)("decoder.layers.0.mlp.linear_fc1.weight", shape, torch.float32)
        )
