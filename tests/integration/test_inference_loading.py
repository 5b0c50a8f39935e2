"""A .nemo restores for inference on a machine without its training data, and bad paths fail in one line."""

import os

import pytest
import torch

from tests.helpers import tiny_cfg


def test_nemo_restores_without_its_training_data(single_process, tmp_path, monkeypatch):
    """A model configured on a user's own corpus (files that exist only where it trained) is saved,
    then loaded in another directory where those files are absent: same weights, same logits, and
    FLMModel.restore_from works too."""
    from nemo_flm.inference.loading import load_for_inference
    from nemo_flm.training.flm_model import FLMModel

    corpus = tmp_path / "train_machine" / "corpus"
    cfg = tiny_cfg(data={"blend": [str(corpus / "en_text_document")]})
    model = FLMModel(cfg)
    path = str(tmp_path / "model.nemo")
    model.save_to(path)
    assert not corpus.exists()
    elsewhere = tmp_path / "inference_machine"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_for_inference(path)
    tokens = torch.randint(0, cfg.vocab_size, (1, 10))
    with torch.no_grad():
        want = model.model.eval()(tokens, torch.arange(10)[None], None)
        got = loaded.network(tokens, torch.arange(10)[None], None)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert list(loaded.cfg.data.blend) == [str(corpus / "en_text_document")]
    restored = FLMModel.restore_from(path, map_location="cpu")
    assert torch.equal(restored.model.output_layer.weight, model.model.output_layer.weight)


def test_loading_overrides_apply_and_are_checked(single_process, tmp_path):
    from nemo_flm.errors import ConfigError
    from nemo_flm.inference.loading import load_for_inference
    from nemo_flm.training.flm_model import FLMModel

    path = str(tmp_path / "model.nemo")
    FLMModel(tiny_cfg()).save_to(path)
    assert load_for_inference(path, overrides={"blockwise_attention": True}).network.blockwise_window == 32
    with pytest.raises(ConfigError, match="blockwise_attention"):
        load_for_inference(path, overrides={"blockwise_attention": True, "seq_length": 31})


def test_paths_that_are_not_checkpoints_are_one_line_errors(single_process, tmp_path):
    from nemo_flm.inference.loading import load_for_inference

    text = tmp_path / "notes.nemo"
    text.write_text("not a checkpoint")
    folder = tmp_path / "run"
    folder.mkdir()
    for path, match in (
        (str(text), "is not a readable .nemo"),
        (str(folder), "not a complete nemo_flm checkpoint"),
        (str(tmp_path / "missing.nemo"), "not found"),
    ):
        with pytest.raises((ValueError, FileNotFoundError), match=match) as err:
            load_for_inference(path)
        assert "\n" not in str(err.value)
    assert os.listdir(folder) == []


def _generate_at_tp2(rank, path, out):
    from nemo_flm.data.tokenizer import FLMTokenizer
    from nemo_flm.inference.generator import Generator
    from nemo_flm.inference.loading import load_for_inference
    from nemo_flm.inference.sampling import SamplingParams

    loaded = load_for_inference(path, tensor_model_parallel_size=2)
    generator = Generator(loaded.network, FLMTokenizer(), max_context=64)
    prompts = [generator.tokenizer.encode(t) for t in ("The interpreter", "人民日报")]
    greedy = generator.generate(prompts, SamplingParams(greedy=True, tokens_to_generate=8, end_strings=[]))
    sampled = generator.generate(prompts, SamplingParams(top_p=1.0, tokens_to_generate=8, end_strings=[]))
    torch.save({"greedy": [c.token_ids for c in greedy], "sampled": [c.token_ids for c in sampled]}, f"{out}.{rank}")


def test_generation_at_tp2_equals_tp1_and_ranks_agree(single_process, tmp_path):
    """A TP1 .nemo generating at TP2 (2 gloo processes): greedy tokens equal TP1's, and unseeded
    sampling draws the same tokens on both ranks (a seed shared over TP)."""
    from nemo_flm.data.tokenizer import FLMTokenizer
    from nemo_flm.inference.generator import Generator
    from nemo_flm.inference.loading import load_for_inference
    from nemo_flm.inference.sampling import SamplingParams
    from nemo_flm.training.flm_model import FLMModel
    from tests.helpers import run_ranks

    path = str(tmp_path / "model.nemo")
    FLMModel(tiny_cfg(vocab_size=100256, make_vocab_size_divisible_by=128)).save_to(path)
    generator = Generator(load_for_inference(path).network, FLMTokenizer(), max_context=64)
    prompts = [generator.tokenizer.encode(t) for t in ("The interpreter", "人民日报")]
    tp1 = generator.generate(prompts, SamplingParams(greedy=True, tokens_to_generate=8, end_strings=[]))
    run_ranks(2, _generate_at_tp2, path, str(tmp_path / "out"))
    ranks = [torch.load(tmp_path / f"out.{r}") for r in range(2)]
    assert ranks[0] == ranks[1]
    assert ranks[0]["greedy"] == [c.token_ids for c in tp1]
