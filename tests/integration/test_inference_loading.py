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
    from nemo_flm.config import ConfigError
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
        (str(text), "is not a .nemo file"),
        (str(folder), "not a complete nemo_flm checkpoint"),
        (str(tmp_path / "missing.nemo"), "not found"),
    ):
        with pytest.raises((ValueError, FileNotFoundError), match=match) as err:
            load_for_inference(path)
        assert "\n" not in str(err.value)
    assert os.listdir(folder) == []
