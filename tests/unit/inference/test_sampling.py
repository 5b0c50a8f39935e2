"""Sampling filters against references written from their definitions, and parameter checks."""

import pytest
import torch

from nemo_flm.inference.sampling import SamplingParams, filter_top_k_top_p, next_tokens, penalise_repeats


def test_top_p_keeps_the_smallest_set_reaching_p():
    """Probabilities 0.5, 0.3, 0.15, 0.05 (shuffled): p = 0.8 keeps exactly the first two, p = 0.81
    the first three; the kept tokens' logits are unchanged."""
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    logits = probs.log()
    kept = filter_top_k_top_p(logits, 0, 0.8).isfinite()
    assert kept.tolist() == [[False, True, False, True]]
    assert filter_top_k_top_p(logits, 0, 0.81).isfinite().tolist() == [[True, True, False, True]]
    torch.testing.assert_close(filter_top_k_top_p(logits, 0, 0.8)[kept], logits[kept])


def test_top_k_and_off_values():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    assert filter_top_k_top_p(logits, 2, 1.0).isfinite().tolist() == [[False, True, True, False]]
    assert filter_top_k_top_p(logits, 0, 1.0).isfinite().all()
    assert filter_top_k_top_p(logits, 0, 0.0).isfinite().all()  # NeMo's top_p 0.0: off


def test_repetition_penalty_is_ctrls():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    out = penalise_repeats(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0]]


def test_sampling_follows_the_temperature_distribution():
    """At temperature 2 the draws follow softmax(logits / 2) (chi-square-free check: frequencies
    within 0.02 of the probabilities over 20k draws)."""
    logits = torch.tensor([1.0, 2.0, 0.0]).repeat(20000, 1)
    params = SamplingParams(temperature=2.0, top_p=1.0)
    draws = next_tokens(logits, params, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    torch.testing.assert_close(freq, (logits[0] / 2).softmax(-1), atol=0.02, rtol=0)


@pytest.mark.parametrize(
    "values, match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"repetition_penalty": 0.5}, "repetition_penalty"),
        ({"tokens_to_generate": 2, "min_tokens_to_generate": 3}, "min_tokens_to_generate"),
        ({"end_strings": [""]}, "end_strings"),
        ({"temprature": 1.0}, "unknown sampling parameter 'temprature'"),
    ],
)
def test_bad_values_are_one_line_errors(values, match):
    with pytest.raises(ValueError, match=match) as err:
        SamplingParams.from_mapping(values)
    assert "\n" not in str(err.value)
