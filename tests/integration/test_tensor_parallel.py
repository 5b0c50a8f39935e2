"""TP=2 on CPU (two gloo processes) gives the TP=1 logits, loss and gradient norm, of freshly
built models: with μP too (init of each shard, logit scale, and each rank's LR groups)."""

import pytest
import torch

from tests.helpers import end_ranks, gather_vocab, run_ranks, tiny_cfg

SEQ = 32


def _inputs(cfg):
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, cfg.vocab_size, (2, SEQ), generator=g)
    labels = torch.randint(0, cfg.vocab_size, (2, SEQ), generator=g)
    return tokens, torch.arange(SEQ)[None].expand(2, -1), labels


def _forward_backward(cfg):
    """Gathered logits, mean loss and global grad norm of a freshly built, seeded model."""
    from nemo_flm import parallel
    from nemo_flm.model.builder import build_model
    from nemo_flm.training.optim import grad_norm

    parallel.seed_everything(cfg.seed)
    model = build_model(cfg)
    with torch.no_grad():  # give biases and LayerNorms non-trivial values, identically on every rank
        g = torch.Generator().manual_seed(3)
        for _, p in model.named_parameters():
            if p.ndim == 1 and not getattr(p, "tensor_model_parallel", False):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    tokens, positions, labels = _inputs(cfg)
    logits = gather_vocab(model(tokens, positions, None).detach())
    loss = model(tokens, positions, None, labels=labels).mean()
    loss.backward()
    parallel.reduce_grads(list(model.parameters()))
    return logits.detach(), loss.detach(), grad_norm(model.parameters())


def _rank(rank, overrides, out_path):
    from nemo_flm import parallel
    from nemo_flm.model.builder import build_model
    from nemo_flm.training.optim import param_groups

    cfg = tiny_cfg(**overrides)
    parallel.initialize(cfg.parallel, cfg.seed)
    logits, loss, norm = _forward_backward(cfg)
    mults = {g["name"]: g["lr_mult"] for g in param_groups(build_model(cfg), 0.0)}
    torch.save({"logits": logits, "loss": loss, "norm": norm, "mults": mults}, f"{out_path}.{rank}")
    end_ranks()


MUP = dict(use_mup=True, mup_base_width=16, output_mult=2.0)  # m = 4


@pytest.mark.parametrize("overrides", [{}, MUP], ids=["standard", "mup"])
def test_tp2_matches_tp1(single_process, tmp_path, overrides):
    par = {"tensor_model_parallel_size": 2}
    run_ranks(2, _rank, {**overrides, "parallel": par, "seq_length": SEQ}, str(tmp_path / "tp2.pt"))
    tp2, other = torch.load(tmp_path / "tp2.pt.0"), torch.load(tmp_path / "tp2.pt.1")
    hidden = 0.25 if overrides else 1.0
    assert tp2["mults"] == other["mults"] == {"decay": 1.0, "no_decay": 1.0, "hidden": hidden}
    logits, loss, norm = _forward_backward(tiny_cfg(**overrides, seq_length=SEQ))
    torch.testing.assert_close(tp2["logits"], logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tp2["loss"], loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(tp2["norm"], norm, rtol=1e-5, atol=1e-6)
