"""The masks between c = 0 and c = 1, where exactness tests cannot see them: every mask is 1 on old
coordinates and c on new ones (MSG's linear ramp), the embedding output, the residual writes of old
layers and whole new layers are scaled by exactly these values."""

import torch

from nemo_flm.growth.masks import GrowthMasks
from nemo_flm.growth.plan import make_plan
from tests.helpers import GROWTH_OLD, GROWTHS, grow_pair, tiny_cfg

C = 0.3


def test_mask_values_are_one_on_old_and_c_on_new_coordinates():
    plan = make_plan(tiny_cfg(**GROWTH_OLD), tiny_cfg(**{**GROWTH_OLD, **GROWTHS["all"]}))
    masks, like = GrowthMasks(plan, c=C), torch.zeros(1, dtype=torch.float64)
    assert masks.hidden(like).tolist() == [1.0] * 32 + [C] * 32
    assert masks.ffn(like).tolist() == [1.0] * 64 + [C] * 96
    assert masks.heads(like).tolist() == [1.0, 1.0, C, C]


def test_embedding_output_is_scaled_on_new_coordinates(single_process):
    _, grown, cfg, _, _ = grow_pair(GROWTH_OLD, {**GROWTH_OLD, **GROWTHS["width"]}, c=C)
    seen = []
    grown.embedding.register_forward_hook(lambda module, args, out: seen.append(out))  # runs after the mask
    tokens = torch.randint(0, cfg.vocab_size, (2, 8))
    with torch.no_grad():
        grown(tokens, torch.arange(8)[None].expand(2, -1), None)
    raw = grown.embedding.word_embeddings.weight[tokens].transpose(0, 1)  # [s, b, h], no dropout in eval
    torch.testing.assert_close(seen[0][..., :32], raw[..., :32], rtol=0, atol=0)
    torch.testing.assert_close(seen[0][..., 32:], C * raw[..., 32:], rtol=0, atol=1e-15)


def test_residual_writes_are_scaled(single_process):
    """An old layer's fc2 output is masked on new hidden coordinates; a new layer's whole residual
    branch is scaled by c (h + c F(h)), its bias included."""
    _, grown, _, _, _ = grow_pair(GROWTH_OLD, {**GROWTH_OLD, **GROWTHS["all"]}, c=C)
    x = torch.randn(4, 1, 160, dtype=torch.float64)
    for index, expected_scale in ((0, [1.0] * 32 + [C] * 32), (3, [C] * 32 + [C * C] * 32)):  # layer 3 is new
        fc2 = grown.decoder.layers[index].mlp.linear_fc2
        with torch.no_grad():
            out, bias = fc2(x)
        scale = torch.tensor(expected_scale, dtype=torch.float64)
        torch.testing.assert_close(out, (x @ fc2.weight.T) * scale, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bias, fc2.bias * scale, rtol=1e-12, atol=1e-12)
